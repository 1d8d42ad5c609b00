"""The worker side of the streaming steps: what a worker runs, how steps and errors travel.

A worker (a process or a thread) gets its stage's step as a *payload* — the object
itself (threads), a cloudpickle (processes), or a stepline dump in a temporary folder
(processes, when the step cannot be pickled or ``use_savers`` is set) — sets it up,
transforms the minibatches of its input queue, and tears the step down when it stops.
It reports an exception as an error record (type, message, formatted traceback, the
pickled exception when it pickles) and keeps serving; the parent aborts the call.

Messages between processes are pickled by the sender before they are queued, so
that a minibatch or an output that cannot be pickled raises where it is made instead
of vanishing in a queue's feeder thread (which would leave the reader waiting). On the
result pipe a message is a small head (kind, minibatch, stage) and a body (the
output) pickled apart (:func:`result_parts`, :func:`read_result`), so an output the
parent cannot unpickle (a class only the worker has) still names its step and minibatch.
Worker processes ignore SIGINT (the parent stops them), turn SIGTERM into a clean exit
that still runs the step's teardown, and exit by themselves when their parent dies.
The parent side lives in :mod:`stepline.distributed.runtime`, the queues, the result pipe
and the busy board in :mod:`stepline.distributed.channels`.
"""
from __future__ import annotations

import os
import pickle
import queue
import signal
import struct
import threading
import time
import traceback

from stepline.core.context import ExecutionContext, ExecutionPhase
from stepline.core.data import DataContainer
from stepline.core.errors import SteplineError
from stepline.core.mode import call_mode
from stepline.logging import history as log_history

_RESULT, _ERROR, _LOG = 0, 1, 2  # _LOG: a line logged through context.logger in a worker process
_STOP = None                 # the sentinel that stops one worker
_WORKER_POLL_S = 0.25        # how often an idle worker checks that its parent still runs


# ---------------------------------------------------------------------- errors
class StreamingWorkerError(SteplineError):
    """A worker of a streaming step failed: its step raised, or the worker died.

    Attributes: ``step_name`` (the stage's step), ``exc_type`` (the worker's
    exception class name, ``None`` when the worker died), ``exc_message``,
    ``worker_traceback`` (formatted, from the worker), ``exitcode`` and ``pid`` (of
    a worker process), ``batch_index`` (the minibatch at fault, when known),
    ``phase`` (``"setup"``, ``"transform"``, ``"fit_transform"``...). When the
    worker's exception could be carried back it is this error's ``__cause__``.
    """

    def __init__(self, message, step_name=None, exc_type=None, exc_message=None, worker_traceback=None,
                 exitcode=None, pid=None, batch_index=None, phase=None):
        super().__init__(message)
        self.step_name = step_name
        self.exc_type = exc_type
        self.exc_message = exc_message
        self.worker_traceback = worker_traceback
        self.exitcode = exitcode
        self.pid = pid
        self.batch_index = batch_index
        self.phase = phase


class StreamingTimeoutError(StreamingWorkerError):
    """A step spent longer than the pipeline's ``timeout_s`` on one minibatch.

    Same attributes as :class:`StreamingWorkerError`; ``batch_index`` is the minibatch
    and ``timeout_s`` the limit.
    """

    def __init__(self, message, timeout_s=None, **kwargs):
        super().__init__(message, **kwargs)
        self.timeout_s = timeout_s


class StreamingSetupError(SteplineError):
    """A step cannot be sent to worker processes (neither pickled nor saved as a dump)."""


class _RemoteTraceback(Exception):
    """Carries a worker's formatted traceback as the cause of the re-raised exception."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return "\n\n" + self.tb


# --------------------------------------------------------------------- payloads
class _Named:
    """Stands for a parent step in a worker process's context (only its name is needed)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


def _dump_step(step, folder: str) -> None:
    """Save ``step`` as a full dump under ``folder`` without marking the live step saved."""
    from stepline.saving import save_step
    save_step(step, ExecutionContext(folder), full_dump=True, mark_saved=False)


