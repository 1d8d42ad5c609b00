"""Replace a dump folder all at once, so that an interrupted save loses nothing.

A save writes into a fresh hidden sibling ``.<name>.tmp-<random>/<name>``; only when it
is complete does it take the place of the old folder, in one ``renameat2(RENAME_EXCHANGE)``
(Linux): the new dump and the old one trade names atomically, and the old one, now in
the temporary folder, is deleted (or, for a step's save, kept pruned as the next save's
staged tree: :mod:`stepline.saving.spare`). There is no moment without a complete dump under
``final_path``: a process killed before the exchange leaves the old dump and a ``.tmp-``
leftover, one killed after it the new dump and a ``.tmp-`` leftover; the next save cleans
either. Where the exchange is not available, the old folder steps aside first
(``.<name>.old-<random>``); a load that finds the name missing renames it back.

A save never deletes what it did not write: a ``final_path`` that is a file, a link or a
folder without a manifest is refused (:class:`SaveError`).

A save that changes only part of a dump writes an overlay of what changed and commits it
through a journal (:mod:`stepline.saving.journal`), so it is atomic too and costs what
changed, not the size of the dump. Saves to one destination
take turns on a lock file ``.<name>.lock`` beside it, loads share it, and a turnstile
``.<name>.turn`` lets a waiting save go before new loads (POSIX ``flock``; on systems
without it, concurrent saves to one destination are not supported).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import secrets
import stat
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path

from . import journal, spare
from .errors import CorruptFileError, InterruptedSaveWarning, NotADumpError, SaveError, StepLoadError
from .manifest import MANIFEST_NAME
from .removal import (being_removed, remove_in_background, remove_now,  # noqa: F401
                      wait_for_cleanup, wait_for_work_in)  # (wait_for_cleanup: re-exported)
from .safe_open import kind_of, open_regular

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger(__name__)


def _sibling(final: Path, kind: str) -> Path:
    return final.parent / f".{final.name}.{kind}-{secrets.token_hex(4)}"


def _leftovers(parent: Path, name: str, kind: str) -> list[Path]:
    prefix = f".{name}.{kind}-"
    try:
        return [p for p in parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return []


@contextmanager
def atomic_folder(final_path, overlay: bool = False, only_over_dumps: bool = False, listed: dict | None = None,
                  layout: dict | None = None, reuse: bool = False):
    """Yield a fresh temporary folder; on success it replaces ``final_path`` at once.

    With ``overlay`` (and a dump at ``final_path``), the folder is an overlay holding only
    what changed, committed onto the dump through a journal (:mod:`stepline.saving.journal`);
    otherwise it is the whole new dump, exchanged with the previous one in one step. On an
    exception the temporary folder is removed and ``final_path`` is left as it was. A
    committed journal and the leftovers of earlier interrupted saves are dealt with first;
    saves to one ``final_path`` take turns. With ``only_over_dumps``, a ``final_path`` that
    is not a stepline dump is refused (:func:`refuse_foreign`) rather than replaced.
    ``listed`` (filled while the folder is written): what the manifests written there list,
    ``{folder: (file names, child names)}``, so that a commit need not read them back.
    ``layout`` (filled likewise): the files of each folder written, ``{folder relative to
    the yielded one: names}``: the previous dump is deleted expecting the same.
    ``reuse`` (a whole new dump only): the folder yielded may be the spare tree of this
    destination, folders and manifests of an earlier dump (:mod:`stepline.saving.spare`),
    which the caller rebuilds in place; the dump replaced becomes the next spare.
    """
    final = Path(final_path)
    _make_parent(final)
    with destination_lock(final):
        try:
            journal.recover(final)
        except StepLoadError as e:  # a journal that is no journal: name it, as a save's error
            raise SaveError(str(e)) from e
        clean_leftovers(final.parent, final.name)
        if only_over_dumps:
            refuse_foreign(final)
        overlay = overlay and final.is_dir()
        freeing = ExitStack()  # (the replaced dump's data: its page cache freed as this save's writes need pages)
        if overlay:
            spare.release_data(final)
        else:
            freeing.enter_context(spare.data_freed_as_written(final))
        with freeing:
            container = _sibling(final, "tmp")
            reuse = reuse and not overlay
            if reuse:  # (this process's background thread may be making the spare right now)
                wait_for_work_in(final.parent, f".{final.name}.tmp-")
            taken = reuse and spare.take(final, container)
            if not taken:
                container.mkdir()
            tmp = container / final.name
            try:
                if not taken:
                    tmp.mkdir()
                yield tmp
                if overlay:
                    exchanged, previous = False, journal.commit(tmp, final, listed)
                else:
                    exchanged, previous = _swap_into_place(tmp, final)
            except BaseException:
                remove_now(container)
                raise
            if exchanged and reuse:  # the container holds the previous dump: the next spare
                spare.keep(container, final, layout or None)
                return
            if exchanged:
                remove_in_background(container, expected=(layout, final.name) if layout else None)
                return
            try:  # empty when nothing was replaced (a first save): gone before save returns
                os.rmdir(container)
            except OSError:
                remove_in_background(container)
            if previous:
                remove_in_background(previous)


def is_overlay_for(final_path) -> bool:
    """Whether a changes-only save to ``final_path`` writes an overlay (a dump is there)."""
    return os.path.isdir(final_path) and not os.path.islink(final_path)


def _make_parent(final: Path) -> None:
    """Create the folder ``final`` goes in, or raise :class:`SaveError` saying what is in the way."""
    if os.path.isdir(final.parent):  # (there already, at every save but the first)
        return
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        blocking = next((p for p in (final.parent, *final.parent.parents) if p.exists() and not p.is_dir()),
                        final.parent)
        raise SaveError(f"{blocking}: a file, not a folder: cannot save {final} there") from e
    except OSError as e:
        raise SaveError(f"{e.filename or final.parent}: cannot create the folder to save {final} in "
                        f"({e.strerror or e})") from e


@contextmanager
def destination_lock(final: Path):
    """Hold the lock on saving to ``final``: ``.<name>.lock`` beside it, never removed.

    A save first takes the turnstile ``.<name>.turn`` so that loads arriving meanwhile
    queue behind it instead of passing it over for ever (``flock`` has no writer priority).
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    waiting = f"waiting for another save or load of {final} to finish"
    with ExitStack() as held:
        lock = held.enter_context(_open_for_saving(_lock_path(final), final))
        turn = held.enter_context(_open_for_saving(_turn_path(final), final))
        with _flocked(turn, fcntl.LOCK_EX, waiting):
            held.enter_context(_flocked(lock, fcntl.LOCK_EX, waiting))
        yield


