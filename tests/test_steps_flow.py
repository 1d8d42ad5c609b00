"""Flow wrappers: train/test only, conditions, optional steps, choices, reversible preprocessing."""
import numpy as np
import pytest

from conftest import Recorder, roundtrip
from stepline import Pipeline
from stepline.base import BaseStep, HyperparameterError, NotFittedError
from stepline.hyperparams.distributions import Boolean, Choice
from stepline.steps.flow import (ChooseOneStepOf, ExecuteIf, OptionalStep, ReversiblePreprocessingWrapper,
                                 TestOnlyWrapper, TrainOnlyWrapper)
from stepline.steps.numpy import AddN, MultiplyByN, NumpyRavel

X = np.arange(8.0).reshape(4, 2)
Y = np.array([0.0, 1.0, 0.0, 1.0])


class Standardize(BaseStep):
    """Learns column means and scales; invertible."""

    def fit(self, data_inputs, expected_outputs=None):
        self.mean_ = np.mean(data_inputs, axis=0)
        self.std_ = np.std(data_inputs, axis=0) + 1e-12
        return self

    def transform(self, data_inputs):
        return (np.asarray(data_inputs) - self.mean_) / self.std_

    def inverse_transform(self, processed_outputs):
        return np.asarray(processed_outputs) * self.std_ + self.mean_


class Frozen(BaseStep):
    """What :class:`LearnsOffset` returns from fit: another object, named by its class."""

    def __init__(self, offset):
        super().__init__()
        self.offset = offset

    def transform(self, data_inputs):
        return np.asarray(data_inputs) - self.offset

    def inverse_transform(self, processed_outputs):
        return np.asarray(processed_outputs) + self.offset


class LearnsOffset(BaseStep):
    """``fit`` returns a new step object, as the fit contract allows."""

    def fit(self, data_inputs, expected_outputs=None):
        return Frozen(float(np.min(data_inputs)))

    def transform(self, data_inputs):
        raise AssertionError("the unfitted object is never used after fit")

    def inverse_transform(self, processed_outputs):
        raise AssertionError("the unfitted object is never used after fit")


def events(log, name):
    return [e for n, e in log if n == name]


# ------------------------------------------------------------ train / test only
def test_train_only_runs_in_training_and_passes_through_in_inference(log):
    p = Pipeline([("w", TrainOnlyWrapper(Recorder(log, "r", factor=2))), ("m", MultiplyByN(10))])
    p, out = p.fit_transform(X, Y)
    np.testing.assert_array_equal(out, X * 20)
    assert events(log, "r") == ["setup", "fit", "transform"]
    np.testing.assert_array_equal(p.transform(X), X * 20)
    assert p.set_train(False) is p
    assert not p["w"].is_train and not p["w"].wrapped.is_train
    log.clear()
    np.testing.assert_array_equal(p.transform(X), X * 10)
    p, out = p.fit_transform(X, Y)
    np.testing.assert_array_equal(out, X * 10)
    assert log == []
    np.testing.assert_array_equal(p.set_train(True).transform(X), X * 20)


def test_train_only_wrapper_alone_and_its_wrapped():
    inner = MultiplyByN(3)
    w = TrainOnlyWrapper(inner)
    assert w.wrapped is inner and w.name == "TrainOnlyWrapper"
    np.testing.assert_array_equal(w.transform([1.0]), [3.0])
    np.testing.assert_array_equal(w.set_train(False).transform([1.0]), [1.0])


def test_train_only_inference_does_not_fit_a_step_that_needs_it(log):
    p = Pipeline([TrainOnlyWrapper(Recorder(log, "r"))]).set_train(False)
    p = p.fit(X)
    assert events(log, "r") == ["setup"]
    assert not p[0].wrapped.is_fitted
    with pytest.raises(NotFittedError):
        p.set_train(True).transform(X)


def test_test_only_is_the_inverse(log):
    p = Pipeline([("w", TestOnlyWrapper(Recorder(log, "r", factor=5)))])
    p, out = p.fit_transform(X)
    np.testing.assert_array_equal(out, X)
    assert events(log, "r") == ["setup"]
    p.set_train(False)
    p = p.fit(X)
    np.testing.assert_array_equal(p.transform(X), X * 5)
    assert events(log, "r") == ["setup", "fit", "transform"]


def test_train_and_test_only_save_and_load(tmp_path):
    p = Pipeline([("train", TrainOnlyWrapper(Standardize())), ("test", TestOnlyWrapper(AddN(100)))],
                 name="tt")
    p = p.fit(X)
    loaded = roundtrip(p, tmp_path / "train_mode", X)
    assert isinstance(loaded["train"], TrainOnlyWrapper) and isinstance(loaded["train"].wrapped, Standardize)
    p.set_train(False)
    loaded = roundtrip(p, tmp_path / "inference_mode", X)
    np.testing.assert_array_equal(loaded.transform(X), X + 100)
    np.testing.assert_array_equal(loaded.set_train(True).transform(X), p.set_train(True).transform(X))


