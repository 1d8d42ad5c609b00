"""Streaming pipelines under faults: a worker killed while it sends, a step that hangs.

Real worker processes and threads, real signals. Every test has a timeout (a hang
fails instead of blocking CI) and checks that no worker process survives it.
"""
import gc
import multiprocessing
import os
import signal
import threading
import time

import numpy as np
import psutil
import pytest
from process_helpers import leftover_children

from stepline.base import BaseStep, NonFittableMixin
from stepline.distributed.channels import _ResultPipe
from stepline.distributed.streaming import (ParallelQueuedFeatureUnion, SequentialQueuedPipeline,
                                            StreamingTimeoutError, StreamingWorkerError)

pytestmark = pytest.mark.timeout(60)

MODES = [pytest.param(False, id="threads"), pytest.param(True, id="processes")]
BIG = 256 << 20  # bytes in the big output


# --------------------------------------------------------------------- steps
class BigOutput(NonFittableMixin, BaseStep):
    """Row 0 gives a ``BIG``-byte output; row 1 dies (``"die"``) or waits for ever (``"hang"``);
    other rows pass through."""

    def __init__(self, then="hang"):
        super().__init__()
        self.then = then

    def transform(self, data_inputs):
        if 0 in np.asarray(data_inputs):
            return [np.ones(BIG, dtype=np.uint8)]
        if 1 not in np.asarray(data_inputs):
            return data_inputs
        if self.then == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        threading.Event().wait()  # until the parent kills us
        return data_inputs


class Hangs(NonFittableMixin, BaseStep):
    """Waits on ``release`` (threads) or for ever (processes) when it sees ``bad``."""

    release = threading.Event()

    def __init__(self, bad=5, name=None):
        super().__init__(name=name)
        self.bad = bad

    def transform(self, data_inputs):
        if self.bad in np.asarray(data_inputs):
            type(self).release.wait()
        return np.asarray(data_inputs) + 1


class Add(NonFittableMixin, BaseStep):
    def transform(self, data_inputs):
        return np.asarray(data_inputs) + 1


# -------------------------------------------------------------- leak checks


