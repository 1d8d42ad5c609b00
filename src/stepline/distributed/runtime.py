"""The parent side of the streaming steps: stages of workers joined by bounded queues.

A :class:`WorkerRuntime` owns, for one streaming step, a list of *stages*; each
stage is ``n_workers`` workers (processes or threads) that share one bounded input
queue. In the *sequential* topology stage ``k`` feeds stage ``k + 1`` and the last
stage feeds the result queue; in the *parallel* topology every stage feeds the
result channel. Only the parent reads the result channel, so nothing can deadlock:
the parent never blocks on a put (it feeds the first queue only while it has room and
reads results in between), and the last write of every minibatch goes to the result
channel, which the parent keeps draining. The queues between stages are bounded
``multiprocessing`` queues (``queue.Queue`` with threads); the result channel is a pipe
that the workers write synchronously (a ``queue.Queue`` with threads).

Failure handling: workers report exceptions as error records; the parent checks
the workers' liveness whenever it waits and at least every ``_LIVENESS_S``; on any
error (or ``KeyboardInterrupt``) it *aborts*: terminates every worker, kills the
stragglers, closes every queue, and raises. The worker side lives in
:mod:`stepline.distributed.workers`.
"""
from __future__ import annotations

import atexit
import logging
import multiprocessing
import multiprocessing.util  # noqa: F401  (imported first: see _abort_all_at_exit)
import os
import pickle
import queue
import shutil
import signal
import tempfile
import threading
import time
import weakref

from stepline.core.context import ExecutionContext
from stepline.distributed.channels import BusyBoard, _ProcessQueue, _ResultPipe, close_process_queues
from stepline.distributed.workers import (_ERROR, _LOG, _STOP, StreamingTimeoutError, StreamingWorkerError,
                                          _RemoteTraceback, make_payload, read_result, worker_main)
from stepline.logging import history as log_history

log = logging.getLogger(__name__)

_POLL_S = 0.05               # how long the parent waits for a result before it looks around
_LIVENESS_S = 0.1            # the parent checks its workers at least this often
_GRACEFUL_STOP_S = 10.0      # teardown waits this long for workers to finish their own teardown
_ABORT_JOIN_S = 2.0          # after SIGTERM, wait this long before SIGKILL (teardown runs in it: 1 s was
#                              short for a worker to be scheduled on 2 busy cores)


# ---------------------------------------------------------------------- runtime
class _Stage:
    __slots__ = ("name", "n_workers", "step", "in_q", "payload", "workers", "fingerprint", "first_slot")

    def __init__(self, name, n_workers, step, first_slot):
        self.name = name
        self.n_workers = n_workers
        self.first_slot = first_slot  # its workers' slots on the busy board follow
        self.step = step
        self.in_q = None
        self.payload = None
        self.workers = []
        self.fingerprint = None

    @property
    def payload_kind(self) -> str:
        return self.payload[0] if self.payload else ""


_LIVE_RUNTIMES: "weakref.WeakSet[WorkerRuntime]" = weakref.WeakSet()