# ------------------------------------------------------------ ExecuteIf
def test_execute_if_runs_only_when_condition_holds(log):
    calls = []

    def big_batches(step, data_container, context):
        calls.append((step.name, len(data_container), context.get_names()))
        return len(data_container) > 2

    p = Pipeline([("cond", ExecuteIf(big_batches, Recorder(log, "r", factor=2)))], name="p")
    p, out = p.fit_transform(X)
    np.testing.assert_array_equal(out, X * 2)
    np.testing.assert_array_equal(p.transform(X[:2]), X[:2])
    np.testing.assert_array_equal(p.transform(X[:3]), X[:3] * 2)
    assert calls == [("cond", 4, ["p"]), ("cond", 2, ["p"]), ("cond", 3, ["p"])]
    assert events(log, "r") == ["setup", "fit", "transform", "transform"]


def test_execute_if_false_skips_fit(log):
    p = Pipeline([ExecuteIf(lambda step, dc, cx: False, Recorder(log, "r"))])
    p.fit(X)
    assert "fit" not in events(log, "r")


def test_execute_if_condition_can_read_the_expected_outputs():
    step = ExecuteIf(lambda step, dc, cx: dc.expected_outputs is not None, MultiplyByN(2))
    _, out = step.fit_transform(X, Y)
    np.testing.assert_array_equal(out, X * 2)
    np.testing.assert_array_equal(step.transform(X), X)


def test_execute_if_refuses_non_callable():
    with pytest.raises(TypeError, match="callable"):
        ExecuteIf(True, MultiplyByN(2))


def test_execute_if_saves_its_lambda(tmp_path):
    p = Pipeline([("cond", ExecuteIf(lambda step, dc, cx: dc.data_inputs.sum() > 10, MultiplyByN(2)))],
                 name="cond_pipe")
    loaded = roundtrip(p, tmp_path, X)
    np.testing.assert_array_equal(loaded.transform(X), X * 2)
    np.testing.assert_array_equal(loaded.transform(X[:1]), X[:1])


# ------------------------------------------------------------ OptionalStep
def test_optional_step_enabled_by_default_and_switched_by_hyperparams(log):
    p = Pipeline([("opt", OptionalStep(Recorder(log, "r", factor=3)))])
    assert p.get_hyperparams() == {"opt__enabled": True, "opt__r__factor": 3}
    assert p.get_hyperparams_space() == {"opt__enabled": Boolean()}
    np.testing.assert_array_equal(p.fit_transform(X)[1], X * 3)
    p.set_hyperparams({"opt__enabled": False})
    np.testing.assert_array_equal(p.transform(X), X)
    p.set_hyperparams({"opt": {"enabled": True, "r__factor": 4}})
    np.testing.assert_array_equal(p.transform(X), X * 4)


def test_optional_step_disabled_is_not_fitted(log):
    p = Pipeline([OptionalStep(Recorder(log, "r"), enabled=False)])
    p, out = p.fit_transform(X)
    np.testing.assert_array_equal(out, X)
    assert events(log, "r") == ["setup"]


def test_optional_step_refuses_values_outside_boolean():
    with pytest.raises(HyperparameterError, match="enabled"):
        OptionalStep(MultiplyByN(2)).set_hyperparams({"enabled": "yes"})


def test_optional_step_space_samples_route(tmp_path):
    p = Pipeline([("opt", OptionalStep(MultiplyByN(2)))])
    seen = {p.set_hyperparams(p.get_hyperparams_space().rvs(random_state=s)).transform([1.0])[0]
            for s in range(20)}
    assert seen == {1.0, 2.0}


def test_optional_step_saves_and_loads(tmp_path):
    p = Pipeline([("on", OptionalStep(Standardize())), ("off", OptionalStep(AddN(5), enabled=False))],
                 name="opt_pipe")
    p = p.fit(X)
    loaded = roundtrip(p, tmp_path, X)
    assert loaded.get_hyperparams()["off__enabled"] is False


# ------------------------------------------------------------ ChooseOneStepOf
def test_choose_one_defaults_to_first_and_routes_choice(log):
    c = ChooseOneStepOf([Recorder(log, "a", factor=2), Recorder(log, "b", factor=3)], name="c")
    assert c.hyperparams["choice"] == "a"
    assert c.get_hyperparams_space() == {"choice": Choice(["a", "b"])}
    p = Pipeline([c])
    np.testing.assert_array_equal(p.fit_transform(X)[1], X * 2)
    assert "fit" not in events(log, "b")
    p.set_hyperparams({"c__choice": "b", "c__b__factor": 7})
    with pytest.raises(NotFittedError):
        p.transform(X)
    p = p.fit(X)
    np.testing.assert_array_equal(p.transform(X), X * 7)
    assert events(log, "b").count("fit") == 1 and events(log, "a").count("fit") == 1


