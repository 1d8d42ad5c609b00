"""A server worker on one CPU of its own (``stepline serve --pin-cpus``).

A worker's event loop and prediction thread take turns at the GIL; on two CPUs each turn
wakes the other CPU (and a thread waiting for the GIL is woken each time the loop lets it
go), on one CPU the turn is a plain switch. Measured with one-row requests: 265 µs of
server CPU a request with both threads on one CPU, 305 µs with the loop and the thread on
two (docs/serving.md, Measured). Each worker claims the first CPU of those it may run on
that no other pinned worker on the machine holds — an exclusive ``flock`` on a file per
CPU in the temporary folder, held for the process's life and released by the kernel when
it ends — so ``--workers N`` spreads over N CPUs and several pinned servers do not pile up.
Linux only (``sched_setaffinity``).
"""
from __future__ import annotations

import fcntl
import logging
import os
import tempfile

logger = logging.getLogger("stepline.serving")
_held: list = []  # the lock files of the CPUs this process claimed, open for its life


def claim_cpu(lock_dir: str | None = None) -> int:
    """Pin every thread of this process, and those it starts later, to one unclaimed CPU; return it."""
    allowed = sorted(os.sched_getaffinity(0))
    lock_dir = lock_dir or os.environ.get("STEPLINE_CPU_LOCKS") or tempfile.gettempdir()
    cpu = next((c for c in allowed if _lock(os.path.join(lock_dir, f"stepline-serve-cpu{c}.lock"))), None)
    if cpu is None:
        cpu = allowed[os.getpid() % len(allowed)]
        logger.warning("every CPU this worker may use (%s) has a pinned worker already; sharing CPU %d",
                       ",".join(map(str, allowed)), cpu)
    for thread in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(thread), {cpu})
        except OSError:  # a thread that has just ended
            pass
    logger.info("worker %d pinned to CPU %d", os.getpid(), cpu)
    return cpu


def _lock(path: str) -> bool:
    try:
        handle = open(path, "a")
    except OSError:  # another user's file, or no such folder: not ours to take
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return False
    _held.append(handle)
    return True