class WorkerRuntime:
    """The workers and queues of one running streaming step (see the module docstring)."""

    def __init__(self, owner_name: str, steps, n_workers, sequential: bool, use_processes: bool,
                 use_savers: bool, start_method: str | None, max_queued, context: ExecutionContext,
                 timeout_s: float | None = None, setup_timeout_s: float | None = None):
        self.owner_name = owner_name
        self.sequential = sequential
        self.use_processes = use_processes
        self.use_savers = use_savers
        self.mp = multiprocessing.get_context(start_method or "spawn") if use_processes else None
        firsts = [sum(n_workers[:k]) for k in range(len(n_workers))]
        self.stages = [_Stage(s.name, n, s, first) for s, n, first in zip(steps, n_workers, firsts)]
        self.board = BusyBoard(sum(n_workers), self.mp)
        self.timeout_s = timeout_s
        self.setup_timeout_s = setup_timeout_s
        self.max_queued = max_queued
        # Workers get the context as (root, phase, parent names): holding the parent steps
        # themselves would keep the owner alive from its own finalizer.
        root = context.given_root
        self.context_spec = (None if root is None else str(root), context.execution_phase.value,
                             [p.name for p in context.parents])
        self.result_q = None
        self.stop_event = None if use_processes else threading.Event()
        self.lock = threading.Lock()
        self.closed = False
        self.abandoned = {}  # stage name -> its worker threads still running after an abort
        self.finalizer = None
        self._dump_root = None

    # -- start and stop
    def start(self) -> "WorkerRuntime":
        _LIVE_RUNTIMES.add(self)
        try:
            for stage in self.stages:  # fail on a step that cannot travel before any worker starts
                stage.payload = self._payload(stage.step)
            for stage in self.stages:
                stage.in_q = self._queue(self.max_queued or max(4, 2 * stage.n_workers))
            self.result_q = _ResultPipe(self.mp) if self.use_processes else queue.Queue()
            for k in range(len(self.stages)):
                self._start_workers(k)
        except BaseException:
            self.abort()
            raise
        return self

    def _queue(self, maxsize):
        if self.use_processes:
            return _ProcessQueue(maxsize, ctx=self.mp)
        return queue.Queue(maxsize)

    def _payload(self, step):
        if not self.use_processes:
            return ("object", step)
        return make_payload(step, self.use_savers, self._new_dump_folder)

    def _new_dump_folder(self) -> str:
        if self._dump_root is None:
            self._dump_root = tempfile.mkdtemp(prefix=f"stepline-workers-{self.owner_name}-")
        return tempfile.mkdtemp(dir=self._dump_root)

    def _out_q(self, k):
        if self.sequential and k + 1 < len(self.stages):
            return self.stages[k + 1].in_q
        return self.result_q

    def _start_workers(self, k: int) -> None:
        stage = self.stages[k]
        cx_spec = self.context_spec
        for w in range(stage.n_workers):
            slot = stage.first_slot + w
            self.board.clear(slot)
            args = (k, w, stage.name, stage.payload, stage.in_q, self._out_q(k), self.result_q, cx_spec,
                    os.getpid(), self.mp and self.mp.get_start_method(), self.stop_event, self.use_processes,
                    self.board, slot)
            label = f"stepline:{self.owner_name}/{stage.name}#{w}"
            if self.use_processes:
                worker = self.mp.Process(target=worker_main, args=args, name=label, daemon=False)
            else:
                worker = threading.Thread(target=worker_main, args=args, name=label, daemon=True)
            worker.start()
            stage.workers.append(worker)

    @property
    def workers(self) -> list:
        return [w for stage in self.stages for w in stage.workers]

    def restart_stage(self, k: int, step) -> None:
        """Give stage ``k`` fresh workers holding ``step`` (only between calls)."""
        stage = self.stages[k]
        try:
            self._stop_stage_workers(stage)
            if stage.payload_kind == "dump":
                shutil.rmtree(stage.payload[1], ignore_errors=True)
            stage.step = step
            stage.name = step.name
            stage.payload = self._payload(step)
            self._start_workers(k)
        except BaseException:
            self.abort()
            raise

    def _stop_stage_workers(self, stage) -> None:
        deadline = time.monotonic() + _GRACEFUL_STOP_S
        _send_stops(stage, deadline)
        _join_all(stage.workers, deadline)
        if any(_alive(w) for w in stage.workers):
            raise RuntimeError(f"the workers of step {stage.name!r} did not stop")  # the caller aborts
        stage.workers = []

    def stop(self) -> None:
        """Stop every worker (each tears its step down), close the queues. Idempotent.

        Workers that do not stop within ``_GRACEFUL_STOP_S`` are terminated.
        """
        if self.closed:
            return
        try:
            deadline = time.monotonic() + _GRACEFUL_STOP_S
            for stage in self.stages:
                _send_stops(stage, deadline)
            _join_all(self.workers, deadline)
        finally:
            self.abort()  # what is left: stragglers, queues, dump folder

    def dead_workers(self) -> list:
        """``(stage name, worker)`` for each worker that is not running."""
        return [(stage.name, w) for stage in self.stages for w in stage.workers if not _alive(w)]

    def abort(self) -> None:
        """Terminate every worker at once, kill stragglers, close queues. Idempotent, never blocks long."""
        if self.closed:
            return
        self.closed = True
        workers = self.workers
        if self.use_processes:
            _terminate(workers)
            close_process_queues([q for q in [s.in_q for s in self.stages] + [self.result_q] if q is not None])
        else:
            self.stop_event.set()
            _join_all(workers, time.monotonic() + _ABORT_JOIN_S)
            for stage in self.stages:
                alive = [t for t in stage.workers if t.is_alive()]
                if alive:
                    self.abandoned[stage.name] = alive
                for thread in alive:
                    log.warning("%s is still inside its step after the abort of %r and was abandoned (a thread "
                                "cannot be stopped): it exits when the step returns, and its output is dropped",
                                thread.name, self.owner_name)
        for stage in self.stages:
            stage.workers = []
        if self._dump_root is not None:
            shutil.rmtree(self._dump_root, ignore_errors=True)
            self._dump_root = None
        if self.finalizer is not None:
            self.finalizer.detach()
            self.finalizer = None
        _LIVE_RUNTIMES.discard(self)

    # -- running
    def run(self, batches: list, targets: list, stop_after: int, fit_mode: bool, progress=None,
            call_mode=None) -> list:
        """Send every ``(data_inputs, expected_outputs)`` batch into each stage of ``targets``.

        ``call_mode`` (see :mod:`stepline.core.mode`) travels with each minibatch: the
        workers run it in that mode without being restarted.
        Returns, in input order, one ``(data_inputs, expected_outputs)`` per batch
        (one target), or one list of them per batch, ordered like ``targets``.
        Raises :class:`StreamingWorkerError` (after aborting) when a worker fails.
        """
        with self.lock:
            if self.closed:
                raise RuntimeError(f"the workers of {self.owner_name!r} were stopped")
            try:
                return self._run(batches, targets, stop_after, fit_mode, progress, call_mode)
            except BaseException:
                self.abort()
                raise

    def _run(self, batches, targets, stop_after, fit_mode, progress, call_mode):
        n, m = len(batches), len(targets)
        queues = [self.stages[k].in_q for k in targets]
        position = {k: i for i, k in enumerate(targets)}
        out = [None] * n
        got = [0] * n
        encode = _encoder(self.use_processes)
        get = self.result_q.get
        next_idx = next_t = done = 0
        item = None
        last_check = time.monotonic()
        while done < n:
            while next_idx < n:
                if item is None:
                    di, eo = batches[next_idx]
                    item = encode((next_idx, stop_after, fit_mode, call_mode, di, eo), next_idx)
                try:
                    queues[next_t].put_nowait(item)
                except queue.Full:
                    break
                next_t += 1
                if next_t == m:
                    next_t, next_idx, item = 0, next_idx + 1, None
            try:
                msg = get(timeout=_POLL_S)
            except queue.Empty:
                msg = None
            if msg is not None:
                if self.use_processes:
                    msg = self._unpickle(msg)
                if msg[0] == _ERROR:
                    raise self._error(msg)
                if msg[0] == _LOG:  # a line a worker process logged: into this process's history
                    log_history.record(msg[1])
                    continue
                _, idx, stage_idx, di, eo = msg
                if m == 1:
                    out[idx] = (di, eo)
                    done += 1
                else:
                    if out[idx] is None:
                        out[idx] = [None] * m
                    out[idx][position[stage_idx]] = (di, eo)
                    got[idx] += 1
                    done += got[idx] == m
                if progress is not None:
                    progress.update(done)
            now = time.monotonic()
            if msg is None or now - last_check > _LIVENESS_S:
                self._check_workers()
                last_check = now
        return out

    def _check_workers(self) -> None:
        """Raise when a worker died, or spent too long on one minibatch (``timeout_s``) or on
        its setup (``setup_timeout_s``)."""
        timeout_s, setup_timeout_s = self.timeout_s, self.setup_timeout_s
        for stage in self.stages:
            for w, worker in enumerate(stage.workers):
                if not _alive(worker):
                    self._raise_reported_error()
                    raise self._died(stage, w, worker)
                if timeout_s is None and setup_timeout_s is None:
                    continue
                index, busy_s = self.board.read(stage.first_slot + w)
                if busy_s is None:  # idle, or handing an output on
                    continue
                limit = setup_timeout_s if index is None else timeout_s  # busy with no minibatch: in setup
                if limit is not None and busy_s > limit:
                    raise self._timed_out(stage, w, worker, index, busy_s)

    def _timed_out(self, stage, w, worker, index, busy_s) -> StreamingTimeoutError:
        if index is None:
            return self._setup_timed_out(stage, w, worker, busy_s)
        what = f"minibatch {index}"
        if self.use_processes:
            who, after = f"worker {w} (pid {worker.pid})", "every worker was stopped"
        else:
            who = f"worker thread {w}"
            after = ("the other workers were stopped; this thread cannot be stopped and was abandoned "
                     "(it exits when the step returns, its output is dropped)")
        return StreamingTimeoutError(
            f"step {stage.name!r} in {self.owner_name!r} spent {busy_s:.1f} s on {what} in {who}, "
            f"over timeout_s={self.timeout_s:g} s; {after}", timeout_s=self.timeout_s,
            step_name=stage.name, pid=getattr(worker, "pid", None), batch_index=index,
            phase="timeout")

    def _setup_timed_out(self, stage, w, worker, busy_s) -> StreamingTimeoutError:
        who = f"worker {w} (pid {worker.pid})" if self.use_processes else f"worker thread {w}"
        after = ("every worker was stopped" if self.use_processes else
                 "the other workers were stopped; this thread cannot be stopped and was abandoned")
        return StreamingTimeoutError(
            f"step {stage.name!r} in {self.owner_name!r} spent {busy_s:.1f} s in its setup in {who}, "
            f"over setup_timeout_s={self.setup_timeout_s:g} s; {after}", timeout_s=self.setup_timeout_s,
            step_name=stage.name, pid=getattr(worker, "pid", None), batch_index=None, phase="setup")

    def _raise_reported_error(self) -> None:
        """A dying worker may have reported why: prefer its error record."""
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:
            try:
                msg = self.result_q.get(timeout=0.02)
            except (queue.Empty, OSError, EOFError, ValueError):
                return
            if self.use_processes:
                msg = self._unpickle(msg)
            if msg[0] == _ERROR:
                raise self._error(msg)
            if msg[0] == _LOG:
                log_history.record(msg[1])

    def _unpickle(self, message) -> tuple:
        """A worker's message as a tuple; an output this process cannot unpickle is a worker error."""
        head, body = read_result(message)
        if body is None:
            return head
        try:
            return (*head, *pickle.loads(body))
        except Exception as exc:
            _, index, stage_idx = head
            name = self.stages[stage_idx].name
            raise StreamingWorkerError(
                f"the output of step {name!r} in {self.owner_name!r} for minibatch {index} cannot be unpickled "
                f"in the parent process: {type(exc).__name__}: {exc} (does it hold an object of a class only "
                f"the worker defines or imports?); every worker was stopped", step_name=name,
                exc_type=type(exc).__name__, exc_message=str(exc), batch_index=index,
                phase="receiving the output of") from exc

    def _died(self, stage, w, worker) -> StreamingWorkerError:
        if self.use_processes:
            code = worker.exitcode
            if code < 0:
                try:
                    how = f"was killed by signal {signal.Signals(-code).name}"
                except ValueError:
                    how = f"was killed by signal {-code}"
            else:
                how = f"exited with code {code}"
            who = f"worker {w} (pid {worker.pid})"
        else:
            code, how, who = None, "stopped", f"worker thread {w}"
        index, _ = self.board.read(stage.first_slot + w)
        on = f" on minibatch {index}" if index is not None else ""
        return StreamingWorkerError(
            f"{who} of step {stage.name!r} in {self.owner_name!r} {how}{on} while batches were in flight; "
            f"every worker was stopped", step_name=stage.name, exitcode=code,
            pid=getattr(worker, "pid", None), batch_index=index, phase="died")

    def _error(self, msg) -> StreamingWorkerError:
        _, index, stage_idx, worker_no, pid, step_name, type_name, message, tb, cause, phase = msg
        if isinstance(cause, bytes):
            try:
                cause = pickle.loads(cause)
            except Exception:
                cause = None
        where = f"worker {worker_no}" + (f" (pid {pid})" if pid is not None else " (thread)")
        batch = f" batch {index}" if index is not None else ""
        err = StreamingWorkerError(
            f"step {step_name!r} failed in {where} of {self.owner_name!r} during {phase}{batch}: "
            f"{type_name}: {message}\n\nWorker traceback:\n{tb.rstrip()}",
            step_name=step_name, exc_type=type_name, exc_message=message, worker_traceback=tb,
            pid=pid, batch_index=index, phase=phase)
        if isinstance(cause, BaseException):
            if self.use_processes:
                cause.__cause__ = _RemoteTraceback(tb)
            err.__cause__ = cause
            err.__suppress_context__ = True
        return err