def test_choose_one_keeps_a_fitted_step_returned_as_a_new_object():
    c = ChooseOneStepOf([("off", LearnsOffset()), ("m", MultiplyByN(2))])
    c, out = c.fit_transform(X)
    assert isinstance(c["off"], Frozen) and c.keys() == ["off", "m"]
    np.testing.assert_array_equal(out, X - X.min())


def test_choose_one_rejects_unknown_choice_and_lists_them():
    c = ChooseOneStepOf([("x", MultiplyByN(2)), ("y", AddN(1))])
    with pytest.raises(HyperparameterError, match="outside"):
        c.set_hyperparams({"choice": "z"})
    with pytest.raises(HyperparameterError):
        ChooseOneStepOf([("x", MultiplyByN(2))], hyperparams={"choice": "nope"})
    with pytest.raises(ValueError, match="at least one"):
        ChooseOneStepOf([])


def test_choose_one_initial_choice_and_sampled_choices():
    c = ChooseOneStepOf([("x", MultiplyByN(2)), ("y", AddN(10))], hyperparams={"choice": "y"})
    np.testing.assert_array_equal(c.transform([1.0]), [11.0])
    outs = {c.set_hyperparams(c.get_hyperparams_space().rvs(random_state=s)).transform([1.0])[0]
            for s in range(20)}
    assert outs == {2.0, 11.0}


def test_choose_one_append_extends_the_choice():
    c = ChooseOneStepOf([("x", MultiplyByN(2))])
    c.append(("z", AddN(9)))
    c.set_hyperparams({"choice": "z"})
    np.testing.assert_array_equal(c.transform([1.0]), [10.0])


def test_choose_one_saves_and_loads(tmp_path):
    p = Pipeline([("c", ChooseOneStepOf([("s", Standardize()), ("m", MultiplyByN(4))]))], name="choose")
    p.set_hyperparams({"c__choice": "s"})
    p = p.fit(X)
    loaded = roundtrip(p, tmp_path / "s", X)
    assert loaded["c"].hyperparams["choice"] == "s" and loaded["c"].keys() == ["s", "m"]
    p.set_hyperparams({"c__choice": "m"})
    loaded = roundtrip(p, tmp_path / "m", X)
    np.testing.assert_array_equal(loaded.transform(X), X * 4)


# ------------------------------------------------------------ ReversiblePreprocessingWrapper
def test_reversible_preprocessing_undoes_preprocessing():
    w = ReversiblePreprocessingWrapper(MultiplyByN(2), AddN(1))
    _, out = w.fit_transform(X)
    np.testing.assert_allclose(out, X + 0.5)  # (2x + 1) / 2
    assert w.keys() == ["preprocessing_step", "postprocessing_step"]
    w.set_hyperparams({"preprocessing_step__multiply_by": 4, "postprocessing_step__add": 2})
    np.testing.assert_allclose(w.transform(X), X + 0.5)  # (4x + 2) / 4


def test_reversible_preprocessing_with_fitted_steps():
    w = Pipeline([("rev", ReversiblePreprocessingWrapper(Standardize(), MultiplyByN(2)))])
    w = w.fit(X)
    pre = w["rev"]["preprocessing_step"]
    np.testing.assert_allclose(pre.mean_, X.mean(axis=0))
    expected = (pre.transform(X) * 2) * pre.std_ + pre.mean_
    np.testing.assert_allclose(w.transform(X), expected)
    np.testing.assert_allclose(w.transform(X), 2 * X - X.mean(axis=0))


def test_reversible_preprocessing_keeps_fitted_objects_under_their_names():
    w = ReversiblePreprocessingWrapper(LearnsOffset(), LearnsOffset())
    w, out = w.fit_transform(X + 3)
    assert w.keys() == ["preprocessing_step", "postprocessing_step"]
    assert isinstance(w["preprocessing_step"], Frozen) and w["postprocessing_step"].offset == 0.0
    np.testing.assert_array_equal(out, X + 3)
    w = ReversiblePreprocessingWrapper(LearnsOffset(), LearnsOffset()).fit(X + 5)
    assert w.keys() == ["preprocessing_step", "postprocessing_step"]
    assert w["preprocessing_step"].offset == 5.0 and w["postprocessing_step"].offset == 0.0


def test_reversible_preprocessing_needs_inverse():
    with pytest.raises(TypeError, match="inverse_transform"):
        ReversiblePreprocessingWrapper(NumpyRavel(), AddN(1))


def test_reversible_preprocessing_saves_and_loads(tmp_path):
    p = Pipeline([("rev", ReversiblePreprocessingWrapper(Standardize(), AddN(3)))], name="rev_pipe")
    p = p.fit(X)
    loaded = roundtrip(p, tmp_path, X)
    np.testing.assert_allclose(loaded["rev"]["preprocessing_step"].std_, p["rev"]["preprocessing_step"].std_)