def make_payload(step, use_savers: bool, dump_root_factory) -> tuple:
    """How ``step`` travels to worker processes: ``("pickle", bytes)`` or ``("dump", folder, name)``.

    Pickling (cloudpickle) is tried first unless ``use_savers``; a step that cannot
    be pickled (it holds a queue, a lock, a model handle...) is saved as a stepline
    dump through its savers, and each worker loads it.
    """
    reason = None
    if not use_savers:
        try:
            import cloudpickle
            return ("pickle", cloudpickle.dumps(step, protocol=pickle.HIGHEST_PROTOCOL))
        except Exception as exc:
            reason = exc
    folder = dump_root_factory()
    try:
        _dump_step(step, folder)
    except Exception as exc:
        how = f"it cannot be pickled ({type(reason).__name__}: {reason}) and " if reason else ""
        raise StreamingSetupError(
            f"step {step.name!r} ({type(step).__name__}) cannot be sent to worker processes: "
            f"{how}saving it as a dump failed ({type(exc).__name__}: {exc}). Give the step a "
            f"saver that strips what cannot be saved (and recreate it in setup), or run the "
            f"streaming step with use_processes=False.") from exc
    return ("dump", folder, step.name)


def _materialize(payload):
    kind = payload[0]
    if kind == "object":
        return payload[1]
    if kind == "pickle":
        return pickle.loads(payload[1])
    return ExecutionContext(payload[1]).load(payload[2])


def _context_from(spec):
    root, phase, names = spec
    return ExecutionContext(root, ExecutionPhase(phase), parents=tuple(_Named(n) for n in names))


# ----------------------------------------------------------------------- worker
_TERMINATING = False


def worker_main(stage_idx, worker_no, step_name, payload, in_q, out_q, result_q, cx_spec,
                parent_pid, start_method, stop_event, owns_step, board, slot):
    """Body of one worker (process or thread): set up, transform batches, tear down.

    It notes on ``board[slot]`` which minibatch its step is on since when.
    Items are ``(index, stop_after, fit_mode, call_mode, data_inputs, expected_outputs)``
    (``call_mode``: the mode the parent's call runs in, ``None`` for the steps' own);
    outputs go to the result queue when ``stop_after`` is this stage, else to the
    next stage's queue. ``None`` stops the worker.
    """
    is_process = stop_event is None
    sequential_next = out_q is not result_q
    if is_process:
        def on_sigterm(signum, frame):
            global _TERMINATING
            _TERMINATING = True
            for q in (in_q, out_q, result_q):
                try:
                    q.cancel_join_thread()
                except Exception:
                    pass
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
        signal.signal(signal.SIGTERM, on_sigterm)
        result_q.close_reader()  # only the parent reads results
        # Our parent should be the owner (spawn, fork) or the fork server, which exits with
        # the owner; an owner that died before we got here already shows as a changed ppid.
        first_ppid = parent_pid if start_method != "forkserver" else os.getppid()
        threading.Thread(target=_watch_parent, args=(parent_pid, first_ppid), name="stepline-watchdog",
                         daemon=True).start()

        def stopped():
            return not _parent_alive(parent_pid, first_ppid)

        def forward_log_line(line):  # the parent keeps the history (stepline.logging.history)
            _put(result_q, result_parts((_LOG, line)), stopped)
        log_history.forward_to(forward_log_line)
    else:
        stopped = stop_event.is_set

    def report(exc, index, phase):
        _report(result_q, is_process, stage_idx, worker_no, step_name, exc, index, phase)

    step = None
    try:
        board.begin(slot, board.SETUP)
        step = _materialize(payload)
        context = _context_from(cx_spec)
        if owns_step:
            step.setup(context)
        board.clear(slot)
    except BaseException as exc:
        if _TERMINATING:
            raise
        board.clear(slot)
        report(exc, None, "setup")
        while _get(in_q, stopped, is_process) is not _STOP:
            pass
        return
    try:
        while True:
            item = _get(in_q, stopped, is_process)
            if item is _STOP:
                return
            index, phase = None, "transform"
            try:
                if is_process:
                    phase = f"unpickling its input (the output of {'the stage before' if stage_idx else 'the caller'})"
                    item = pickle.loads(item)
                    phase = "transform"
                index, stop_after, fit_mode, mode, data_inputs, expected_outputs = item
                board.begin(slot, index)
                item = None
                dc = DataContainer(data_inputs, expected_outputs)
                if fit_mode:
                    phase = "fit_transform"
                if mode is None:
                    dc = _handle(step, dc, context, fit_mode)
                else:
                    with call_mode(mode):
                        dc = _handle(step, dc, context, fit_mode)
                last = stop_after == stage_idx or not sequential_next
                if last:
                    msg = (_RESULT, index, stage_idx, dc.data_inputs, dc.expected_outputs)
                else:  # the next stage's item
                    msg = (index, stop_after, fit_mode, mode, dc.data_inputs, dc.expected_outputs)
                dc = None
                board.handing_on(slot)
                if is_process:
                    phase = "sending the output of"
                    if last:
                        msg = result_parts(msg[:3], (msg[3], msg[4]))
                    else:
                        msg = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
            except BaseException as exc:
                if _TERMINATING:
                    raise
                board.clear(slot)
                report(exc, index, phase)
                continue
            if not _put(result_q if last else out_q, msg, stopped):
                return
            board.clear(slot)
    finally:  # also on SIGTERM (an abort): teardown has until the SIGKILL, 1 s later
        if owns_step and step is not None:
            try:
                step.teardown()
            except BaseException as exc:
                if not _TERMINATING:
                    report(exc, None, "teardown")


