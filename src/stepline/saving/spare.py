"""The spare tree: a full save rebuilds the dump inside the folders of the one it replaced last time.

A full save writes a complete new tree and exchanges it with the dump; the dump it
replaced used to be deleted. On file systems that avoid reusing recently freed inodes
(ext4 without a journal skips every inode freed in the last minute, one by one, on each
allocation: ``recently_deleted`` in ``fs/ext4/ialloc.c``), deleting a tree of a thousand
small folders and creating the next one costs far more than writing either. So the
replaced dump is kept as ``.<name>.spare`` beside the dump, pruned to its folders and
manifests — every other file (arrays, pickles, weights, the stat cache, the signature) is
moved out of its tree, so nothing a loaded step may still map is ever written again, and
kept beside it until the next save or load of the destination frees it as that starts
(:func:`release_data`: the pages it frees are those the new files or arrays take) — and the next full
save to that destination takes it as its staged tree: a step folder that is there already
is reused (:func:`reuse_folder` removes what the new step does not have), a manifest that
is there is overwritten in place (:func:`overwrite_manifest`). The same pipeline saved again
allocates no inode at all, as ``joblib.dump`` over its own file does not.

Nothing of the dump's guarantees changes: the spare is only ever the staged tree, the live
dump is replaced by the same atomic exchange, a save killed meanwhile leaves a ``.tmp-``
leftover that the next save removes. A spare is only what stepline wrote (a dump this
destination held), so removing what a reused folder has too many deletes nothing a save did
not write. A reused manifest's mtime always moves forward (:func:`overwrite_manifest`), so
its ``os.stat`` never matches one recorded for an earlier content of the same inode
(:mod:`stepline.saving.destinations` compares inode, size, mtime and ctime).
"""
from __future__ import annotations

import errno
import os
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path

from . import pagecache, reclaim
from .integrity import STAT_CACHE_NAME
from .manifest import MANIFEST_NAME, create_manifest
from .removal import (FOLDER_FLAGS, NOFOLLOW, remove_in, remove_in_background, remove_now, run_in_background,
                      wait_for_work_in, work_pending_in)

_KIND = "spare"


def spare_path(final: Path) -> Path:
    """Where the spare tree of the dump ``final`` is kept: ``.<name>.spare`` beside it."""
    return final.parent / f".{final.name}.{_KIND}"


def take(final: Path, container: Path) -> bool:
    """Move the spare tree of ``final`` to ``container`` (a fresh name), so that
    ``container / final.name`` is the staged tree. ``False`` (nothing moved) if there is no
    spare, or what has its name is not one (that is left alone: a save did not write it)."""
    try:
        kept = stat.S_ISDIR(os.lstat(spare_path(final)).st_mode)  # (a link named so is not ours)
    except OSError:
        return False
    if not kept or not is_spare(spare_path(final) / final.name):
        return False
    try:
        os.rename(spare_path(final), container)
    except OSError:
        return False
    return True


def is_spare(staged: Path) -> bool:
    """Whether the staged tree ``staged`` is a spare's (a folder holding a dump's root manifest),
    not a fresh empty folder."""
    try:
        return stat.S_ISDIR(os.lstat(staged).st_mode) and stat.S_ISREG(os.lstat(staged / MANIFEST_NAME).st_mode)
    except OSError:
        return False


