"""Helpers of the automl tests (tests/test_automl*.py): steps, spies, a fixed TorchStep search."""
import os
from pathlib import Path

import numpy as np
import pytest

from stepline.automl import AutoML
from stepline.base import BaseStep
from stepline.hyperparams.distributions import Boolean, LogUniform
from stepline.pipeline import Pipeline
from stepline.steps.sklearn import SKLearnWrapper


def small_digits():
    """300 rows of scikit-learn's digits, scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    return X[:300] / 16.0, y[:300]


def digits_pipeline():
    from sklearn.linear_model import LogisticRegression
    return Pipeline([SKLearnWrapper(LogisticRegression(max_iter=300), {"C": LogUniform(1e-3, 10.0)})]).set_name("digits")


class Exiter(BaseStep):
    """Kills its own process when fitted with ``die=True`` (a worker that dies)."""

    def __init__(self):
        super().__init__(hyperparams={"die": False}, hyperparams_space={"die": Boolean(proba_is_true=0.25)})

    def fit(self, data_inputs, expected_outputs=None):
        if self.hyperparams["die"]:
            os._exit(3)
        return self

    def transform(self, data_inputs):
        return data_inputs


def storage_spy(log: Path, db: Path):
    """A scorer that appends, for each trial it scores, its process id and whether that process
    holds the study's SQLite file open (``/proc/self/fd``); it scores the accuracy."""
    def scorer(estimator, X, y):
        held = any(os.path.realpath(os.path.join("/proc/self/fd", fd)).startswith(str(db))
                   for fd in os.listdir("/proc/self/fd") if os.path.exists(os.path.join("/proc/self/fd", fd)))
        with open(log, "a") as out:
            out.write(f"{os.getpid()} {held}\n")
        return float(np.mean(estimator.predict(X) == y))
    return scorer


def scorers_seen(log: Path) -> dict:
    rows = [line.split() for line in log.read_text().splitlines()]
    return {int(pid): held == "True" for pid, held in rows}


EPOCHS = 40


def torch_regression_search(**kwargs):
    """A TorchStep search whose three trials are fixed: two good learning rates, then a bad one."""
    pytest.importorskip("torch")
    from torch import nn

    from stepline.torch import TorchStep
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 4)).astype(np.float32)
    y = (X @ np.array([1.0, -2.0, 0.5, 0.0], dtype=np.float32))[:, None]
    step = TorchStep(nn.Linear, module_kwargs={"in_features": 4, "out_features": 1},
                     hyperparams={"epochs": EPOCHS, "device": "cpu", "seed": 0, "batch_size": 25},
                     hyperparams_space={"learning_rate": LogUniform(1e-5, 0.5)}, name="linear")
    import optuna
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="fixed", direction="maximize")
    for rate in (0.1, 0.1, 1e-5):
        study.enqueue_trial({"linear__learning_rate": rate})
    # the bad trial starts once a good one ended (2 workers); the second good one, the same
    # computation as the first, is never worse than it, so only the bad one is pruned
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=3)
    search = AutoML(Pipeline([step]), scoring="neg_mean_squared_error", cv=0.25, n_trials=3, storage=storage,
                    study_name="fixed", pruner=pruner, refit=False, show_progress=False, **kwargs).fit(X, y)
    return search.study_.trials
