"""The step lifecycle: construct → hyperparameters → setup → fit/transform → teardown."""
import numpy as np
import pytest

from conftest import Recorder
from stepline import CX, Pipeline
from stepline.base import BaseStep, Identity, NonFittableMixin, NonTransformableMixin, NotFittedError


def test_lifecycle_order_in_nested_pipeline(log):
    p = Pipeline([Recorder(log, "a"), ("inner", Pipeline([Recorder(log, "b"), Recorder(log, "c")]))])
    assert log == []  # construction has no side effects
    p, out = p.fit_transform(np.arange(4.0))
    assert log == [("a", "setup"), ("b", "setup"), ("c", "setup"),
                   ("a", "fit"), ("a", "transform"), ("b", "fit"), ("b", "transform"),
                   ("c", "fit"), ("c", "transform")]
    log.clear()
    p.teardown()
    assert log == [("c", "teardown"), ("b", "teardown"), ("a", "teardown")]


def test_setup_runs_once(log):
    step = Recorder(log, "a").fit(np.ones(3))
    step.transform(np.ones(3))
    step.transform(np.ones(3))
    step.setup()
    assert [e for e in log if e[1] == "setup"] == [("a", "setup")]
    assert step.is_initialized


def test_teardown_then_transform_works_again(log):
    step = Recorder(log, "a")
    step, _ = step.fit_transform(np.ones(2))
    step.teardown()
    assert not step.is_initialized and step.resource is None
    step.teardown()  # idempotent
    assert [e for e in log if e[1] == "teardown"] == [("a", "teardown")]
    np.testing.assert_array_equal(step.transform(np.ones(2)), np.ones(2))
    assert [e[1] for e in log].count("setup") == 2


def test_context_manager_tears_down_on_exception(log):
    step = Recorder(log, "a").fit(np.ones(2))
    step.teardown()
    log.clear()
    with pytest.raises(RuntimeError, match="boom"):
        with step.setup(CX()) as s:
            assert s is step and s.is_initialized
            raise RuntimeError("boom")
    assert log == [("a", "setup"), ("a", "teardown")]
    assert not step.is_initialized


def test_mixin_first_step_without_init():
    class NumpyRavel(NonFittableMixin, BaseStep):
        def transform(self, data_inputs):
            return np.asarray(data_inputs).ravel()

    step = NumpyRavel()
    assert step.name == "NumpyRavel"
    fitted, out = step.fit_transform(np.ones((2, 2)))
    assert fitted is step and out.shape == (4,)
    assert NumpyRavel().transform([[1], [2]]).tolist() == [1, 2]  # no fit needed


def test_user_setup_without_super_is_called_on_lazy_path():
    calls = []

    class WithQueue(Identity):
        def __init__(self):
            super().__init__()
            self.queue = None

        def setup(self, context=None):
            if not self.is_initialized:
                calls.append("setup")
                self.queue = []
            return self

    p = Pipeline([WithQueue()])
    p.transform([1])
    p.transform([2])
    assert calls == ["setup"]
    assert p["WithQueue"].queue == [] and p["WithQueue"].is_initialized


def test_setup_calling_super_first_still_creates_resources():
    class Step(Identity):
        def setup(self, context=None):
            super().setup(context)
            if not self.is_initialized:  # flags are only set once the outermost setup ends
                self.made = True
            return self

    s = Step().setup()
    assert s.made and s.is_initialized


def test_init_without_super_gets_defaults():
    class Bare(NonTransformableMixin, BaseStep):
        def __init__(self):
            self.x = 1

    s = Bare()
    assert s.name == "Bare" and s.savers == [] and dict(s.hyperparams) == {}
    assert s.transform([1]) == [1]


def test_fit_returns_fitted_step_and_fit_transform_a_pair(log):
    step = Recorder(log)
    assert step.fit(np.ones(2)) is step
    fitted, out = Recorder(log).fit_transform(np.ones(2))
    assert isinstance(fitted, Recorder) and out.tolist() == [1.0, 1.0]


