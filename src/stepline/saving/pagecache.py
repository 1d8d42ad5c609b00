"""What the kernel's page cache holds of a file: whether the disk is writing it back now.

Deleting a file whose pages are being written back waits for the disk, page by page; a
file whose pages are only dirty, or clean, is freed at memory speed. Linux 6.5 and later
say which it is (``cachestat(2)``, called through ctypes: Python has no binding); elsewhere
nothing is known, and callers take the careful way.
"""
from __future__ import annotations

import ctypes
import os
import stat
import sys

_SYS_CACHESTAT = 451  # (the same number on every architecture: it came after the unified table)


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in
                ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")]


def _load_syscall():
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).syscall
    except (AttributeError, OSError):
        return None
    function.restype = ctypes.c_long
    return function


_syscall = _load_syscall()


def pages_being_written_back(fd: int) -> int | None:
    """How many pages of the open file ``fd`` the disk is writing back now (None: unknown)."""
    if _syscall is None:
        return None
    stat = _Stat()
    if _syscall(_SYS_CACHESTAT, fd, ctypes.byref(_Range(0, 0)), ctypes.byref(stat), 0) != 0:
        return None  # ENOSYS (an older kernel), or a file it does not cover
    return stat.nr_writeback


def freed_without_waiting(folder_fd: int, name: str) -> bool:
    """Whether the file ``name`` of the open folder ``folder_fd`` can be deleted without
    waiting for the disk: a plain file none of whose pages is being written back (False
    where unknown)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), dir_fd=folder_fd)
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode) and pages_being_written_back(fd) == 0  # (a folder: not known)
    finally:
        os.close(fd)
