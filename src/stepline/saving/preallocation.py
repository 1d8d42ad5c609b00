"""Reserving the disk blocks of a big new file before writing it, as ``np.save`` does.

``fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, size)`` (Linux, through ctypes) lets the file
system allocate the blocks in one go instead of page by page as the write proceeds, which
halves the CPU of writing a big buffer on ext4, and makes a full disk an ``ENOSPC`` before
any byte is written. A file system (or a system) that cannot preallocate is simply written
to. Used by every writer of big dump files: the buffers of :mod:`~stepline.saving.objectfile`
and the safetensors weights of :mod:`stepline.torch.tensorfile`.

Each reservation raises the audit event ``stepline.preallocate`` with ``(fd, size)``.
"""
from __future__ import annotations

import ctypes
import errno
import os
import sys

#: Files from this size on are preallocated.
PREALLOCATE_MIN_BYTES = 1 << 20
_FALLOC_FL_KEEP_SIZE = 1


def _load_fallocate():
    try:
        function = ctypes.CDLL(None, use_errno=True).fallocate
    except (AttributeError, OSError):  # not Linux
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return function


_fallocate = _load_fallocate()


def preallocate(fd: int, size: int) -> None:
    """Reserve ``size`` bytes of disk for the new file ``fd`` before writing it (its size
    stays 0). Raises ``OSError(ENOSPC)`` if the disk is full; any other failure (a file
    system that cannot preallocate) is ignored."""
    sys.audit("stepline.preallocate", fd, size)
    if _fallocate is None or _fallocate(fd, _FALLOC_FL_KEEP_SIZE, 0, size) == 0:
        return
    code = ctypes.get_errno()
    if code == errno.ENOSPC:
        raise OSError(code, os.strerror(code))


def preallocate_big(fd: int, size: int) -> None:
    """:func:`preallocate` a file of ``size`` bytes if it is big enough to gain from it."""
    if size >= PREALLOCATE_MIN_BYTES:
        preallocate(fd, size)
