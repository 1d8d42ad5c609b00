"""Manifests of a big save created on a second thread while the saving thread goes on.

A full save of many tiny steps alternates Python (pickling, JSON, BLAKE3, base64) with
system calls that release the GIL. The saving thread keeps what orders the save — each
step's folder, created before anything writes into it, in tree order — and hands each
finished manifest, ``(folder, bytes)``, to one writer thread that creates, writes and
``fstat``s the file while the saving thread builds the next one. Nothing the saving thread
does later reads a manifest it handed over: the parent's manifest needs only the children's
digests, computed from the bytes in memory, and the ``os.stat`` the next changes-only save
compares is collected from the writer at the end.

The saving thread's own ``mkdir`` of the next folder is the moment it lets go of the GIL;
that is when the writer, back from its last system call, takes it: a saving thread that
never made a system call would leave the writer waiting for the interpreter's switch
interval (5 ms) at each of its own. Below :data:`MIN_STEPS` steps the save writes its manifests itself.

One daemon thread serves every save of the process (started on first use, never per
save); a save's manifests are a :class:`Batch` of its jobs, in order. A failed write stops
the batch: :meth:`Batch.finish` raises it on the saving thread, which then removes the
staged folder as for any failed save. :meth:`Batch.close` (always called, also on an
error) returns only when the writer has nothing of the batch left in hand, so nothing is
written into a staged folder being removed.
"""
from __future__ import annotations

import atexit
import os
import queue
import threading

from .errors import SaveError
from .manifest import MANIFEST_NAME, create_manifest

#: From how many steps a full save hands its manifests to the writer thread; ``None``: never.
#: Measured on this project's 2-core VM on a quiet machine (docs/saving.md, "Speed"): on
#: tmpfs a wash for 1000 steps (91 / 92 ms without, 94 / 88 with); on ext4 in its slow
#: phases, where each ``mkdir``/``open`` waits in the kernel, 1.3–2.7× faster (425 → 179,
#: 729 → 551, 1490 → 427, 1980 → 731 ms): the saving thread goes on while the writer waits.
#: Small saves never start it (a 10-step save would pay the hand-over and gain nothing).
MIN_STEPS: int | None = 200

_jobs: queue.SimpleQueue | None = None
_thread: threading.Thread | None = None
_start_lock = threading.Lock()


class Batch:
    """The manifests one save hands to the writer thread, written in the order given."""

    __slots__ = ("stats", "error", "stopped", "_jobs")

    def __init__(self):
        self.stats: dict = {}  # folder -> os.stat of the manifest written there
        self.error: SaveError | None = None  # the first write that failed (later ones are skipped)
        self.stopped = False
        self._jobs = _started()

    def write(self, folder: str, raw: bytes) -> None:
        """Have ``folder/stepline.json`` created holding ``raw`` (raises an earlier failure)."""
        if self.error is not None:
            raise self.error
        self._jobs.put((self, folder, raw))

    def finish(self) -> dict:
        """Wait for every manifest handed over; ``{folder: os.stat}`` of each, or the
        :class:`SaveError` of the first that failed."""
        self._wait()
        if self.error is not None:
            raise self.error
        return self.stats

    def close(self) -> None:
        """Skip what is not written yet and return once the writer holds nothing of the batch."""
        if not self.stopped:
            self.stopped = True
            self._wait()

    def _wait(self) -> None:
        done = threading.Event()
        self._jobs.put((self, None, done))
        done.wait()


def creation_error(folder: str, error: OSError) -> SaveError:
    """The :class:`SaveError` of a manifest that could not be created in ``folder``."""
    where = error.filename or os.path.join(folder, MANIFEST_NAME)
    return SaveError(f"{where}: cannot write the manifest of the step saved there ({error.strerror or error})")


def _serve(jobs: queue.SimpleQueue) -> None:
    while True:
        job = jobs.get()
        if job is None:
            return
        batch, folder, raw = job
        if folder is None:  # a barrier: everything before it is done
            raw.set()
        elif batch.error is None and not batch.stopped:
            try:
                batch.stats[folder] = create_manifest(folder, raw)
            except OSError as e:
                batch.error = creation_error(folder, e)
                batch.error.__cause__ = e
            except BaseException as e:  # (not an OSError: still the save's error, not this thread's)
                batch.error = SaveError(f"{os.path.join(folder, MANIFEST_NAME)}: cannot write the manifest "
                                        f"({type(e).__name__}: {e})")
                batch.error.__cause__ = e


def _started() -> queue.SimpleQueue:
    """The writer's job queue, its thread started on first use."""
    global _jobs, _thread
    with _start_lock:
        if _thread is None or not _thread.is_alive():
            _jobs = queue.SimpleQueue()
            _thread = threading.Thread(target=_serve, args=(_jobs,), name="stepline-manifest-writer", daemon=True)
            _thread.start()
        return _jobs


def _stop() -> None:
    """At exit: let the (idle) writer thread end."""
    with _start_lock:
        if _thread is not None and _thread.is_alive():
            _jobs.put(None)
            _thread.join(timeout=5)


def _forget_after_fork() -> None:
    global _jobs, _thread, _start_lock
    _jobs = _thread = None  # the child has no such thread: it starts its own if it needs one
    _start_lock = threading.Lock()  # (another thread may have held it at the fork)


atexit.register(_stop)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
