"""Attacks on the streaming pipelines: what a hostile step or user does to the workers.

Real worker processes, real signals; every test has a timeout (a hang fails instead of
blocking CI) and the autouse fixture checks that no worker process survives it.
"""
import gc
import multiprocessing
import os
import signal
import sys
import threading
import time
import types

import numpy as np
import psutil
import pytest

from stepline.base import BaseStep, NonFittableMixin
from stepline.distributed.streaming import (SequentialQueuedPipeline, StreamingTimeoutError,
                                            StreamingWorkerError)

pytestmark = pytest.mark.timeout(60)


def _children():
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "resource_tracker" not in cmd and "forkserver" not in cmd:
            out.append(child)
    return out


@pytest.fixture(autouse=True)
def no_worker_survives():
    yield
    gc.collect()
    deadline = time.monotonic() + 3
    while (multiprocessing.active_children() or _children()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert multiprocessing.active_children() == [] and _children() == []


# --------------------------------------------------------------------- steps
class ChildOnlyOutput(NonFittableMixin, BaseStep):
    """Returns, for the row ``bad``, an object of a class that exists only in the worker process."""

    def __init__(self, bad=2):
        super().__init__()
        self.bad = bad

    def transform(self, data_inputs):
        if self.bad not in np.asarray(data_inputs):
            return data_inputs
        module = types.ModuleType("stepline_only_in_the_worker")
        sys.modules[module.__name__] = module
        cls = type("OnlyHere", (), {"__module__": module.__name__})
        module.OnlyHere = cls
        return [cls() for _ in data_inputs]


class StopsItself(NonFittableMixin, BaseStep):
    """SIGSTOPs its own worker process on the row ``bad``: a hang without a death."""

    def __init__(self, bad=3):
        super().__init__()
        self.bad = bad

    def transform(self, data_inputs):
        if self.bad in np.asarray(data_inputs):
            os.kill(os.getpid(), signal.SIGSTOP)
        return np.asarray(data_inputs) + 1


class Floods(NonFittableMixin, BaseStep):
    """Writes ``mib`` MiB to its stdout and its stderr for every minibatch."""

    def __init__(self, mib=8):
        super().__init__()
        self.mib = mib

    def transform(self, data_inputs):
        line = "x" * 1023 + "\n"
        for stream in (sys.stdout, sys.stderr):
            stream.write(line * (self.mib * 1024))
            stream.flush()
        return np.asarray(data_inputs) + 1


# ------------------------------------------------- a result the parent cannot read
@pytest.mark.timeout(30)
def test_an_output_the_parent_cannot_unpickle_is_a_worker_error_naming_the_step_and_the_minibatch():
    p = SequentialQueuedPipeline([("odd", ChildOnlyOutput(bad=2))], batch_size=2)
    with p.setup():
        start = time.monotonic()
        with pytest.raises(StreamingWorkerError, match=r"'odd'.*minibatch 1.*stepline_only_in_the_worker") as info:
            p.transform(np.arange(6))  # minibatch 1 is [2, 3]
        assert time.monotonic() - start < 10
        assert info.value.step_name == "odd" and info.value.batch_index == 1
        assert p.consumers == []
        np.testing.assert_array_equal(p.transform(np.array([4, 5])), [4, 5])  # it starts afresh


# ------------------------------------------------------ a worker stopped, not dead
@pytest.mark.timeout(30)
def test_a_sigstopped_worker_is_caught_by_timeout_s_and_killed():
    p = SequentialQueuedPipeline([("frozen", StopsItself(bad=3))], batch_size=1, timeout_s=0.5)
    with p.setup():
        victim = psutil.Process(p.consumers[0].pid)
        start = time.monotonic()
        with pytest.raises(StreamingTimeoutError, match=r"'frozen'.*minibatch 3"):
            p.transform(np.arange(6))
        assert time.monotonic() - start < 8
        assert not victim.is_running() or victim.status() == psutil.STATUS_ZOMBIE
        assert p.consumers == []


# ---------------------------------------------------------- a worker that floods
@pytest.mark.timeout(60)
def test_a_worker_flooding_stdout_and_stderr_neither_hangs_nor_loses_rows(capfd):
    p = SequentialQueuedPipeline([Floods(mib=4)], batch_size=5)
    with p.setup():
        np.testing.assert_array_equal(p.transform(np.arange(20)), np.arange(20) + 1)
    out, err = capfd.readouterr()
    assert len(out) >= 16 << 20 and len(err) >= 16 << 20
