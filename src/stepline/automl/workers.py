"""Where trials run: in the driver or in local worker processes (Dask: :mod:`.dask_runner`).

Every runner gets the pipeline as a stepline dump, once: the driver saves a full dump into a
private temporary folder; the driver (``n_jobs=1``) and each worker process load it from that
folder (each Dask worker from the bytes of that dump). The loaded pipeline is the template
of every trial (:mod:`.trials`). The data, the splits and the scorer travel once per worker too.

Runners only evaluate: they never see Optuna or the storage. The driver asks, hands a
trial's values to ``submit``, collects ``wait``'s results and tells; ``capacity`` is how
many trials run at once, ``ahead`` how many more the driver keeps submitted (queued).
Intermediate scores (epochs) reach the driver while the trial runs, so the pruner stops it
live: a worker process asks the driver after each epoch and waits for the answer (a pipe
round trip, microseconds).

The worker processes are hand-written rather than a ``ProcessPoolExecutor``: when one of its
workers dies, the pool breaks and fails every pending future, while here a dead worker fails
its own trial only and is replaced.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import select
import threading
import time
import traceback
from multiprocessing.connection import wait as wait_for
from pathlib import Path

import cloudpickle

from stepline.automl.trials import FAIL, TrialData, TrialResult, run_trial
from stepline.core.context import ExecutionContext

log = logging.getLogger(__name__)

# fork is unsafe with threads (torch, dask, the user's) in the driver. A fork server starts
# once per driver process from a clean interpreter, imports what every trial needs, and
# then forks each worker in milliseconds; spawn (a fresh interpreter a worker, seconds of
# imports each) where there is no fork server. The server also runs the driver's main
# script once (:mod:`.forkserver_main`), as each worker would do otherwise.
_START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
_PRELOAD = ["stepline.automl.trials", "stepline.steps.sklearn", "stepline.saving.procedure",
            "stepline.saving.objectfile", "stepline.saving.schema", "stepline.trust.store",
            "stepline.trust.signing",
            # what loading a dump imports on first use (measured: 60-90 ms a worker otherwise)
            "cryptography.exceptions", "cryptography.hazmat.primitives.serialization",
            "cryptography.hazmat.primitives.asymmetric.ed25519", "email.parser",
            "sklearn.metrics", "sklearn.model_selection", "stepline.automl.forkserver_main"]
_STOP_GRACE_S = 5.0


def save_template(pipeline, folder: Path) -> str:
    """A full dump of ``pipeline`` in ``folder``; returns the name to load it by."""
    from stepline.saving.procedure import save_step
    save_step(pipeline, ExecutionContext(folder), full_dump=True, mark_saved=False)
    return pipeline.name


def load_template(folder, name: str):
    """The pipeline of :func:`save_template`, loaded (not set up)."""
    return ExecutionContext(folder).load(name)


# ------------------------------------------------------------------ in the driver

class SequentialRunner:
    """Runs each trial in the driver, one at a time (``n_jobs=1``)."""

    capacity, ahead = 1, 0

    def __init__(self, folder: Path, name: str, data: TrialData):
        self.template = load_template(folder, name)
        self.data = data
        self.pending: list = []

    def submit(self, number: int, params: dict) -> None:
        self.pending.append((number, params))

    def has_idle_thread(self) -> bool:  # nothing is queued: in flight < capacity says it
        return False

    def wait(self, report) -> list:
        number, params = self.pending.pop(0)
        return [run_trial(self.template, number, params, self.data,
                          lambda step, value: report(number, step, value))]

    def close(self) -> None:
        self.template = None


# ------------------------------------------------------------------ local processes

class WorkerStartError(RuntimeError):
    """A worker process could not load the pipeline's dump or the trials' data."""


def _exit_with_driver(driver_pid: int) -> None:
    """A daemon thread ends this worker the moment the driver process ends, however it ended
    (SIGKILL too), even while a trial holds the main thread: the worker's parent is the fork
    server, which outlives the driver while its workers live (each holds the server's
    liveness pipe), so neither ``daemon=True`` nor a parent-death signal would reach it.
    Linux: waits on a pidfd (no polling); elsewhere checks the driver once a second."""
    def watch():
        try:
            descriptor = os.pidfd_open(driver_pid)
        except ProcessLookupError:
            os._exit(1)
        except (AttributeError, OSError):  # no pidfd here: poll
            while _alive(driver_pid):
                time.sleep(1.0)
            os._exit(1)
        select.select([descriptor], [], [])
        os._exit(1)
    threading.Thread(target=watch, name="stepline-automl-driver-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _process_worker(connection, folder: str, name: str, data_blob: bytes, driver_pid: int) -> None:
    """A worker process: load the dump once, then run the trials the driver sends."""
    _exit_with_driver(driver_pid)
    try:
        template = load_template(folder, name)
        data = cloudpickle.loads(data_blob)
    except Exception as error:  # noqa: BLE001 - reported to the driver, which raises it
        connection.send(("broken", f"{type(error).__name__}: {error}\n{traceback.format_exc()}"))
        return
    while True:
        try:
            message = connection.recv()
        except EOFError:  # the driver is gone
            return
        if message is None:
            return
        number, params, timed = message
        if timed:  # the trial's time starts now, not while this process was loading the dump
            connection.send(("started", number))

        def report(step, value, number=number):
            connection.send(("report", number, step, value))
            return connection.recv()
        connection.send(("result", run_trial(template, number, params, data, report)))


class _Worker:
    """One worker process and the duplex pipe to it."""

    def __init__(self, context, folder: Path, name: str, data_blob: bytes):
        self.connection, child = context.Pipe(duplex=True)
        self.process = context.Process(target=_process_worker, args=(child, str(folder), name, data_blob,
                                                                            os.getpid()),
                                       daemon=True, name="stepline-automl-worker")
        self.process.start()
        child.close()
        self.trial: int | None = None
        self.deadline: float | None = None  # time.monotonic() by which its trial must end


def _start_fork_server(context) -> None:
    """Start the fork server (once per driver process) with the trials' modules and the
    driver's main script preloaded; a server already running is kept as it is."""
    from multiprocessing import forkserver

    from stepline.automl.forkserver_main import MAIN_VARIABLE, describe_main
    context.set_forkserver_preload(_PRELOAD)
    previous = os.environ.get(MAIN_VARIABLE)
    os.environ[MAIN_VARIABLE] = describe_main()  # the server inherits the environment
    try:
        forkserver.ensure_running()
    finally:
        if previous is None:
            os.environ.pop(MAIN_VARIABLE, None)
        else:
            os.environ[MAIN_VARIABLE] = previous