_HEAD_LENGTH = struct.Struct("!I")


def result_parts(head: tuple, body=None) -> tuple:
    """One result-pipe message as ``(head length + pickled head, pickled body)``: sent as one."""
    head = pickle.dumps(head, protocol=pickle.HIGHEST_PROTOCOL)
    body = b"" if body is None else pickle.dumps(body, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEAD_LENGTH.pack(len(head)) + head, body


def read_result(message):
    """``(head, body bytes or None)`` of a message made by :func:`result_parts` (the body not unpickled)."""
    view = memoryview(message)
    (n,) = _HEAD_LENGTH.unpack_from(view)
    end = _HEAD_LENGTH.size + n
    return pickle.loads(view[_HEAD_LENGTH.size:end]), (view[end:] if len(view) > end else None)


def _handle(step, dc, context, fit_mode):
    if fit_mode:
        return step.handle_fit_transform(dc, context)[1]
    return step.handle_transform(dc, context)


def _parent_alive(parent_pid: int, first_ppid: int) -> bool:
    """Whether the process that owns this worker still runs.

    ``first_ppid`` is the worker's parent when it started: the owner itself (spawn,
    fork) or the fork server (which exits with the owner).
    """
    if os.getppid() != first_ppid:
        return False
    try:
        os.kill(parent_pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass
    return True


def _watch_parent(parent_pid: int, first_ppid: int) -> None:
    """In a worker process: when the parent dies, stop (SIGTERM: teardown runs), or exit."""
    while _parent_alive(parent_pid, first_ppid):
        time.sleep(_WORKER_POLL_S)
    signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)  # interrupts its blocking read
    time.sleep(5.0)  # the main thread is stuck in C code that ignores signals
    os._exit(1)


def _get(q, stopped, is_process):
    if is_process:  # blocking: the parent sends a stop or terminates us, the watchdog covers its death
        return q.get()
    while True:
        try:
            item = q.get(timeout=_WORKER_POLL_S)
        except queue.Empty:
            if stopped():
                return _STOP
            continue
        return item


def _put(q, msg, stopped) -> bool:
    while True:
        try:
            q.put(msg, timeout=_WORKER_POLL_S)
            return True
        except queue.Full:
            if stopped():
                return False


def _report(result_q, is_process, stage_idx, worker_no, step_name, exc, index, phase):
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        message = str(exc)
    except Exception:
        message = "<unprintable exception>"
    cause = exc
    if is_process:
        try:
            cause = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
            pickle.loads(cause)
        except Exception:
            cause = None
    record = (_ERROR, index, stage_idx, worker_no, os.getpid() if is_process else None, step_name,
              type(exc).__qualname__, message, tb, cause, phase)
    try:
        result_q.put(result_parts(record) if is_process else record)
    except Exception:  # the parent is gone or aborting: nobody is left to tell
        pass


__all__ = ["StreamingWorkerError", "StreamingTimeoutError", "StreamingSetupError", "make_payload", "read_result",
           "result_parts", "worker_main"]