def test_fit_may_return_a_new_step_and_pipeline_keeps_it():
    class Replacing(BaseStep):
        def fit(self, data_inputs, expected_outputs=None):
            new = Replacing()
            new.fitted_on = len(data_inputs)
            return new

        def transform(self, data_inputs):
            return data_inputs

    p = Pipeline([("r", Replacing()), Identity()])
    original = p["r"]
    p = p.fit(np.ones(3))
    assert p["r"] is not original and p["r"].fitted_on == 3 and p["r"].name == "r"


def test_fit_returning_wrong_type_is_a_clear_error():
    class Bad(BaseStep):
        def fit(self, data_inputs, expected_outputs=None):
            return data_inputs

        def transform(self, data_inputs):
            return data_inputs

    with pytest.raises(TypeError, match="must return the fitted step"):
        Bad().fit([1])


def test_transform_before_fit_names_the_step(log):
    p = Pipeline([Identity(), ("scaler", Recorder(log))])
    with pytest.raises(NotFittedError, match="'scaler'"):
        p.transform(np.ones(2))
    with pytest.raises(NotFittedError, match="'scaler'"):
        p["scaler"].predict(np.ones(2))


def test_invalidation_by_fit_hyperparams_name_and_savers(log):
    p = Pipeline([Recorder(log, "a"), Identity()])
    assert not p.is_invalidated  # construction is not a change
    p = p.fit(np.ones(2))
    assert p["a"].is_invalidated and p.is_invalidated
    assert not p["Identity"].is_invalidated  # a non-learning step is not changed by fit
    for change in (lambda s: s.set_hyperparams({"factor": 3}), lambda s: s.set_name("z"),
                   lambda s: s.add_saver(object()), lambda s: s.invalidate()):
        step = Recorder(log)
        change(step)
        assert step.is_invalidated


def test_apply_visits_tree_parents_first_with_paths_and_contexts(log):
    p = Pipeline([Recorder(log, "a"), ("inner", Pipeline([Recorder(log, "b")]))], name="root")
    seen = p.apply(lambda step, cx: (step.name, [s.name for s in cx.parents]))
    assert seen == {"": ("root", []), "a": ("a", ["root"]), "inner": ("inner", ["root"]),
                    "inner__b": ("b", ["root", "inner"])}


def test_set_train_reaches_every_step(log):
    p = Pipeline([Recorder(log), Pipeline([Identity()])])
    assert p.set_train(False) is p
    assert all(v is False for v in p.apply(lambda s, cx: s.is_train).values())
    p.set_train(True)
    assert all(p.apply(lambda s, cx: s.is_train).values())


def test_loaded_state_excludes_lifecycle_flags(log):
    import pickle
    step = Identity().setup()
    assert pickle.loads(pickle.dumps(step)).is_initialized is False


class RecordsContext(NonTransformableMixin, BaseStep):
    """Notes the folder and phase its handlers run under."""

    def handle_fit(self, data_container, context):
        self.seen = (context.get_path(), context.execution_phase)
        return super().handle_fit(data_container, context)


def test_plain_calls_run_under_the_context_given_to_setup(tmp_path):
    from stepline.core.context import ExecutionPhase
    p = Pipeline([Pipeline([RecordsContext(name="r")], name="inner")], name="outer")
    with p.setup(CX(tmp_path, execution_phase=ExecutionPhase.TRAIN)):
        p.fit(np.ones(2))
        assert p["inner"]["r"].seen == (tmp_path / "outer" / "inner", ExecutionPhase.TRAIN)
    assert "_stepline_setup_context" not in vars(p)  # teardown lets it go
    p.fit(np.ones(2))  # set up lazily, under a fresh context
    assert p["inner"]["r"].seen[0] != tmp_path / "outer" / "inner"


# ---------------------------------------------------------------- all-or-nothing hyperparameters
def _tree_with_space():
    from stepline.hyperparams.distributions import RandInt
    from stepline.steps.numpy import MultiplyByN
    return Pipeline([("a", MultiplyByN(2)),
                     ("inner", Pipeline([("b", MultiplyByN(3, hyperparams_space={"multiply_by": RandInt(1, 5)}))]))])


