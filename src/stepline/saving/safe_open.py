"""Opening the files of a dump (manifests, stat caches, lock files) without ever blocking.

A FIFO put where a regular file belongs would make a plain ``open`` wait for ever for a
writer (or a reader); a folder or a symbolic link there is no file stepline wrote. Files
are therefore opened with ``O_NONBLOCK | O_NOFOLLOW`` and checked with ``fstat`` on the
open descriptor (no race between the check and the use), and anything but a regular file
is refused with an error naming the path and what is there instead.

Small files written whole (a journal, a signature, a stat cache, the keys and the trust
store) are created with ``O_EXCL`` (:func:`create_new`), or written beside their place and
renamed over it (:func:`replace_with`) or linked to it if it is still free (:func:`publish_new`),
each with the permissions it must have from its first moment (``mode``).
"""
from __future__ import annotations

import errno
import os
import secrets
import stat

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISLNK, "a symbolic link"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
#: errno values by which ``open`` says "this is not a regular file you may open like that".
_NOT_A_FILE = {errno.ENXIO, errno.EISDIR, errno.ELOOP, errno.ENODEV, errno.EOPNOTSUPP}


def kind_of(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words (``"a FIFO (named pipe)"``, ``"a folder"``…)."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path, flags: int = os.O_RDONLY, error=OSError, what: str = "file"):
    """Open ``path`` (``os.open`` flags) as a binary file object, refusing anything but a
    regular file with ``error(message)``; never blocks and never follows a final symlink.

    Other failures (missing file, permission denied, read-only file system) are raised as
    the ``OSError`` they are, for the caller to word.
    """
    path = os.fspath(path)
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as e:
        if e.errno not in _NOT_A_FILE:
            raise
        raise error(f"{path}: is {_lstat_kind(path)}, not a regular file: this is not the {what} "
                    f"stepline writes here; remove it") from e
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise error(f"{path}: is {kind_of(mode)}, not a regular file: this is not the {what} "
                    f"stepline writes here; remove it")
    writable = flags & (os.O_WRONLY | os.O_RDWR)
    return os.fdopen(fd, ("ab" if flags & os.O_APPEND else "r+b") if writable else "rb", buffering=0)


def open_checked(path, checked: os.stat_result, flags: int = os.O_RDONLY, error=OSError,
                 what: str = "file"):
    """:func:`open_regular`, then ``error`` unless the file opened is the one ``checked``
    (an ``os.stat`` taken when it was verified) describes: same inode, size, mtime and ctime.
    A file replaced, or written to, since it was verified is refused: what is verified is
    what is used."""
    f = open_regular(path, flags, error, what)
    try:
        check_unchanged(f, checked, path, error)
    except BaseException:
        f.close()
        raise
    return f


def check_unchanged(f, checked: os.stat_result, path, error=OSError) -> None:
    """``error`` unless the open file ``f`` is still the file ``checked`` describes (see
    :func:`open_checked`); also after reading it, to catch a write while it was read."""
    now = os.fstat(f.fileno())
    if _identity(now) != _identity(checked):
        how = "replaced" if (now.st_dev, now.st_ino) != (checked.st_dev, checked.st_ino) else "written to"
        raise error(f"{path}: {how} after it was verified (inode, size, mtime or ctime changed): what "
                    f"was verified is not what would be loaded; load again")


def _identity(st: os.stat_result) -> tuple:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def read_regular(path, error=OSError, what: str = "file", limit: int | None = None) -> bytes:
    """The bytes of the regular file ``path`` (see :func:`open_regular`), at most ``limit``
    (``error`` if it is bigger)."""
    with open_regular(path, os.O_RDONLY, error, what) as f:
        size = os.fstat(f.fileno()).st_size
        if limit is not None and size > limit:
            raise error(f"{path}: {size} bytes, more than any {what} stepline writes ({limit}): "
                        f"this is not the {what} stepline wrote")
        return f.read()


def create_new(path, data: bytes, mode: int = 0o666) -> None:
    """Create the file ``path``, which must not exist yet, holding ``data``; ``mode`` (less the
    umask) is its permissions from the moment it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def replace_with(path, data: bytes, mode: int = 0o666) -> None:
    """Put ``data`` at ``path`` atomically: written to a new hidden file beside it
    (``.<name>.tmp-<random>``, created with ``mode``), renamed over it (a reader sees the old
    file or the new one, whole); the new file is removed on any failure."""
    tmp = _temporary_beside(path)
    try:
        create_new(tmp, data, mode)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def publish_new(path, data: bytes, mode: int = 0o666) -> bool:
    """Put ``data`` at ``path`` whole, only if nothing is there yet: written to a hidden file
    beside it (created with ``mode``), then hard-linked to ``path``. Returns ``False``, leaving
    what is there, when another writer got there first."""
    tmp = _temporary_beside(path)
    try:
        create_new(tmp, data, mode)
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        _remove(tmp)


def _temporary_beside(path) -> str:
    folder, name = os.path.split(os.fspath(path))
    hidden = name if name.startswith(".") else f".{name}"  # (what a listing of the dump skips)
    return os.path.join(folder, f"{hidden}.tmp-{secrets.token_hex(4)}")


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _lstat_kind(path: str) -> str:
    try:
        return kind_of(os.lstat(path).st_mode)
    except OSError:
        return "not a regular file"
