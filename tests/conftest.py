"""Shared test helpers: a step that records its lifecycle calls, a save/load round trip."""
import os
import tempfile

import numpy as np
import pytest

# Keys and the trust store of the whole test session live in a throwaway folder (DESIGN §5a),
# inherited by every subprocess the tests start; never the user's own config folder.
os.environ.setdefault("STEPLINE_HOME", tempfile.mkdtemp(prefix="stepline-home-"))

from stepline import CX
from stepline.base import BaseStep


class Recorder(BaseStep):
    """Appends (name, event) to a shared log on every lifecycle call."""

    def __init__(self, log, name=None, factor=1):
        super().__init__(hyperparams={"factor": factor}, name=name)
        self.log = log
        self.resource = None

    def setup(self, context=None):
        self.log.append((self.name, "setup"))
        self.resource = object()
        return self

    def teardown(self):
        self.log.append((self.name, "teardown"))
        self.resource = None
        return self

    def fit(self, data_inputs, expected_outputs=None):
        self.log.append((self.name, "fit"))
        self.mean_ = float(np.mean(data_inputs))
        return self

    def transform(self, data_inputs):
        assert self.resource is not None, "transform ran before setup"
        self.log.append((self.name, "transform"))
        return np.asarray(data_inputs) * self.hyperparams["factor"]


@pytest.fixture
def log():
    return []


def roundtrip(step, tmp_path, data_inputs):
    """Save ``step`` (full dump), load it back, check it transforms identically; return it."""
    expected = step.transform(data_inputs)
    step.save(CX(tmp_path), full_dump=True)
    loaded = CX(tmp_path).load(step.name)
    assert loaded is not step
    np.testing.assert_array_equal(loaded.transform(data_inputs), expected)
    return loaded


@pytest.fixture
def cache_small_files(monkeypatch):
    """Let the stat cache cover files of any size (it leaves out those under 1 MiB)."""
    from stepline.saving import integrity
    monkeypatch.setattr(integrity, "CACHE_MIN_BYTES", 0)


@pytest.fixture
def pickles_in_files(monkeypatch):
    """Save every step's pickle to a ``step.pkl`` file, as pickles of 16 KiB or more are
    (smaller ones go inline in the manifest), for tests of what happens to such files."""
    from stepline.saving import inline
    monkeypatch.setattr(inline, "INLINE_MAX_BYTES", 0)