def _state(p):
    return (p.get_hyperparams().to_flat_dict(), {k: repr(v) for k, v in p.get_hyperparams_space().items()},
            [s._invalidated for s in p.apply(lambda s, cx: s).values()])


@pytest.mark.parametrize("method", ["set_hyperparams", "update_hyperparams"])
@pytest.mark.parametrize("bad", [
    {"a__multiply_by": 10, "inner__b__typo": 5},  # an unknown name after a good one
    {"a__multiply_by": 10, "inner__b__multiply_by": 99},  # a value outside its space
    {"a": {"multiply_by": 10}, "inner": {"b": {"typo": 1}}},  # nested form
    {"a__multiply_by": 10, "inner__b": 1},  # a key naming a step
])
def test_a_failed_hyperparams_change_changes_nothing_anywhere(method, bad):
    from stepline.base import HyperparameterError
    p = _tree_with_space()
    before = _state(p)
    with pytest.raises(HyperparameterError):
        getattr(p, method)(bad)
    assert _state(p) == before
    assert p.transform(np.ones(1)).tolist() == [6]


@pytest.mark.parametrize("method", ["set_hyperparams_space", "update_hyperparams_space"])
def test_a_failed_hyperparams_space_change_changes_nothing_anywhere(method):
    from stepline.base import HyperparameterError
    from stepline.hyperparams.distributions import RandInt
    p = _tree_with_space()
    before = _state(p)
    with pytest.raises(HyperparameterError, match="typo"):
        getattr(p, method)({"a__multiply_by": RandInt(1, 9), "inner__b__typo": RandInt(1, 2)})
    assert _state(p) == before


def test_a_value_refused_while_applying_puts_back_what_was_applied():
    pytest.importorskip("sklearn")
    from sklearn.preprocessing import StandardScaler

    from stepline.steps.numpy import MultiplyByN
    from stepline.steps.sklearn import SKLearnWrapper

    class Refuses(StandardScaler):
        def set_params(self, **params):
            if params.get("with_mean") == "refused":
                raise ValueError("with_mean: refused")
            return super().set_params(**params)
    p = Pipeline([("a", MultiplyByN(2)), ("s", SKLearnWrapper(Refuses()))])
    before = _state(p)
    with pytest.raises(ValueError, match="refused"):
        p.set_hyperparams({"a__multiply_by": 10, "s__with_std": False, "s__with_mean": "refused"})
    assert _state(p) == before
    assert p["s"].wrapped_sklearn_predictor.get_params()["with_std"] is True


# ---------------------------------------------------------------- saving a set-up step
class HoldsALock(NonTransformableMixin, NonFittableMixin, BaseStep):
    """Creates a lock in setup and lets it go in teardown."""

    def setup(self, context=None):
        import threading
        self.lock = threading.Lock()
        return self

    def teardown(self):
        self.lock = None
        return self


def test_saving_a_set_up_step_says_what_is_set_up_and_how_to_save_it(tmp_path):
    from stepline.saving import SaveError
    p = Pipeline([HoldsALock(name="locker")], name="p")
    p.transform(np.ones(1))
    with pytest.raises(SaveError) as error:
        p.save(CX(tmp_path), full_dump=True)
    message = str(error.value)
    assert "'locker'" in message and "'lock'" in message and "is set up" in message
    assert "teardown()" in message and "saver" in message
    assert "create it in setup()" not in message  # what the step already does
    p.teardown()
    p.save(CX(tmp_path), full_dump=True)
    assert CX(tmp_path).load("p").transform(np.ones(1)).tolist() == [1]


def test_saving_a_step_not_set_up_still_advises_setup_for_what_cannot_be_pickled(tmp_path):
    import threading

    from stepline.saving import SaveError
    step = HoldsALock(name="locker")
    step.lock = threading.Lock()  # made in __init__ or by hand, not by setup
    with pytest.raises(SaveError, match=r"'lock'.*create it in setup\(\) and release it in teardown\(\)"):
        step.save(CX(tmp_path), full_dump=True)