def _encoder(use_processes):
    if not use_processes:
        return lambda item, index: item

    def encode(item, index):
        try:
            return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(f"minibatch {index} cannot be sent to worker processes: "
                            f"{type(exc).__name__}: {exc}") from exc
    return encode


def _alive(worker) -> bool:
    if isinstance(worker, threading.Thread):
        return worker.is_alive()
    return worker.exitcode is None


def _send_stops(stage, deadline: float) -> None:
    """One stop sentinel per running worker of ``stage`` (best effort, until ``deadline``)."""
    if stage.in_q is None:
        return
    for _ in [w for w in stage.workers if _alive(w)]:
        try:
            stage.in_q.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
        except (queue.Full, ValueError, OSError):
            return


def _join_all(workers, deadline: float) -> None:
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))


def _terminate(workers) -> None:
    """SIGTERM the processes still running, then SIGKILL those that do not stop in time."""
    procs = [w for w in workers if isinstance(w, multiprocessing.process.BaseProcess)]
    for signal_method in ("terminate", "kill"):
        for p in procs:
            if p.exitcode is None:
                try:
                    getattr(p, signal_method)()
                except Exception:
                    pass
        _join_all(procs, time.monotonic() + _ABORT_JOIN_S)


@atexit.register
def _abort_all_at_exit() -> None:
    # Registered after multiprocessing.util's exit hook, so it runs before it: that hook
    # joins non-daemonic children, which would wait forever on idle workers.
    for runtime in list(_LIVE_RUNTIMES):
        try:
            runtime.abort()
        except BaseException:
            pass
    # Whatever an interrupted abort left behind: our workers are named "stepline:...".
    _terminate([p for p in multiprocessing.active_children() if p.name.startswith("stepline:")])


def finalize_with(owner, runtime: WorkerRuntime) -> None:
    """Abort ``runtime`` when ``owner`` is garbage collected without a teardown."""
    fin = weakref.finalize(owner, runtime.abort)
    fin.atexit = False  # _abort_all_at_exit handles interpreter exit, in the right order
    runtime.finalizer = fin


__all__ = ["WorkerRuntime", "finalize_with"]
