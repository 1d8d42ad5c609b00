"""A loaded pipeline called from many threads at once, as a threaded server calls it.

- ``setup`` runs once, however many threads make the first call together;
- ``predict`` runs in inference mode (the train-only noise step passes data through)
  while ``transform`` runs in the pipeline's own mode, and neither disturbs the other.
"""
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from stepline import CX, Pipeline
from stepline.base import BaseStep, NonFittableMixin
from stepline.steps.flow import TrainOnlyWrapper
from stepline.steps.numpy import AddN


class Model(NonFittableMixin, BaseStep):
    """Stands for a model that is expensive to set up (weights to read, a device to claim)."""

    setups = 0  # counted on the class: the loaded step is a new object

    def setup(self, context=None):
        type(self).setups += 1
        self.weights = np.array([2.0, 2.0, 2.0])
        return self

    def teardown(self):
        self.weights = None
        return self

    def transform(self, data_inputs):
        return np.asarray(data_inputs) * self.weights


def main() -> None:
    pipeline = Pipeline([("noise", TrainOnlyWrapper(AddN(add=100))), ("model", Model())], name="served")
    with tempfile.TemporaryDirectory() as folder:
        pipeline.save(CX(folder), full_dump=True)
        loaded = CX(folder).load("served")
        Model.setups = 0
        barrier = threading.Barrier(8)

        def request(i):
            barrier.wait()  # every thread makes the first call at the same moment
            return loaded.predict(np.ones(3)) if i % 2 else loaded.transform(np.ones(3))

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(request, range(8)))
        loaded.teardown()
    print("setups:", Model.setups)
    print("predict (inference):   ", results[1].tolist())
    print("transform (train mode):", results[0].tolist())
    print("pipeline still in train mode:", loaded.is_train)
    assert Model.setups == 1
    assert all(r.tolist() == [2, 2, 2] for r in results[1::2])
    assert all(r.tolist() == [202, 202, 202] for r in results[0::2])


if __name__ == "__main__":
    main()
