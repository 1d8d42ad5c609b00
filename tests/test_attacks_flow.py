"""Attacks on the streaming pipelines: what a hostile step or user does to the workers.

Real worker processes, real signals; every test has a timeout (a hang fails instead of
blocking CI) and the autouse fixture checks that no worker process survives it.
"""
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import types

import numpy as np
import psutil
import pytest
from process_helpers import leftover_children

from stepline.base import BaseStep, NonFittableMixin
from stepline.distributed.streaming import (SequentialQueuedPipeline, StreamingTimeoutError,
                                            StreamingWorkerError)

pytestmark = pytest.mark.timeout(60)




@pytest.fixture(autouse=True)
def no_worker_survives():
    yield
    gc.collect()
    deadline = time.monotonic() + 3
    while (multiprocessing.active_children() or leftover_children()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert multiprocessing.active_children() == [] and leftover_children() == []


# --------------------------------------------------------------------- steps
class Add(NonFittableMixin, BaseStep):
    def transform(self, data_inputs):
        return np.asarray(data_inputs) + 1


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


# ------------------------------------------------------------------------- Dask
class SlowAdd(NonFittableMixin, BaseStep):
    """Adds 1, taking a while per minibatch (so a call is still running after its first result)."""

    def transform(self, data_inputs):
        time.sleep(0.2)
        return np.asarray(data_inputs) + 1


def _dask_cli(*args):
    """A ``dask scheduler``/``dask worker`` process that can import this module (its steps)."""
    path = os.pathsep.join([os.path.dirname(os.path.abspath(__file__)), *sys.path])
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": path})


@pytest.mark.timeout(90)
def test_dask_scheduler_killed_mid_transform_is_a_clear_error_within_seconds_and_teardown_is_prompt(tmp_path):
    distributed = pytest.importorskip("distributed")
    from stepline.distributed.dask import DaskPipeline, DaskStepError
    address_file = str(tmp_path / "scheduler.json")
    scheduler = _dask_cli("distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                          "--no-dashboard", "--scheduler-file", address_file)
    worker = _dask_cli("distributed.cli.dask_worker", "--scheduler-file", address_file, "--nthreads", "1",
                       "--no-nanny", "--no-dashboard")
    client = None
    try:
        client = distributed.Client(scheduler_file=address_file, timeout=30)
        client.wait_for_workers(1, timeout=30)

        def kill_the_scheduler_after_the_first_minibatch(done, total):
            if done == 1:
                scheduler.kill()

        p = DaskPipeline(SlowAdd(), batch_size=1, client=client, timeout_s=2,
                         show_progress=kill_the_scheduler_after_the_first_minibatch)
        p.setup()
        start = time.monotonic()
        with pytest.raises(DaskStepError, match=r"'DaskPipeline'.*lost its Dask scheduler.*'SlowAdd'"):
            p.transform(np.arange(20))
        assert time.monotonic() - start < 10  # not the client's 30 s reconnection attempt
        start = time.monotonic()
        p.teardown()
        assert time.monotonic() - start < 5
    finally:
        for process in (scheduler, worker):
            process.kill()
            process.wait(10)
        if client is not None:
            client.close(timeout=5)


@pytest.mark.timeout(60)
def test_dask_client_closed_during_a_call_is_a_clear_error_not_a_cancel_keys_failure():
    distributed = pytest.importorskip("distributed")
    from stepline.distributed.dask import DaskPipeline, DaskStepError
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0", silence_logs=logging.ERROR) as cluster:
        client = distributed.Client(cluster)
        closer = []

        def close_the_client_after_the_first_minibatch(done, total):
            if done == 1:
                closer.append(threading.Thread(target=client.close))
                closer[0].start()

        p = DaskPipeline(SlowAdd(), batch_size=1, client=client, show_progress=close_the_client_after_the_first_minibatch)
        try:
            p.setup()
            with pytest.raises(DaskStepError, match=r"'DaskPipeline'.*Dask client was closed.*'SlowAdd'"):
                p.transform(np.arange(20))
            p.teardown()
        finally:
            for thread in closer:
                thread.join(10)
            client.close()


# ------------------------------------------------------------- a setup that hangs
class SetupHangs(NonFittableMixin, BaseStep):
    """Its setup never returns (a model server that never answers, a lock never released)."""

    def setup(self, context=None):
        threading.Event().wait()

    def transform(self, data_inputs):
        return data_inputs


@pytest.mark.timeout(30)
def test_a_worker_setup_that_hangs_is_caught_by_setup_timeout_s_naming_the_step():
    p = SequentialQueuedPipeline([Add(), ("stuck", SetupHangs())], batch_size=2, timeout_s=0.5, setup_timeout_s=1)
    with p.setup():
        start = time.monotonic()
        with pytest.raises(StreamingTimeoutError, match=r"'stuck'.*setup.*setup_timeout_s=1 s") as info:
            p.transform(np.arange(6))
        assert 1 <= time.monotonic() - start < 8
        assert info.value.step_name == "stuck" and info.value.phase == "setup" and info.value.batch_index is None
        assert p.consumers == []


def test_setup_timeout_s_refuses_bad_values_naming_itself():
    for bad in (0, -1, "1", True):
        with pytest.raises(ValueError, match="setup_timeout_s"):
            SequentialQueuedPipeline([Add()], batch_size=1, setup_timeout_s=bad)


class Twice(NonFittableMixin, BaseStep):
    def transform(self, data_inputs):
        return np.asarray(data_inputs) * 2


@pytest.mark.timeout(90)
def test_dask_workers_that_cannot_read_the_shared_dump_raise_a_dask_step_error_naming_the_path(tmp_path):
    distributed = pytest.importorskip("distributed")
    from stepline.distributed.dask import DaskPipeline, DaskStepError
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0", silence_logs=logging.CRITICAL) as cluster, \
            distributed.Client(cluster) as client:
        p = DaskPipeline(Twice(), batch_size=2, client=client, shared_folder=str(tmp_path))
        with p.setup():
            np.testing.assert_array_equal(p.transform(np.arange(4)), np.arange(4) * 2)
            (shipped,) = list(tmp_path.iterdir())
            shutil.rmtree(shipped)  # what a worker on a machine without this folder sees
            client.restart()  # fresh workers: they must load the dump again
            with pytest.raises(DaskStepError, match=rf"'DaskPipeline'.*could not load step 'Twice'.*"
                                                    rf"{shipped.name}.*NotADumpError") as info:
                p.transform(np.arange(4))
            assert info.value.batch_index in (0, 1) and info.value.worker


@pytest.mark.timeout(30)
def test_an_output_the_next_stage_cannot_unpickle_names_the_receiving_step_and_what_it_was_reading():
    p = SequentialQueuedPipeline([("odd", ChildOnlyOutput(bad=2)), ("next", Add())], batch_size=2)
    with p.setup():
        with pytest.raises(StreamingWorkerError, match=r"'next'.*unpickling its input \(the output of the stage "
                                                       r"before\).*stepline_only_in_the_worker") as info:
            p.transform(np.arange(6))
        assert info.value.step_name == "next" and info.value.exc_type == "ModuleNotFoundError"
        assert p.consumers == []


# ------------------------------------------------- concurrent calls, one failing
class FailsOnNegativeWhenReleased(NonFittableMixin, BaseStep):
    """On a negative row: says so (``entered``), waits for ``release``, then raises."""

    entered, release = threading.Event(), threading.Event()

    def transform(self, data_inputs):
        data_inputs = np.asarray(data_inputs)
        if (data_inputs < 0).any():
            type(self).entered.set()
            type(self).release.wait(20)
            raise ValueError("a negative row")
        return data_inputs + 1


def _waiting_in_the_streaming_call(thread) -> bool:
    frame = sys._current_frames().get(thread.ident)
    return frame is not None and frame.f_code.co_name in ("run", "_stream") \
        and "stepline" in frame.f_code.co_filename and "distributed" in frame.f_code.co_filename


@pytest.mark.timeout(60)
def test_calls_waiting_while_another_call_fails_get_their_own_outputs_not_its_abort():
    FailsOnNegativeWhenReleased.entered.clear()
    FailsOnNegativeWhenReleased.release.clear()
    p = SequentialQueuedPipeline([("s", FailsOnNegativeWhenReleased())], batch_size=2, use_processes=False)
    outcomes = {}

    def call(i, x):
        try:
            out = p.transform(x)
            outcomes[i] = "right" if np.array_equal(out, x + 1) else "wrong"
        except Exception as e:
            outcomes[i] = e

    with p.setup():
        bad = np.array([0, 1, -1, 3])
        failing = threading.Thread(target=call, args=(0, bad))
        failing.start()
        assert FailsOnNegativeWhenReleased.entered.wait(20)
        others = [threading.Thread(target=call, args=(i, np.arange(6) + 10 * i)) for i in range(1, 16)]
        for t in others:
            t.start()
        deadline = time.monotonic() + 20
        while not all(_waiting_in_the_streaming_call(t) for t in others) and time.monotonic() < deadline:
            time.sleep(0.01)  # until every other call waits behind the failing one
        FailsOnNegativeWhenReleased.release.set()
        for t in [failing, *others]:
            t.join(30)
        assert isinstance(outcomes[0], StreamingWorkerError) and "a negative row" in str(outcomes[0])
        assert {i: outcomes[i] for i in range(1, 16)} == {i: "right" for i in range(1, 16)}
        np.testing.assert_array_equal(p.transform(np.arange(4)), np.arange(4) + 1)


class StopsItsDaskWorker(NonFittableMixin, BaseStep):
    """SIGSTOPs the Dask worker process it runs in on the row ``bad``: the worker's own timer
    freezes with it."""

    def __init__(self, bad=3):
        super().__init__()
        self.bad = bad

    def transform(self, data_inputs):
        if self.bad in np.asarray(data_inputs):
            os.kill(os.getpid(), signal.SIGSTOP)
        return np.asarray(data_inputs) + 1


@pytest.mark.timeout(90)
def test_a_sigstopped_dask_worker_is_caught_by_timeout_s_and_replaced():
    distributed = pytest.importorskip("distributed")
    from stepline.distributed.dask import DaskPipeline, DaskTimeoutError
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0", silence_logs=logging.CRITICAL) as cluster, \
            distributed.Client(cluster) as client:
        (frozen_pid,) = client.run(os.getpid).values()
        p = DaskPipeline(StopsItsDaskWorker(bad=3), batch_size=1, client=client, timeout_s=1)
        try:
            with p.setup():
                start = time.monotonic()
                with pytest.raises(DaskTimeoutError, match=r"not been heard from.*'StopsItsDaskWorker' on minibatch 3"
                                                           r".*timeout_s=1 s") as info:
                    p.transform(np.arange(6))
                assert time.monotonic() - start < 30  # not the scheduler's 5-minute worker-ttl
                assert info.value.batch_index == 3
                assert not psutil.pid_exists(frozen_pid) or psutil.Process(frozen_pid).status() == psutil.STATUS_ZOMBIE
                np.testing.assert_array_equal(p.transform(np.array([0, 1])), [1, 2])  # on the fresh worker
        finally:
            if psutil.pid_exists(frozen_pid):
                os.kill(frozen_pid, signal.SIGKILL)
