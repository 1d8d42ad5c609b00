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


# ------------------------------------------------------------------ one setup for every caller
class SlowSetup(NonFittableMixin, BaseStep):
    """Counts its setups; a setup takes a while, so concurrent first calls overlap it."""

    def __init__(self, call_super=False, fail_first=0, name=None):
        super().__init__(name=name)
        self.call_super = call_super
        self.fail_first = fail_first  # this many setups raise before one succeeds
        self.setups = 0
        self.teardowns = 0
        self.resource = None

    def setup(self, context=None):
        if self.call_super:
            super().setup(context)
        self.setups += 1
        threading.Event().wait(0.01)  # widens the race window; no assertion waits on it
        if self.setups <= self.fail_first:
            raise RuntimeError(f"setup {self.setups} of {self.name} failed")
        self.resource = object()
        return self

    def teardown(self):
        self.teardowns += 1
        self.resource = None
        if self.call_super:
            super().teardown()
        return self

    def transform(self, data_inputs):
        assert self.resource is not None, f"{self.name}: transform ran before setup finished"
        threading.Event().wait(0.001)  # stays inside a moment: a teardown must wait for it
        assert self.resource is not None, f"{self.name}: torn down during a transform"
        return data_inputs


@pytest.mark.parametrize("call_super", [False, True])
def test_concurrent_first_calls_run_setup_once(call_super):
    for _ in range(ROUNDS):
        step = SlowSetup(call_super=call_super)
        assert all_at_once(lambda i: step.transform(i)) == list(range(THREADS))
        assert step.setups == 1 and step.is_initialized


