"""The channels between a streaming step's parent and its workers, and the busy board.

- :class:`_ProcessQueue`: the bounded queues between stages (a ``multiprocessing``
  queue whose feeder gives up quietly once its readers are gone);
- :class:`_ResultPipe`: the result channel (many writers, the parent reads), length-framed
  and read without ever blocking inside a message, so a worker killed halfway through
  one cannot hang the parent;
- :class:`BusyBoard`: which minibatch each worker's step is on since when (shared
  memory), for timeouts and for naming the minibatch a dead worker was on.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import os
import queue
import select
import struct
import time


# ------------------------------------------------------------------ busy board
class BusyBoard:
    """What each worker is doing, and since when: one slot per worker, written by the worker.

    A slot holds the minibatch index (``SETUP`` while the step is set up, ``IDLE``
    between minibatches) and the ``time.monotonic()`` at which the step started on it
    (0 once the step returned and its output is handed on). Shared memory between
    processes (the monotonic clock is the same in every process), a list with threads.
    The parent reads it to time steps out and to name the minibatch a dead worker was on.
    """

    SETUP, IDLE = -1.0, -2.0

    def __init__(self, n_slots: int, ctx=None):
        size = 2 * n_slots
        self._cells = ctx.RawArray("d", size) if ctx is not None else [0.0] * size
        for slot in range(n_slots):
            self.clear(slot)

    def begin(self, slot: int, index: float) -> None:
        self._cells[2 * slot] = index
        self._cells[2 * slot + 1] = time.monotonic()

    def handing_on(self, slot: int) -> None:
        self._cells[2 * slot + 1] = 0.0

    def clear(self, slot: int) -> None:
        self._cells[2 * slot + 1] = 0.0
        self._cells[2 * slot] = self.IDLE

    def read(self, slot: int) -> tuple:
        """``(minibatch index or None, seconds the step has been on it or None)``."""
        started = self._cells[2 * slot + 1]
        index = self._cells[2 * slot]
        busy_s = time.monotonic() - started if started else None
        if index == self.SETUP:
            return None, busy_s
        return (None if index == self.IDLE else int(index)), busy_s


# ----------------------------------------------------------------------- queues
class _ProcessQueue(multiprocessing.queues.Queue):
    """A process queue whose feeder thread gives up quietly once its readers are gone.

    Messages are pickled before they are put, so the feeder can only fail on a
    broken pipe, i.e. after an abort killed the readers; the default hook would
    print a traceback for each such message.
    """

    def __init__(self, maxsize=0, *, ctx):
        super().__init__(maxsize, ctx=ctx)
        self._ignore_epipe = True

    @staticmethod
    def _on_queue_feeder_error(e, obj):  # noqa: ARG004 - see the class docstring
        return None


class _ResultPipe:
    """Many writers (the workers), one reader (the parent): the result channel between processes.

    Each message is an 8-byte length and the bytes. Writes are synchronous (no feeder
    thread, no second pickling pass: the messages are bytes already), one message at a
    time under a lock. The parent never blocks inside a message: it reads what the pipe
    holds when ``poll`` says there is something, keeps a partial message between calls,
    and gives up at the timeout, so it sees a worker that died halfway through a message
    (the pipe never reaches EOF: the parent and the other workers hold write ends).
    Each worker closes its copy of the read end, so a worker whose parent died gets a
    broken pipe instead of blocking on a full one.
    """

    _CHUNK = 1 << 16       # a pipe's capacity: what one read can get
    _DIRECT = 1 << 20      # bodies this large are read straight into their own buffer

    def __init__(self, ctx):
        self._reader, self._writer = multiprocessing.Pipe(duplex=False)
        self._wlock = ctx.Lock()
        self._reset_reader()

    def _reset_reader(self) -> None:
        self._poller = None
        self._buffer = bytearray()   # bytes read that do not make a whole message yet
        self._body = None            # a large message being read: its buffer and how much is in
        self._filled = 0

    def __getstate__(self):
        multiprocessing.context.assert_spawning(self)
        return self._reader, self._writer, self._wlock

    def __setstate__(self, state):
        self._reader, self._writer, self._wlock = state
        self._reset_reader()

    def put(self, blob, timeout=None) -> None:
        """Send one message: ``bytes``, or a tuple of ``bytes`` parts sent as one (not joined)."""
        parts = blob if isinstance(blob, tuple) else (blob,)
        header = _LENGTH.pack(sum(len(part) for part in parts))
        with self._wlock:
            fd = self._writer.fileno()
            if all(len(part) < self._CHUNK for part in parts):
                _write_all(fd, b"".join((header, *parts)))
            else:  # no copy of a large part to prepend 8 bytes
                _write_all(fd, header)
                for part in parts:
                    _write_all(fd, part)

    def get(self, timeout: float) -> bytes:
        """The next whole message; ``queue.Empty`` when none is complete by ``timeout``."""
        message = self._take()
        if message is not None:
            return message
        if self._poller is None:  # one poll object for the reader's life (not one selector per call)
            self._poller = select.poll()
            self._poller.register(self._reader.fileno(), select.POLLIN)
        deadline = time.monotonic() + timeout
        while True:
            if not self._poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
                raise queue.Empty
            self._read_some()
            message = self._take()
            if message is not None:
                return message
            if time.monotonic() >= deadline:
                raise queue.Empty

    def _read_some(self) -> None:
        fd = self._reader.fileno()
        if self._body is not None:
            n = os.readv(fd, [memoryview(self._body)[self._filled:]])
        else:
            chunk = os.read(fd, self._CHUNK)
            n = len(chunk)
            self._buffer += chunk
        if n == 0:
            raise EOFError("every worker closed the result pipe")
        if self._body is not None:
            self._filled += n

    def _take(self):
        """A whole message out of what was read, or ``None``."""
        if self._body is not None:
            if self._filled < len(self._body):
                return None
            body, self._body = self._body, None
            return body
        buffer = self._buffer
        if len(buffer) < _LENGTH.size:
            return None
        (size,) = _LENGTH.unpack_from(buffer)
        end = _LENGTH.size + size
        if len(buffer) >= end:
            message = bytes(buffer[_LENGTH.size:end])
            del buffer[:end]
            return message
        if size >= self._DIRECT:  # the rest goes straight into the message's own buffer
            self._body = bytearray(size)
            have = len(buffer) - _LENGTH.size
            self._body[:have] = buffer[_LENGTH.size:]
            self._filled = have
            buffer.clear()
        return None

    def close_reader(self) -> None:
        self._reader.close()

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


_LENGTH = struct.Struct("!Q")


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def close_process_queues(queues, grace: float = 0.3) -> None:
    """Close our ends of process queues (and result pipes) once their readers are gone.

    A queue's feeder thread closes both ends itself when it reaches the close
    sentinel; one stuck writing to a full pipe whose readers were killed is freed by
    closing our read end (it then gets EPIPE, which it ignores). Waits at most about
    ``2 * grace`` in all, and never on a stuck thread.
    """
    feeders = []
    for q in queues:
        for method in ("cancel_join_thread", "close"):
            try:
                getattr(q, method)()
            except Exception:  # best effort on a queue being torn down
                pass
        thread = getattr(q, "_thread", None)
        if thread is not None:
            feeders.append((q, thread))
    deadline = time.monotonic() + grace
    for _, thread in feeders:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [(q, t) for q, t in feeders if t.is_alive()]
    for q, _ in stuck:
        _close_quietly(q._reader)
    deadline = time.monotonic() + grace
    for q, thread in stuck:
        thread.join(max(0.0, deadline - time.monotonic()))
        _close_quietly(q._writer)


def _close_quietly(connection) -> None:
    try:
        connection.close()
    except Exception:
        pass


__all__ = ["BusyBoard", "close_process_queues"]
