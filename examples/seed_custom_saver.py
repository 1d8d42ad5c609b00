"""The seed's "Custom Saver Example": a step holding a multiprocessing.Queue.

The saver strips the queue before the stripped saver (joblib) writes the step; after
loading, ``setup`` creates a fresh queue. Run: ``python examples/seed_custom_saver.py``.
"""
import shutil
import tempfile
from multiprocessing import Queue

from stepline.base import BaseSaver, BaseTransformer, ExecutionContext, Identity
from stepline.base import ExecutionContext as CX
from stepline.distributed.streaming import _ProducerConsumerMixin


class _ProducerConsumerStepSaver(BaseSaver):
    """
    Saver for :class:`_ProducerConsumerMixin`.
    This saver class makes sure that the non-picklable queue
    is deleted upon saving for multiprocessing steps.
    """

    def save_step(self, step: BaseTransformer, context: 'CX') -> BaseTransformer:
        step: _ProducerConsumerMixin = step  # typing.
        step.input_queue = None
        step.consumers = []
        return step

    def can_load(self, step: BaseTransformer, context: 'CX') -> bool:
        return True

    def load_step(self, step: 'BaseTransformer', context: 'CX') -> 'BaseTransformer':
        step: _ProducerConsumerMixin = step  # typing.
        step.input_queue = None
        return step


class IdentityWithQueue(Identity):
    def __init__(self):
        super().__init__(savers=[_ProducerConsumerStepSaver()])
        self.queue = None

    def setup(self, context=None):
        if not self.is_initialized:
            self.queue = Queue()

        return self

    # The seed's saver strips ``input_queue`` (the streaming steps' attribute), while this
    # step keeps its queue in ``queue``: one alias makes the saver, as written, strip it.
    @property
    def input_queue(self):
        return self.queue

    @input_queue.setter
    def input_queue(self, value):
        self.queue = value


if __name__ == "__main__":
    cache_folder = tempfile.mkdtemp(prefix="seed-custom-saver-")
    try:
        step = IdentityWithQueue()
        print("transform:", step.transform([1, 2, 3]))
        print("live queue before save:", type(step.queue).__name__)
        step.save(ExecutionContext(cache_folder), full_dump=True)
        print("live queue after save:", type(step.queue).__name__)  # saving never touches the live step
        loaded = ExecutionContext(cache_folder).load("IdentityWithQueue")
        print("loaded queue before setup:", loaded.queue)
        loaded.setup()
        print("loaded queue after setup:", type(loaded.queue).__name__)
        loaded.teardown()
        step.teardown()
    finally:
        shutil.rmtree(cache_folder, ignore_errors=True)