@pytest.mark.parametrize("call", ["transform", "predict", "fit", "fit_transform"])
def test_concurrent_first_calls_of_a_pipeline_set_each_step_up_once(call):
    for _ in range(ROUNDS // 2):
        p = Pipeline([SlowSetup(name="a"), ("inner", Pipeline([SlowSetup(call_super=True, name="b")]))])
        all_at_once(lambda i: getattr(p, call)(np.full(2, i)))
        assert (p["a"].setups, p["inner"]["b"].setups) == (1, 1)
        p.teardown()
        assert (p["a"].teardowns, p["inner"]["b"].teardowns) == (1, 1)


def test_a_failed_setup_leaves_the_step_not_set_up_and_the_next_call_retries():
    for _ in range(ROUNDS // 2):
        step = SlowSetup(fail_first=1)
        outcomes = all_at_once(lambda i: _outcome(step.transform, i))
        errors = [o for o in outcomes if isinstance(o, RuntimeError)]
        assert len(errors) == 1 and "setup 1 of SlowSetup failed" in str(errors[0])
        assert step.setups == 2 and step.is_initialized  # the next caller set it up


def test_a_failed_child_setup_leaves_the_pipeline_not_set_up_and_the_retry_sets_up_only_that_child():
    for _ in range(ROUNDS // 2):
        p = Pipeline([SlowSetup(name="a"), SlowSetup(call_super=True, fail_first=1, name="b")])
        outcomes = all_at_once(lambda i: _outcome(p.transform, np.full(2, i)))
        assert sum(isinstance(o, RuntimeError) for o in outcomes) == 1
        assert (p["a"].setups, p["b"].setups) == (1, 2) and p.is_initialized


def test_a_failed_setup_is_retried_by_the_next_call():
    step = SlowSetup(fail_first=1)
    with pytest.raises(RuntimeError, match="setup 1"):
        step.transform(1)
    assert not step.is_initialized
    assert step.transform(2) == 2 and step.setups == 2


def _outcome(fn, *args):
    try:
        return fn(*args)
    except Exception as error:
        return error


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_loaded_torch_pipeline_predicts_its_saved_weights_from_many_threads(tmp_path, device):
    torch = pytest.importorskip("torch")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from stepline.torch import TorchStep
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 3)).astype("float32")
    y = X @ np.array([[1.0], [-2.0], [0.5]], dtype="float32")
    p = Pipeline([TorchStep(torch.nn.Linear, module_kwargs={"in_features": 3, "out_features": 1},
                            hyperparams={"epochs": 3, "device": device}, name="linear")], name="p")
    p = p.fit(X, y)
    expected = p.predict(X)
    p.save(CX(tmp_path), full_dump=True)
    for _ in range(ROUNDS // 2):
        loaded = CX(tmp_path).load("p")
        for out in all_at_once(lambda i: loaded.predict(X)):
            np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_loaded_sklearn_pipeline_sets_up_once_from_many_threads(tmp_path):
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LinearRegression
    from sklearn.preprocessing import StandardScaler

    from stepline.steps.sklearn import SKLearnWrapper
    X = np.random.default_rng(1).normal(size=(20, 2))
    y = X @ np.array([3.0, -1.0])
    p = Pipeline([CountingSKLearnWrapper(StandardScaler()), CountingSKLearnWrapper(LinearRegression())],
                 name="p").fit(X, y)
    expected = p.predict(X)
    p.save(CX(tmp_path), full_dump=True)
    for _ in range(ROUNDS // 2):
        loaded = CX(tmp_path).load("p")
        for step in loaded.values():
            step.setups = 0  # the count was saved with the fitted pipeline
        for out in all_at_once(lambda i: loaded.predict(X)):
            np.testing.assert_allclose(out, expected)
        assert [s.setups for s in loaded.values()] == [1, 1]
        assert all(isinstance(s, SKLearnWrapper) for s in loaded.values())


def _counting_sklearn_wrapper():
    try:
        from stepline.steps.sklearn import SKLearnWrapper
    except ImportError:
        return None

    class CountingSKLearnWrapper(SKLearnWrapper):
        """Counts its setups (and calls ``super().setup``); a setup takes a while."""

        def setup(self, context=None):
            super().setup(context)
            self.setups = self.__dict__.get("setups", 0) + 1
            threading.Event().wait(0.01)
            return self
    return CountingSKLearnWrapper


CountingSKLearnWrapper = _counting_sklearn_wrapper()


def test_feature_union_with_a_pool_sets_up_once_from_many_threads():
    for _ in range(ROUNDS // 2):
        union = FeatureUnion([SlowSetup(name="a"), SlowSetup(call_super=True, name="b")], n_jobs=2)
        x = np.arange(3.0).reshape(3, 1)
        for out in all_at_once(lambda i: union.transform(x)):
            assert out.tolist() == [[0, 0], [1, 1], [2, 2]]
        assert (union["a"].setups, union["b"].setups) == (1, 1)
        pool = union._executor
        union.teardown()
        assert union._executor is None and pool._shutdown  # the one pool setup made is shut down


# ------------------------------------------------------------------ teardown waits for calls
class Gate(NonFittableMixin, BaseStep):
    """A transform that stays inside the step until released; logs what happens."""

    def __init__(self):
        super().__init__()
        self.inside = threading.Event()
        self.release = threading.Event()
        self.log = []

    def setup(self, context=None):
        self.log.append("setup")
        return self

    def teardown(self):
        self.log.append("teardown")
        return self

    def transform(self, data_inputs):
        self.inside.set()
        assert self.release.wait(TIMEOUT)
        self.log.append("transform done")
        return data_inputs


def test_teardown_waits_for_the_calls_inside_and_later_calls_set_up_again():
    step = Gate()
    with ThreadPoolExecutor(3) as pool:
        call = pool.submit(step.transform, 1)
        assert step.inside.wait(TIMEOUT)
        teardown = pool.submit(step.teardown)
        # Blocked until the call inside leaves: on a step that did not wait this returns at once.
        with pytest.raises(TimeoutError):
            teardown.result(timeout=0.3)
        step.release.set()
        assert call.result(timeout=TIMEOUT) == 1
        assert teardown.result(timeout=TIMEOUT) is step
    assert step.log == ["setup", "transform done", "teardown"] and not step.is_initialized
    assert step.transform(2) == 2 and step.log[-2:] == ["setup", "transform done"]


def test_teardown_from_inside_the_steps_own_call_does_not_wait_for_itself():
    class TearsItselfDown(NonFittableMixin, BaseStep):
        def transform(self, data_inputs):
            self.teardown()
            return data_inputs
    step = TearsItselfDown()
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(step.transform, 5).result(timeout=TIMEOUT) == 5
    assert not step.is_initialized


def test_many_threads_calling_while_another_tears_down_never_see_a_torn_down_step():
    step = SlowSetup(call_super=True)
    for _ in range(ROUNDS):
        def work(i):
            if i == 0:
                return step.teardown() and "torn down"
            return step.transform(i)
        results = all_at_once(work)
        assert results[0] == "torn down" and results[1:] == list(range(1, THREADS))
    assert step.setups - step.teardowns == int(step.is_initialized)


# ------------------------------------------------------------------ the lock is never saved or shared
def test_lifecycle_state_is_not_pickled_copied_or_shared():
    import copy
    import pickle
    step = Pipeline([SlowSetup(name="a")])
    step.transform(np.ones(2))
    clone = pickle.loads(pickle.dumps(step))
    assert not clone.is_initialized and "_stepline_lifecycle" not in vars(clone)
    for other in (copy.copy(step), copy.deepcopy(step), step[0:]):
        assert "_stepline_lifecycle" not in vars(other)
        other.transform(np.ones(2))
        assert vars(other)["_stepline_lifecycle"] is not vars(step)["_stepline_lifecycle"]


def test_a_set_up_pipeline_saves_and_loads_while_threads_call_it(tmp_path):
    p = Pipeline([SlowSetup(name="a"), MultiplyByN(multiply_by=3)], name="p")
    p.setup()
    outputs = all_at_once(lambda i: p.save(CX(tmp_path / str(i)), full_dump=True) and p.transform(np.ones(2)))
    assert all(o.tolist() == [3, 3] for o in outputs)
    assert CX(tmp_path / "3").load("p").transform(np.ones(2)).tolist() == [3, 3]


def test_a_teardown_that_waits_long_for_a_call_says_so(monkeypatch):
    import logging

    import stepline.core.transitions as transitions
    monkeypatch.setattr(transitions, "SLOW_TEARDOWN_S", 0.05)
    warned = threading.Event()
    messages = []

    class Seen(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())
            warned.set()
    handler = Seen(level=logging.WARNING)
    logging.getLogger("stepline.core.transitions").addHandler(handler)
    step = Gate()
    try:
        with ThreadPoolExecutor(2) as pool:
            call = pool.submit(step.transform, 1)
            assert step.inside.wait(TIMEOUT)
            teardown = pool.submit(step.teardown)
            assert warned.wait(TIMEOUT)  # said while the call is still inside
            assert not teardown.done()
            step.release.set()
            assert teardown.result(timeout=TIMEOUT) is step and call.result(timeout=TIMEOUT) == 1
    finally:
        logging.getLogger("stepline.core.transitions").removeHandler(handler)
    assert "teardown of step 'Gate' (Gate) has waited" in messages[0] and "1 call(s)" in messages[0]
