"""Steps that misbehave on purpose, for tests/test_attacks_serve.py (importable by the server subprocess)."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from stepline import BaseStep, Pipeline


class Sentinel(BaseStep):
    """Passes rows through, except when the first value of the first row says otherwise:
    ``-1`` hangs (a predict that never returns), ``-2`` takes ``slow_s`` seconds; both first
    touch the file ``started`` (the request is in flight)."""

    def __init__(self, started="", slow_s=1.0, name=None):
        super().__init__(hyperparams={"started": started, "slow_s": slow_s}, name=name)

    def transform(self, data_inputs):
        first = np.asarray(data_inputs)[0, 0]
        if first in (-1, -2) and self.hyperparams["started"]:
            Path(self.hyperparams["started"]).touch()
        if first == -1:
            threading.Event().wait()  # never set: a predict that hangs for ever
        if first == -2:
            time.sleep(self.hyperparams["slow_s"])  # the work of a slow model, not a synchronisation
        return data_inputs


class FewerRows(BaseStep):
    """Drops the last row (a buggy last step)."""

    def transform(self, data_inputs):
        return np.asarray(data_inputs)[:-1, 0]


class DictRows(BaseStep):
    """Returns one dict per row: values the protocol cannot carry."""

    def transform(self, data_inputs):
        return np.array([{"label": 1} for _ in range(len(data_inputs))], dtype=object)


class RaggedRows(BaseStep):
    """Returns rows of different lengths: not one array."""

    def transform(self, data_inputs):
        return [[1.0] * (i + 1) for i in range(len(data_inputs))]


class SlowSetup(BaseStep):
    """Passes data through; ``setup`` appends ``setup <pid>`` to the file ``log`` and then takes
    ``delay`` seconds, ``teardown`` appends ``teardown <pid>``."""

    def __init__(self, log="", delay=0.0, name=None):
        super().__init__(hyperparams={"log": log, "delay": delay}, name=name)

    def _note(self, event):
        if self.hyperparams["log"]:  # (empty while the test fits the pipeline)
            with open(self.hyperparams["log"], "a") as f:
                f.write(f"{event}\n")

    def setup(self, context=None):
        self._note("setup")
        if self.hyperparams["log"]:
            time.sleep(self.hyperparams["delay"])  # a model that is slow to load, not a synchronisation
        return self

    def transform(self, data_inputs):
        return data_inputs

    def teardown(self):
        self._note("teardown")
        return self


def two_feature_pipeline(*steps, name="m"):
    """``steps`` -> StandardScaler -> LogisticRegression, fitted on two features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from stepline.steps.sklearn import SKLearnWrapper
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    y = (X[:, 0] > X[:, 1]).astype(int)
    return Pipeline([*steps, SKLearnWrapper(StandardScaler()), SKLearnWrapper(LogisticRegression())]).set_name(
        name).fit(X, y)