class ProcessRunner:
    """Runs trials in ``n_jobs`` worker processes; a worker that dies fails its trial and is replaced.

    A trial is sent to an idle worker only (``ahead = 0``): the pipe's round trip is well under
    a millisecond, and a trial queued behind a busy worker could leave another idle at the end."""

    ahead = 0

    def __init__(self, folder: Path, name: str, data: TrialData, n_jobs: int,
                 trial_timeout_s: float | None = None):
        self.capacity = n_jobs
        self.trial_timeout_s = trial_timeout_s
        self._args = (folder, name, cloudpickle.dumps(data))
        self._context = multiprocessing.get_context(_START_METHOD)
        if _START_METHOD == "forkserver":
            _start_fork_server(self._context)
        self.workers = [_Worker(self._context, *self._args) for _ in range(n_jobs)]

    def has_idle_thread(self) -> bool:  # nothing is queued: in flight < capacity says it
        return False

    def submit(self, number: int, params: dict) -> None:
        worker = next(w for w in self.workers if w.trial is None)
        worker.connection.send((number, params, self.trial_timeout_s is not None))
        worker.trial = number
        worker.deadline = None

    def wait(self, report) -> list:
        busy = [w for w in self.workers if w.trial is not None]
        ready = wait_for([w.connection for w in busy] + [w.process.sentinel for w in busy],
                         timeout=self._time_to_next_deadline(busy))
        results = []
        for worker in busy:
            if worker.connection in ready or worker.process.sentinel in ready:
                result = self._receive(worker, report)
                if result is not None:
                    results.append(result)
            elif worker.deadline is not None and time.monotonic() >= worker.deadline:
                results.append(self._stop_overdue(worker))
        return results

    def _time_to_next_deadline(self, busy: list) -> float | None:
        deadlines = [w.deadline for w in busy if w.deadline is not None]
        return None if not deadlines else max(0.0, min(deadlines) - time.monotonic())

    def _stop_overdue(self, worker: _Worker) -> TrialResult:
        """The worker's trial ran over ``trial_timeout_s``: kill the worker, fail its trial, replace it."""
        number = worker.trial
        log.warning("stepline.automl: trial %s ran over trial_timeout_s=%s s; killing its worker process %s",
                    number, self.trial_timeout_s, worker.process.pid)
        worker.process.kill()
        worker.process.join()
        worker.connection.close()
        self.workers[self.workers.index(worker)] = _Worker(self._context, *self._args)
        return TrialResult(number, FAIL, error=f"TrialTimeout: the trial ran over trial_timeout_s="
                                               f"{self.trial_timeout_s} s; its worker process was killed")

    def _receive(self, worker: _Worker, report) -> TrialResult | None:
        try:
            if not worker.connection.poll():
                raise EOFError
            message = worker.connection.recv()
        except (EOFError, OSError):
            return self._replace(worker)
        if message[0] == "broken":
            raise WorkerStartError(f"stepline.automl: a worker process could not load the pipeline "
                                   f"{self._args[1]!r} from its dump: {message[1]}")
        if message[0] == "started":
            worker.deadline = time.monotonic() + self.trial_timeout_s
            return None
        if message[0] == "report":
            _, number, step, value = message
            worker.connection.send(bool(report(number, step, value)))
            return None
        worker.trial = None
        return message[1]

    def _replace(self, worker: _Worker) -> TrialResult:
        """The worker died: fail its trial, start another in its place."""
        worker.process.join(_STOP_GRACE_S)
        code = worker.process.exitcode
        number = worker.trial
        log.warning("stepline.automl: worker process %s died (exit code %s) during trial %s; "
                    "starting another", worker.process.pid, code, number)
        worker.connection.close()
        self.workers[self.workers.index(worker)] = _Worker(self._context, *self._args)
        return TrialResult(number, FAIL, error=f"WorkerDied: the worker process running the trial "
                                               f"died (exit code {code})")

    def close(self) -> None:
        """Idle workers are asked to stop; a worker still running a trial (the search was
        interrupted, or raised) is killed: its trial was already failed by the driver."""
        for worker in self.workers:
            if worker.trial is not None:
                worker.process.kill()
                continue
            try:
                worker.connection.send(None)
            except (OSError, ValueError):
                pass
        for worker in self.workers:
            worker.process.join(_STOP_GRACE_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.connection.close()
        self.workers = []
