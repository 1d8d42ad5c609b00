"""A streaming pipeline that never hangs: a per-minibatch timeout, and predict's mode in the workers.

A stage that gets stuck on one minibatch ends the call with ``StreamingTimeoutError``
naming the step and the minibatch, and every worker process is stopped; the pipeline
starts fresh workers on its next call. ``predict`` runs the workers in inference mode
(train-only steps pass data through) without restarting them.

    python examples/streaming_timeouts.py
"""
import threading

import numpy as np

from stepline.base import BaseStep, NonFittableMixin
from stepline.distributed.streaming import SequentialQueuedPipeline, StreamingTimeoutError
from stepline.steps.flow import TrainOnlyWrapper


class StuckOn(NonFittableMixin, BaseStep):
    """Adds 1, but never returns from a minibatch holding ``bad`` (a deadlock, a lost server)."""

    def __init__(self, bad=-1):
        super().__init__()
        self.bad = bad

    def transform(self, data_inputs):
        if self.bad in np.asarray(data_inputs):
            threading.Event().wait()
        return np.asarray(data_inputs) + 1


class Noise(NonFittableMixin, BaseStep):
    """Augmentation for training only."""

    def transform(self, data_inputs):
        return np.asarray(data_inputs) + 1000


def main():
    x = np.arange(12.0)
    p = SequentialQueuedPipeline([(2, StuckOn(bad=7.0)), TrainOnlyWrapper(Noise())], batch_size=3, timeout_s=1.0)
    with p:
        try:
            p.transform(x)
        except StreamingTimeoutError as e:
            print(f"timed out: step {e.step_name!r}, minibatch {e.batch_index} -> {e}")
        p["StuckOn"].bad = -1.0  # fixed; a changed attribute needs fresh workers:
        p.teardown()
        print("transform:", p.transform(x[:4]))     # in training mode: Noise runs
        workers = [w.pid for w in p.consumers]
        print("predict:  ", p.predict(x[:4]))       # inference: Noise passes through
        assert [w.pid for w in p.consumers] == workers, "predict must not restart the workers"
        print("same workers after predict:", workers)


if __name__ == "__main__":
    main()