def keep(container: Path, final: Path, layout: dict | None = None) -> None:
    """Make ``container`` (holding the dump ``final`` replaced) the spare, pruned to folders
    and manifests; if a spare is there already, delete ``container`` instead (background).

    ``layout``: the files of each folder of the save that replaced it, the best guess of what
    the replaced dump holds (the same pipeline saved again). On the saving thread, those files
    are moved out of the tree to the container's top level (``.moved-<hex>``), a rename each,
    and the container renamed to the spare. The moved files stay there until the next save or
    load of this destination frees them as it starts (:func:`release_data`), where the disk has
    :data:`KEEP_DATA_IF_FREE` times their size free; elsewhere the background thread deletes
    them now, through the container's descriptor. No save waits for the disk to free big
    files. What else a folder holds, the save that reuses it removes (:func:`clear_folder`
    lists it). Without ``layout``, the background thread prunes by listing every folder,
    then renames."""
    if layout is None:
        run_in_background(container, lambda path: _prune_listing_and_keep(path, final))
        return
    try:
        fd = os.open(container, FOLDER_FLAGS | NOFOLLOW)
    except OSError:
        return
    try:
        moved = _move_out_expected(fd, final.name, layout)
        os.rename(container, spare_path(final))
    except OSError:  # a spare is there (another process's), or the container went meanwhile
        os.close(fd)
        remove_in_background(container)
        return
    if not moved or _room_to_keep(fd, _total(_sizes(fd, moved))):
        os.close(fd)  # (kept until the next save or load frees them: release_data)
        return
    _delete_in_background(final, fd, moved)


#: The replaced dump's data is kept (in the spare, until the next save or load) only where the file
#: system then still has this many times its size free, and only from this size on (less is
#: not worth the disk it holds: the pages a save writes into matter by the hundred MiB).
KEEP_DATA_IF_FREE = 2.0
KEEP_DATA_MIN_BYTES = 16 << 20


def release_data(final: Path, for_a_save: bool = True) -> None:
    """Hand the data the spare of ``final`` holds (the big files of the dump the last save
    replaced, see :func:`keep`) to the background thread, as a load or a changes-only save
    of that destination starts (whichever comes first: both then take the pages it frees;
    deleting it themselves would cost them as much as their own work). A full save frees
    it as it writes instead: :func:`data_freed_as_written`.

    Why keep it until now: freeing 1 GiB of files releases their page cache, and the pages
    a save then writes into are those (np.save writes over its old file the same way). Freed
    right after the save that replaced them, they went back to this VM's host 2 s later, and
    a save after a pause took every page of its files from the host again: 2.2–3.3 s for
    1 GiB against 0.25 s. ``for_a_save``: where the disk has less free space than that
    data, the save waits for it to be freed before it writes. Something else named like the
    spare is left alone."""
    found = _kept_data(final)
    if found is not None:
        _hand_to_background(final, *found, wait_if_tight=for_a_save)


@contextmanager
def data_freed_as_written(final: Path):
    """While in the block (a full save writing), the data the spare of ``final`` holds is
    freed on the saving thread file by file as the save's writes need room
    (:mod:`~stepline.saving.reclaim`), as ``np.save`` frees its old file: the writes take the
    very pages freed. Freed by the background thread, on the other core, the pages reached
    the free lists too late now and then, and the writes took memory this VM had handed
    back instead (at 512 MiB one save in three wrote a 128 MiB file in 0.3–0.8 s instead of
    40 ms); freed all before the first write, the other core idled meanwhile. The files the
    disk is writing back (:func:`~stepline.saving.pagecache.freed_without_waiting`: deleting
    them would wait for the disk), what is left when the block ends (but small files, freed
    then: the next save, finding the background thread still at them, would hand it all its
    own), and everything if some was handed to the background thread already, go to the
    background thread. Where the disk has less free space than that data, it is all freed
    before the block."""
    found = _kept_data(final)
    if found is None or work_pending_in(final.parent, f".{final.name}{_MOVED}"):
        if found is not None:
            _hand_to_background(final, *found, wait_if_tight=True)
        yield
        return
    fd, moved = found
    sizes = _sizes(fd, moved)  # (stat'ed once: the reclaim and the room to keep both need them)
    sized = [(name, sizes[name] or 0) for name in moved if pagecache.freed_without_waiting(fd, name)]
    later = sorted(set(moved) - {name for name, _ in sized})
    if not _room_to_keep(fd, _total(sizes), 1.0):  # (no room to write first: freed now)
        for name, _ in sized:
            remove_in(fd, name)
        sized = []
    if later:
        _hand_to_background(final, os.dup(fd), later, wait_if_tight=True, size=_total(sizes, later))
    left: list[str] = []
    try:
        with reclaim.freeing_as_it_writes(fd, sized, free_rest_below=KEEP_DATA_MIN_BYTES) as left:
            yield
    finally:
        if left:
            _delete_in_background(final, fd, left)
        else:
            os.close(fd)


