"""stepline.testing.check_step: stepline's own steps pass it; broken steps fail the right check."""
import threading

import numpy as np
import pytest

from stepline.base import BaseStep, Identity, NonFittableMixin
from stepline.hyperparams.distributions import Choice
from stepline.pipeline import Pipeline
from stepline.steps.data import DataShuffler
from stepline.steps.flow import ChooseOneStepOf, OptionalStep, TrainOnlyWrapper
from stepline.steps.numpy import AddN, MultiplyByN, NumpyRavel, NumpyTranspose, OneHotEncoder
from stepline.steps.output_handlers import OutputTransformerWrapper
from stepline.steps.union import FeatureUnion
from stepline.testing import CHECKS, StepCheckError, check_step
from stepline.union import AddFeatures

OWN_STEPS = [
    MultiplyByN(3), AddN(2), Identity(), NumpyTranspose(), OneHotEncoder(4),
    Pipeline([MultiplyByN(2), TrainOnlyWrapper(AddN(1))]),
    FeatureUnion([MultiplyByN(2), AddN(1)]), AddFeatures([MultiplyByN(2)]),
    OptionalStep(MultiplyByN(2)), ChooseOneStepOf([("a", MultiplyByN(2)), ("b", AddN(1))]),
    OutputTransformerWrapper(MultiplyByN(2)),
]


@pytest.mark.parametrize("step", OWN_STEPS, ids=lambda s: s.name)
def test_stepline_steps_pass(step):
    data = np.abs(np.random.default_rng(1).normal(size=(12, 3))).round().astype(int) \
        if isinstance(step, OneHotEncoder) else None
    assert check_step(step, data_inputs=data, fresh_process=False) == list(CHECKS)


def test_sklearn_pipeline_passes_in_a_fresh_process():
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    assert check_step(Pipeline([StandardScaler(), LogisticRegression()])) == list(CHECKS)


def test_a_class_is_instantiated_and_skip_leaves_checks_out():
    assert check_step(NumpyRavel, fresh_process=False) == list(CHECKS)
    assert "fit_transform" not in check_step(DataShuffler(seed=1), skip=("fit_transform",), fresh_process=False)
    with pytest.raises(ValueError, match="unknown checks"):
        check_step(Identity(), skip=("nope",))


class Noisy(NonFittableMixin, BaseStep):
    def transform(self, data_inputs):
        return np.asarray(data_inputs) + np.random.random()


class ForgetsOnSave(BaseStep):
    def fit(self, data_inputs, expected_outputs=None):
        self.mean_ = float(np.mean(data_inputs))
        return self

    def transform(self, data_inputs):
        return np.asarray(data_inputs) - getattr(self, "mean_", 0.0)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("mean_", None)  # learned state that a save loses
        return state


class HoldsALock(NonFittableMixin, BaseStep):
    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()

    def transform(self, data_inputs):
        return data_inputs


class PredictsSomethingElse(NonFittableMixin, BaseStep):
    def transform(self, data_inputs):
        return np.asarray(data_inputs)

    def predict(self, data_inputs):
        return np.zeros(len(data_inputs))


class DropsHyperparams(NonFittableMixin, BaseStep):
    def __init__(self):
        super().__init__(hyperparams={"k": 1}, hyperparams_space={"k": Choice([1, 3])})

    def _set_own_hyperparams(self, values):
        pass

    def _get_own_hyperparams(self):
        return {"k": 2}

    def transform(self, data_inputs):
        return data_inputs


@pytest.mark.parametrize("step, check", [
    (Noisy(), r"fit_transform\].*deterministic"),
    (ForgetsOnSave(), r"save_load\].*outputs differ"),
    (HoldsALock(), r"copy\].*create resources.*in setup\(\)"),
    (PredictsSomethingElse(), r"predict_inference\]"),
    (DropsHyperparams(), r"hyperparams\]"),
])
def test_broken_steps_fail_the_right_check(step, check):
    with pytest.raises(StepCheckError, match=check):
        check_step(step, fresh_process=False)


def test_fresh_process_load_proves_the_dump_is_complete():
    with pytest.raises(StepCheckError, match=r"save_load\]"):
        check_step(ForgetsOnSave())