@pytest.fixture(autouse=True)
def no_worker_survives():
    yield
    Hangs.release.set()  # a hung thread worker finishes and exits
    gc.collect()
    deadline = time.monotonic() + 3
    while (multiprocessing.active_children() or leftover_children()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert multiprocessing.active_children() == [] and leftover_children() == []
    threads = [t for t in threading.enumerate() if t.name.startswith("stepline:")]
    for t in threads:
        t.join(3)
    assert not any(t.is_alive() for t in threads)
    Hangs.release.clear()


def _kill_after_reading(pid: int, nbytes: int, killed: dict, reader_pid: int | None = None) -> None:
    """SIGKILL ``pid`` once ``reader_pid`` has read ``nbytes`` more (its ``/proc/PID/io``).

    For a reader in another process (a worker of the next stage); a thread of this
    process polls, so the kill lands after at least ``nbytes`` were read.
    """
    reader = psutil.Process(reader_pid)
    start = reader.io_counters().read_chars
    while True:
        done = reader.io_counters().read_chars - start
        if done >= nbytes:
            os.kill(pid, signal.SIGKILL)
            killed["read"] = done
            return
        time.sleep(0.0005)


def _kill_from_the_reader(monkeypatch, pid: int, nbytes: int, killed: dict) -> None:
    """The parent's own reads of the result pipe SIGKILL ``pid`` once they have read ``nbytes``.

    The kill is made by the reading thread itself, between two of its reads, so the
    reader cannot have read on in the meantime: with ``nbytes < BIG`` the worker dies
    in the middle of its message by construction, whatever the machine's load (a
    polling thread could be descheduled while the parent read the whole message).
    """
    read = _ResultPipe._read_some
    me = psutil.Process()
    start = me.io_counters().read_chars

    def read_then_maybe_kill(self):
        read(self)
        if "read" not in killed:
            done = me.io_counters().read_chars - start
            if done >= nbytes:
                os.kill(pid, signal.SIGKILL)
                killed["read"] = done

    monkeypatch.setattr(_ResultPipe, "_read_some", read_then_maybe_kill)


# ------------------------------------------------- a worker killed while it sends
@pytest.mark.timeout(40)
@pytest.mark.parametrize("fraction", [0.125, 0.5, 1.0], ids=["at-32MiB", "at-128MiB", "after-sending"])
def test_worker_killed_while_sending_a_large_output_raises_within_seconds(fraction, monkeypatch):
    p = SequentialQueuedPipeline([BigOutput("hang")], batch_size=1)
    with p.setup():
        victim = p.consumers[0].pid
        killed = {}
        _kill_from_the_reader(monkeypatch, victim, int(BIG * fraction), killed)
        start = time.monotonic()
        with pytest.raises(StreamingWorkerError, match=f"pid {victim}.*killed by signal SIGKILL") as info:
            p.transform([0, 1])
        elapsed = time.monotonic() - start
        assert elapsed < 10.0
        assert info.value.pid == victim and info.value.exitcode == -signal.SIGKILL
        if fraction < 1:  # it really died in the middle of the message
            assert killed["read"] < BIG
        else:
            assert killed["read"] >= BIG
        assert p.consumers == []


@pytest.mark.timeout(40)
def test_worker_killed_while_sending_to_the_next_stage_raises_within_seconds():
    p = SequentialQueuedPipeline([("big", BigOutput("hang")), ("next", Add())], batch_size=1)
    with p.setup():
        sender, reader = (w.pid for w in p.consumers)
        killed = {}
        killer = threading.Thread(target=_kill_after_reading, args=(sender, BIG // 4, killed, reader))
        killer.start()
        start = time.monotonic()
        with pytest.raises(StreamingWorkerError, match=f"pid {sender}. of step 'big'.*killed by signal SIGKILL"):
            p.transform([0, 1])
        killer.join()
        assert time.monotonic() - start < 10.0 and killed["read"] < BIG
        assert p.consumers == []  # the next stage's worker, stuck reading the cut message, was stopped too


@pytest.mark.timeout(30)
def test_worker_killed_before_sending_raises_and_names_the_minibatch():
    p = SequentialQueuedPipeline([Add(), ("dies", BigOutput("die"))], batch_size=1)
    with p.setup():
        with pytest.raises(StreamingWorkerError, match="'dies'.*killed by signal SIGKILL.*minibatch 1") as info:
            p.transform([1, 0, 3])  # 'dies' sees [2], [1], [4]
        assert info.value.batch_index == 1 and info.value.step_name == "dies"


@pytest.mark.timeout(30)
def test_a_pipeline_keeps_working_after_a_worker_died_in_a_send(monkeypatch):
    p = SequentialQueuedPipeline([BigOutput("hang")], batch_size=1)
    with p.setup():
        killed = {}
        _kill_from_the_reader(monkeypatch, p.consumers[0].pid, BIG // 4, killed)
        with pytest.raises(StreamingWorkerError):
            p.transform([0, 1])
        assert killed["read"] < BIG
        monkeypatch.undo()
        out = p.transform([0])
        assert out[0].nbytes == BIG


# ----------------------------------------------------------------- hung steps
@pytest.mark.timeout(30)
@pytest.mark.parametrize("use_processes", MODES)
def test_hung_step_times_out_naming_the_step_and_the_minibatch(use_processes, caplog):
    p = SequentialQueuedPipeline([Add(), ("stuck", 2, Hangs(bad=6))], batch_size=2, timeout_s=0.5,
                                 use_processes=use_processes)
    with p.setup():
        np.testing.assert_array_equal(p.transform(np.arange(4.0)), np.arange(4.0) + 2)
        start = time.monotonic()
        with pytest.raises(StreamingTimeoutError, match=r"'stuck'.*minibatch 2.*0\.5 s") as info:
            p.transform(np.arange(10.0))  # minibatch 2 is [4, 5] -> [5, 6] at 'stuck'
        assert 0.5 <= time.monotonic() - start < 5.0
        assert isinstance(info.value, StreamingWorkerError)
        assert info.value.step_name == "stuck" and info.value.batch_index == 2
        assert p.consumers == []
        if use_processes:
            assert multiprocessing.active_children() == []
        else:
            assert "abandoned" in str(info.value) and "was abandoned" in caplog.text
    if not use_processes:  # the teardown did not wait for the abandoned thread's call
        assert "is not torn down: an abandoned worker thread" in caplog.text


@pytest.mark.timeout(30)
def test_timeout_in_a_feature_union_branch():
    p = ParallelQueuedFeatureUnion([Add(), ("stuck", Hangs(bad=3))], batch_size=1, timeout_s=0.3)
    with p.setup():
        with pytest.raises(StreamingTimeoutError, match=r"'stuck'.*minibatch 3"):
            p.transform(np.arange(6.0))


@pytest.mark.timeout(30)
def test_slow_but_steady_steps_do_not_time_out():
    class Steady(NonFittableMixin, BaseStep):
        def transform(self, data_inputs):
            time.sleep(0.05)
            return data_inputs

    p = SequentialQueuedPipeline([(2, Steady()), Steady()], batch_size=1, timeout_s=1.0, max_queued_minibatches=2)
    with p.setup():
        assert len(p.transform(np.arange(30.0))) == 30  # the whole call takes longer than timeout_s


def test_timeout_refuses_bad_values():
    for bad in (0, -1, "1", True):
        with pytest.raises(ValueError, match="timeout_s"):
            SequentialQueuedPipeline([Add()], batch_size=1, timeout_s=bad)


def test_timeout_is_off_by_default():
    assert SequentialQueuedPipeline([Add()], batch_size=1).timeout_s is None


# ------------------------------------------------------ the mode travels with the call
class AddN(NonFittableMixin, BaseStep):
    def __init__(self, n=100):
        super().__init__()
        self.n = n

    def transform(self, data_inputs):
        return np.asarray(data_inputs) + self.n


@pytest.mark.timeout(30)
@pytest.mark.parametrize("use_processes", MODES)
def test_predict_runs_the_workers_in_inference_without_restarting_them(use_processes):
    from stepline.steps.flow import TrainOnlyWrapper
    p = SequentialQueuedPipeline([Add(), TrainOnlyWrapper(AddN(100))], batch_size=2, use_processes=use_processes)
    x = np.zeros(5)
    with p.setup():
        np.testing.assert_array_equal(p.transform(x), x + 101)
        workers = list(p.consumers)
        np.testing.assert_array_equal(p.predict(x), x + 1)
        np.testing.assert_array_equal(p.transform(x), x + 101)  # the mode was the call's only
        assert p.consumers == workers and all(w.is_alive() for w in workers)
        assert p.is_train


def test_a_pipeline_saved_before_timeout_s_existed_still_runs():
    p = SequentialQueuedPipeline([Add()], batch_size=2, use_processes=False)
    del p.__dict__["timeout_s"]  # what unpickling an older dump gives
    with p.setup():
        np.testing.assert_array_equal(p.transform(np.arange(3.0)), np.arange(3.0) + 1)