def _kept_data(final: Path):
    """``(open spare folder, names of the kept data in it)``, or None if it holds none."""
    if not is_spare(spare_path(final) / final.name):
        return None
    try:
        fd = os.open(spare_path(final), FOLDER_FLAGS | NOFOLLOW)
    except OSError:
        return None
    try:
        with os.scandir(fd) as entries:
            moved = [e.name for e in entries if e.name.startswith(_MOVED)]
    except OSError:
        moved = []
    if not moved:
        os.close(fd)
        return None
    return fd, moved


def _hand_to_background(final: Path, fd: int, moved: list[str], wait_if_tight: bool, size: int | None = None) -> None:
    """The entries ``moved`` of ``fd`` deleted by the background thread (which closes
    ``fd``); with ``wait_if_tight``, waited for if the disk has less free space than they
    take (``size``, if the caller has stat'ed them)."""
    tight = wait_if_tight and not _room_to_keep(fd, _total(_sizes(fd, moved)) if size is None else size, 1.0)
    key = _delete_in_background(final, fd, moved)
    if tight:
        wait_for_work_in(key.parent, key.name)


def _sizes(folder_fd: int, names: list[str]) -> dict[str, int | None]:
    """The size of each entry ``names`` of ``folder_fd`` (``None``: it cannot be stat'ed)."""
    sizes: dict[str, int | None] = {}
    for name in names:
        try:
            sizes[name] = os.stat(name, dir_fd=folder_fd, follow_symlinks=False).st_size
        except OSError:
            sizes[name] = None
    return sizes


def _total(sizes: dict[str, int | None], names=None) -> int | None:
    """The sum of ``sizes`` (of ``names`` only, if given); ``None`` if one is unknown."""
    values = [sizes[n] for n in (sizes if names is None else names)]
    return None if None in values else sum(values)


def _room_to_keep(folder_fd: int, size: int | None, times: float | None = None) -> bool:
    """Whether entries of ``folder_fd`` of ``size`` bytes in all (``None``: unknown, as if
    none) are worth keeping (``times`` None: at least :data:`KEEP_DATA_MIN_BYTES`) and its
    file system has ``times`` (:data:`KEEP_DATA_IF_FREE`) their size free."""
    if size is None:
        return False
    try:
        fs = os.statvfs(folder_fd)
    except OSError:
        return False
    if times is None and size < KEEP_DATA_MIN_BYTES:
        return False
    return fs.f_bavail * fs.f_frsize >= (KEEP_DATA_IF_FREE if times is None else times) * size


def _delete_in_background(final: Path, fd: int, moved: list[str]) -> Path:
    key = final.parent / f".{final.name}{_MOVED}{secrets.token_hex(4)}"  # (no save waits for it)
    run_in_background(key, lambda _: _delete_moved(fd, moved))
    return key


def _prune_listing_and_keep(container: Path, final: Path) -> None:
    try:
        fd = os.open(container, FOLDER_FLAGS | NOFOLLOW)
    except OSError:
        return
    try:
        _prune(fd)
    finally:
        os.close(fd)
    try:
        os.rename(container, spare_path(final))
    except OSError:
        remove_now(container)


_MOVED = ".moved-"


def _move_out_expected(container_fd: int, top: str, layout: dict) -> list[str]:
    """Move, from the tree ``top`` under the open folder ``container_fd`` to its top level,
    the files other than manifests that ``layout`` (``{folder relative to the dump: file
    names}``) names; only folders that have such files are opened (a tiny step's has none).
    Returns the names moved to."""
    moved = []
    for relative, names in layout.items():
        doomed = [n for n in names if n != MANIFEST_NAME]
        if not doomed:
            continue
        doomed.append(STAT_CACHE_NAME)  # (written after the save, beside big files)
        fd = _open_below(container_fd, [top, *(relative.split(os.sep) if relative else ())])
        if fd is None:
            continue
        try:
            for name in doomed:
                target = f"{_MOVED}{secrets.token_hex(8)}"
                try:
                    os.rename(name, target, src_dir_fd=fd, dst_dir_fd=container_fd)
                except OSError:  # gone (the reusing save removes what else is there)
                    continue
                moved.append(target)
        finally:
            os.close(fd)
    return moved