@contextmanager
def reading_lock(final: Path):
    """While loading from ``final``, keep saves to it from swapping folders underneath.

    Takes the lock shared, so loads run side by side, after passing the turnstile (a
    waiting save goes first). Creates the lock files of a dump that has none (one copied
    without them still takes turns with saves); does nothing where they cannot be opened
    or made (a read-only dump, which no save can change either). A lock file that is a
    FIFO, a folder or a link is a :class:`CorruptFileError`.
    """
    if os.path.lexists(journal.journal_path(final)):
        _recover_for_loading(final)
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    waiting = f"waiting for a save to {final} to finish"
    with ExitStack() as held:
        try:
            lock = held.enter_context(_open_for_loading(_lock_path(final), final))
            turn = held.enter_context(_open_for_loading(_turn_path(final), final))
        except OSError as e:
            log.debug("cannot open the lock files of %s (%s): this load does not take turns", final, e)
            lock = turn = None
        if lock is not None:
            with _flocked(turn, fcntl.LOCK_SH, waiting):
                held.enter_context(_flocked(lock, fcntl.LOCK_SH, waiting))
        yield


def _open_for_saving(path: Path, final: Path):
    """Open (create) a lock file of ``final`` for a save, or raise :class:`SaveError`."""
    try:
        return open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, SaveError, "lock file")
    except OSError as e:
        raise SaveError(f"{path}: cannot open the lock file that saves to {final} take turns on "
                        f"({e.strerror or e}): saving there needs write access to it") from e


def _open_for_loading(path: Path, final: Path):
    """Open a lock file of ``final`` for a load, creating it when the dump has none."""
    try:
        return open_regular(path, os.O_RDONLY, CorruptFileError, "lock file")
    except FileNotFoundError:
        if not final.is_dir():
            raise  # no dump there: leave no lock file behind
        return open_regular(path, os.O_RDONLY | os.O_CREAT, CorruptFileError, "lock file")


def check_lock_files(final: Path) -> None:
    """Raise :class:`CorruptFileError` if a lock file or the journal of ``final`` is there but
    is not a regular file."""
    for path in (_lock_path(final), _turn_path(final), journal.journal_path(final)):
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            continue
        if not stat.S_ISREG(mode):
            raise CorruptFileError(f"{path}: is {kind_of(mode)}, not a regular file: this is not the lock "
                                   f"file or journal stepline writes here; remove it")


