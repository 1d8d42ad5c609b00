"""Steps called from many threads at once (DESIGN §3, issue 12): one setup for every
caller, teardown after the calls inside, predict's inference mode per call.

Every race is forced with a ``threading.Barrier`` (all threads make their call at the
same moment), over many rounds; no assertion waits on a sleep.
"""
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from stepline import CX, Pipeline
from stepline.base import BaseStep, NonFittableMixin
from stepline.core.mode import call_mode, current_call_mode
from stepline.steps.flow import TrainOnlyWrapper
from stepline.steps.numpy import AddN, MultiplyByN
from stepline.steps.union import FeatureUnion

THREADS = 8
ROUNDS = 20
TIMEOUT = 30  # seconds a barrier or a join may take before the test fails (never a hang)


def all_at_once(fn, n=THREADS):
    """Run ``fn(i)`` in ``n`` threads released together; return the results (re-raises)."""
    barrier = threading.Barrier(n, timeout=TIMEOUT)

    def run(i):
        barrier.wait()
        return fn(i)
    with ThreadPoolExecutor(n) as pool:
        return [f.result(timeout=TIMEOUT) for f in [pool.submit(run, i) for i in range(n)]]


class Rendezvous(NonFittableMixin, BaseStep):
    """Passes data through once every caller of a barrier is inside it (forces overlap)."""

    def __init__(self, barrier):
        super().__init__()
        self.barrier = barrier

    def transform(self, data_inputs):
        self.barrier.wait()
        return data_inputs


# ------------------------------------------------------------------ predict is inference
def saved_and_loaded(step, tmp_path):
    step.save(CX(tmp_path), full_dump=True)
    return CX(tmp_path).load(step.name)


def test_loaded_pipeline_predict_skips_train_only_steps(tmp_path):
    p = Pipeline([TrainOnlyWrapper(AddN(add=100))], name="p")
    loaded = saved_and_loaded(p, tmp_path)
    assert loaded.is_train
    assert loaded.predict(np.zeros(3)).tolist() == [0, 0, 0]
    assert loaded.is_train and all(s.is_train for s in loaded.apply(lambda s, cx: s).values())
    assert loaded.transform(np.zeros(3)).tolist() == [100, 100, 100]  # transform: the current mode
    assert loaded.to_sklearn().predict(np.zeros(3)).tolist() == [0, 0, 0]


def test_predict_leaves_the_mode_as_it_was():
    p = Pipeline([TrainOnlyWrapper(AddN(add=100))]).set_train(False)
    assert p.predict(np.zeros(2)).tolist() == [0, 0]
    assert p.is_train is False and p.transform(np.zeros(2)).tolist() == [0, 0]
    p.set_train(True)
    assert p.predict(np.zeros(2)).tolist() == [0, 0]
    assert p.transform(np.zeros(2)).tolist() == [100, 100]


def test_predict_mode_reaches_a_leaf_that_reads_is_train():
    class Mode(NonFittableMixin, BaseStep):
        def transform(self, data_inputs):
            return [self.is_train]
    step = Mode()
    assert step.predict(None) == [False] and step.transform(None) == [True]
    with call_mode(False):
        assert step.transform(None) == [False]
    assert current_call_mode() is None


def test_predict_in_one_thread_does_not_leak_into_a_transform_in_another():
    barrier = threading.Barrier(2, timeout=TIMEOUT)
    p = Pipeline([Rendezvous(barrier), TrainOnlyWrapper(AddN(add=100))])
    p.setup()
    for _ in range(ROUNDS):
        with ThreadPoolExecutor(2) as pool:  # both calls are inside the pipeline at once
            predicted = pool.submit(p.predict, np.zeros(2))
            transformed = pool.submit(p.transform, np.zeros(2))
            assert predicted.result(timeout=TIMEOUT).tolist() == [0, 0]
            assert transformed.result(timeout=TIMEOUT).tolist() == [100, 100]
    assert p.is_train


def test_predict_mode_reaches_feature_union_branches_in_pool_threads():
    union = FeatureUnion([TrainOnlyWrapper(AddN(add=100)), MultiplyByN(multiply_by=2)], n_jobs=2)
    x = np.zeros((3, 1))
    with union.setup():
        assert union.predict(x).tolist() == [[0, 0]] * 3
        assert union.transform(x).tolist() == [[100, 0]] * 3


def test_to_sklearn_fit_and_predict_leave_the_steps_mode_alone():
    p = Pipeline([TrainOnlyWrapper(AddN(add=100))]).set_train(False)
    adapter = p.to_sklearn().fit(np.zeros(2))
    assert adapter.step.is_train is False
    adapter.step.set_train(True)
    assert adapter.predict(np.zeros(2)).tolist() == [0, 0]
    assert adapter.step.is_train is True