def _delete_moved(container_fd: int, moved: list[str]) -> None:
    """Delete the entries ``moved`` of the open folder ``container_fd`` (wherever it has been
    renamed since), then close it."""
    try:
        for name in moved:
            remove_in(container_fd, name)
    finally:
        os.close(container_fd)


def _open_below(fd: int, parts: list):
    """The folder ``fd/parts…`` opened without following a link at any step, or None."""
    current = fd
    try:
        for part in parts:
            opened = os.open(part, FOLDER_FLAGS | NOFOLLOW, dir_fd=current)
            if current != fd:
                os.close(current)
            current = opened
    except OSError:
        if current != fd:
            os.close(current)
        return None
    return current


def _prune(fd: int) -> None:
    """Delete every entry of the open folder ``fd`` that is neither a folder nor a manifest,
    in it and in every folder below, without following links."""
    with os.scandir(fd) as entries:
        found = list(entries)
    for entry in found:
        if entry.is_dir(follow_symlinks=False):
            try:
                child = os.open(entry.name, FOLDER_FLAGS | NOFOLLOW, dir_fd=fd)
            except OSError:
                continue
            try:
                _prune(child)
            finally:
                os.close(child)
        elif entry.name != MANIFEST_NAME or not entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.name, dir_fd=fd)
            except OSError:
                pass


def reuse_folder(path: str, keep_names) -> None:
    """Make ``path`` the folder of a step in a staged tree: created, or, where the spare
    has it already, emptied of everything but its manifest and the folders named in
    ``keep_names`` (the step's children, reused in turn). Raises ``OSError`` as
    ``os.mkdir`` does."""
    try:
        os.mkdir(path)
        return
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(path).st_mode):  # (a file or link: not what a spare holds)
            os.unlink(path)
            os.mkdir(path)
            return
    clear_folder(path, keep_names)


def clear_folder(path: str, keep_names) -> None:
    """Remove from the reused folder ``path`` every entry but a regular manifest and the
    folders named in ``keep_names``."""
    keep_names = set(keep_names)
    fd = os.open(path, FOLDER_FLAGS | NOFOLLOW)
    try:
        with os.scandir(fd) as entries:
            found = list(entries)
        for entry in found:
            if entry.name == MANIFEST_NAME and entry.is_file(follow_symlinks=False):
                continue
            if entry.name in keep_names and entry.is_dir(follow_symlinks=False):
                continue
            remove_in(fd, entry.name)
    finally:
        os.close(fd)


_OVERWRITE = os.O_WRONLY | os.O_CREAT | NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


def overwrite_manifest(folder: str, raw: bytes) -> os.stat_result:
    """Write ``raw`` as ``folder/stepline.json`` in place (the inode reused, or created);
    its ``os.stat`` once written. The mtime ends strictly after the previous one, even
    within one tick of a coarse clock or after the clock stepped back. A manifest with
    other hard links (a dump copied with ``cp -al``, ``rsync --link-dest``, a DVC cache) is
    replaced by a new file instead: what the other names hold is never written."""
    path = os.path.join(folder, MANIFEST_NAME)
    fd = os.open(path, _OVERWRITE, 0o666)
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        if before.st_nlink > 1:
            os.close(fd)
            fd = -1
            os.unlink(path)
            return create_manifest(folder, raw)
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view):]
        if before.st_size > len(raw):
            os.ftruncate(fd, len(raw))
        after = os.fstat(fd)
        if before.st_size and after.st_mtime_ns <= before.st_mtime_ns:
            os.utime(fd, ns=(after.st_atime_ns, before.st_mtime_ns + 1))
            after = os.fstat(fd)
        return after
    finally:
        if fd >= 0:
            os.close(fd)