def _recover_for_loading(final: Path) -> None:
    """Apply the journal of a save killed after its commit, before a load reads the dump."""
    try:
        with destination_lock(final):
            if journal.recover(final):
                warnings.warn(f"{final}: finished applying a save that was interrupted after its commit",
                              InterruptedSaveWarning, stacklevel=4)
    except (OSError, SaveError) as e:
        raise NotADumpError(f"{final}: a save was interrupted after its commit and its journal cannot be "
                            f"applied here ({e.strerror or e}): load it where the dump is writable") from e


def _lock_path(final: Path) -> Path:
    return final.parent / f".{final.name}.lock"


def _turn_path(final: Path) -> Path:
    return final.parent / f".{final.name}.turn"


@contextmanager
def _flocked(lock, mode: int, waiting: str):
    """Hold ``flock(mode)`` on the open file ``lock``; where the file system has no
    ``flock`` (some network and FUSE mounts), go on without it."""
    try:
        fcntl.flock(lock.fileno(), mode | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info(waiting)
        fcntl.flock(lock.fileno(), mode)
    except OSError as e:
        log.debug("no flock on %s (%s): saves and loads there do not take turns", lock.name, e)
        yield
        return
    try:
        yield
    finally:
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def refuse_foreign(final: Path) -> None:
    """Raise :class:`SaveError` unless ``final`` is absent, an empty folder or a stepline dump."""
    try:
        mode = os.lstat(final).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise SaveError(f"{final}: is a symbolic link, not a stepline dump: refusing to replace it")
    if not stat.S_ISDIR(mode):
        raise SaveError(f"{final}: is a file, not a stepline dump: refusing to replace it "
                        f"(move it away or save the step under another name)")
    if os.path.isfile(final / MANIFEST_NAME):
        return
    held = sorted(entry.name for entry in os.scandir(final))
    if held:
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise SaveError(f"{final}: is a folder that is not a stepline dump (no {MANIFEST_NAME}; it holds "
                        f"{shown}): refusing to delete it (move it away or save under another name)")


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _load_renameat2():
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return function


_renameat2 = _load_renameat2()


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap the names of ``a`` and ``b`` in one atomic step; ``False`` where the system cannot."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(b))


def _swap_into_place(tmp: Path, final: Path) -> tuple[bool, Path | None]:
    """Give ``tmp`` the name ``final`` in one step. Returns whether the two were exchanged
    (then ``tmp``'s container holds the previous ``final``) and where the previous
    ``final`` went otherwise, if there was one."""
    there = os.path.lexists(final)
    if there and exchange_paths(tmp, final):
        return True, None  # the previous dump is now at tmp
    old = None
    if there:
        old = _sibling(final, "old")
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        if old is not None:
            os.rename(old, final)
        raise
    return False, old


def clean_leftovers(parent, name: str) -> list[Path]:
    """Remove ``.<name>.tmp-*`` folders and journal temporaries, and ``.<name>.old-*``
    folders when ``name`` exists (call :func:`journal.recover` first). Those the background
    thread is deleting already (the previous dump of a save that just returned) are left
    to it rather than deleted twice over, on the save's path."""
    parent = Path(parent)
    try:
        names = os.listdir(parent)  # (once, for every kind of leftover)
    except OSError:
        names = []
    kinds = ("tmp", "journal.tmp", "old") if os.path.lexists(parent / name) else ("tmp", "journal.tmp")
    prefixes = tuple(f".{name}.{kind}-" for kind in kinds)
    stale = [parent / n for n in names if n.startswith(prefixes)]
    stale = [path for path in stale if not being_removed(path)]
    for path in stale:
        remove_now(path)
    return stale


def resolve_dump_folder(path) -> Path:
    """``path``; if it is missing after a save died between the two renames of the fallback
    swap, the complete previous dump left at ``.<name>.old-*`` is renamed back first (with
    an :class:`InterruptedSaveWarning`).
    """
    path = Path(path)
    if os.path.lexists(path):
        return path
    complete = [p for p in _leftovers(path.parent, path.name, "old") if (p / MANIFEST_NAME).is_file()]
    if not complete:
        return path
    found = max(complete, key=lambda p: p.stat().st_mtime_ns)
    try:
        os.rename(found, path)
    except FileNotFoundError:  # another load put it back first
        pass
    except OSError as e:
        raise NotADumpError(f"{path}: missing; an interrupted save left the previous dump at {found}, "
                            f"which cannot be renamed back ({e.strerror or e})") from e
    warnings.warn(f"{path} was missing; restored the previous dump {found.name} that an interrupted "
                  f"save left behind", InterruptedSaveWarning, stacklevel=2)
    return path
