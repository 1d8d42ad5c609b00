"""Freeing the replaced dump's kept data just before a full save writes as much.

The data a full save frees (:func:`stepline.saving.spare.release_data`) is freed file by
file as the save writes, each big write preceded by frees of at least its size, instead of
all of it before the first write: the pages freed are taken at once by that write, and each
free overlaps the hashing of the file being written on the other core. (Freed all at once
first, 1 GiB took 60-80 ms with the other core idle; just in time, a 1 GiB full dump took
1.00-1.03× ``np.save`` against 1.18-1.22×.) What is left when the save ends, or a file the
disk started writing back meanwhile (deleting it would wait for the disk), is handed back
to the caller (the background thread deletes it), but for what is left in small files,
freed when the block ends: the next save, finding the background thread still at them,
would leave all its own freeing to it.

A writer calls :func:`make_room` before writing a big file; a save installs the data with
:func:`freeing_as_it_writes`. The pending data belongs to the save's context (a
``ContextVar``): a writer thread runs in a copy of it (:func:`in_this_context`).
"""
from __future__ import annotations

import contextvars
import threading
from contextlib import contextmanager

from . import pagecache
from .removal import remove_in

_PENDING: contextvars.ContextVar["_Reclaim | None"] = contextvars.ContextVar("stepline_reclaim", default=None)


class _Reclaim:
    """Entries of an open folder to delete, biggest first, as writes need room."""

    def __init__(self, folder_fd: int, sized: list[tuple[str, int]]):
        self.folder_fd = folder_fd
        self.todo = sorted(sized, key=lambda entry: entry[1])  # (popped from the end: biggest first)
        self.later: list[str] = []
        self.lock = threading.Lock()

    def free(self, nbytes: int) -> None:
        freed = 0
        while freed < nbytes:
            with self.lock:
                if not self.todo:
                    return
                name, size = self.todo.pop()
            if pagecache.freed_without_waiting(self.folder_fd, name):
                remove_in(self.folder_fd, name)
                freed += size
            else:  # (being written back since: deleting it now would wait for the disk)
                with self.lock:
                    self.later.append(name)

    def rest_bytes(self) -> int:
        with self.lock:
            return sum(size for _, size in self.todo)

    def left(self) -> list[str]:
        with self.lock:
            left, self.todo, self.later = self.later + [name for name, _ in self.todo], [], []
        return left


@contextmanager
def freeing_as_it_writes(folder_fd: int, sized: list[tuple[str, int]], free_rest_below: int = 0):
    """While in the block, writers of this context free ``sized`` (``(name, bytes)`` entries
    of the open folder ``folder_fd``) as they need room; yields a list that, once the block
    is left, holds the names not freed (for the caller to delete elsewhere). What is left
    when the block ends is freed then if it takes less than ``free_rest_below`` bytes."""
    reclaim, left = _Reclaim(folder_fd, sized), []
    token = _PENDING.set(reclaim)
    try:
        yield left
    finally:
        _PENDING.reset(token)
        if reclaim.rest_bytes() < free_rest_below:
            reclaim.free(free_rest_below)
        left.extend(reclaim.left())


def make_room(nbytes: int) -> None:
    """Free at least ``nbytes`` of the data this save frees as it writes (if any is left),
    before writing a file of that size."""
    reclaim = _PENDING.get()
    if reclaim is not None:
        reclaim.free(nbytes)


def in_this_context(function):
    """``function`` to run on another thread in a copy of this thread's context (so that its
    writes :func:`make_room` too)."""
    context = contextvars.copy_context()
    return lambda *args: context.copy().run(function, *args)
