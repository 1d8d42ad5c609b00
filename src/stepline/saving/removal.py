"""Deleting what a save wrote and no longer needs: without following links, off the save's path.

:func:`remove_in_background` hands a folder (the dump a save replaced, a failed save's
staged tree) to one background thread per process; :func:`wait_for_cleanup` waits for it.
A process that exits first leaves the folder as a leftover that the next save to that
destination removes (:func:`stepline.saving.atomic.clean_leftovers`).
"""
from __future__ import annotations

import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

def remove_now(path: Path) -> None:
    """Delete ``path``: a file or link, or a folder and all it holds (what can be removed).
    What the folder most likely holds, if :func:`remove_in_background` was told (see
    :func:`expected_tree`), is removed without listing it; anything else is found by listing."""
    expected = _expected.pop(path, None)
    expected = expected_tree(*expected) if expected else None
    path = os.fspath(path)
    try:
        parent = os.open(os.path.dirname(path) or ".", FOLDER_FLAGS)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        remove_in(parent, os.path.basename(path), expected)
    finally:
        os.close(parent)


def remove_in(folder_fd: int, name: str, expected=None) -> None:
    """Delete ``name`` in the open folder ``folder_fd``, and, if it is a folder, all it holds.

    As ``shutil.rmtree`` without following links: each folder is opened with ``O_NOFOLLOW |
    O_DIRECTORY`` and its entries are removed relative to it, so a folder swapped for a link
    meanwhile is never walked through; with fewer system calls per folder (deleting the
    replaced dump of a save of tiny steps costs about what writing it does). ``expected``:
    ``(file names, {child folder: expected})`` it most likely holds, removed without listing
    it first; it is listed only if something else is left."""
    try:
        fd = os.open(name, FOLDER_FLAGS | NOFOLLOW, dir_fd=folder_fd)
    except OSError:  # a file or a link (or gone)
        _unlink(name, folder_fd)
        return
    try:
        if expected is not None:
            files, children = expected
            for file in files:
                _unlink(file, fd)
            for child, below in children.items():
                remove_in(fd, child, below)
            try:
                os.rmdir(name, dir_fd=folder_fd)
                return
            except OSError:  # it holds more than expected
                pass
        _remove_listed(fd)
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=folder_fd)
    except OSError:
        pass


def _remove_listed(fd: int) -> None:
    """Delete every entry of the open folder ``fd``, listing it."""
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    remove_in(fd, entry.name)
                else:
                    _unlink(entry.name, fd)
    except OSError:
        pass


def _unlink(name: str, folder_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=folder_fd)
    except OSError:
        pass


def expected_tree(layout: dict, top: str):
    """What a folder holding the dump ``top`` most likely holds, for :func:`remove_now`, from
    ``layout``: ``{folder relative to the dump ("" for its root): file names}`` (a save's
    own, the best guess for the dump it replaced: the same pipeline saved again)."""
    nodes: dict = {}
    for relative, names in layout.items():
        node = nodes.setdefault(relative, [(), {}])
        node[0] = names
        if relative:
            parent, _, child = relative.rpartition(os.sep)
            nodes.setdefault(parent, [(), {}])[1][child] = node
    root = nodes.get("")
    return None if root is None else ((), {top: root})


FOLDER_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


# The previous dump is deleted off the save's critical path, by one background thread
# (deleting a tree of small folders costs as much as writing it). A process that exits
# first leaves it as a leftover that the next save to that destination removes.
_cleaner: ThreadPoolExecutor | None = None
_pending: list = []
_cleaner_lock = threading.Lock()
_removing: dict = {}  # path handed to the background thread, not done yet -> its future
_expected: dict = {}  # path handed over -> (layout, dump name) it most likely holds (see expected_tree)


def remove_in_background(*paths: Path, expected=None) -> None:
    """Delete ``paths`` (our own leftovers) in the background thread; ``expected``: what the
    one path given most likely holds, ``(layout, name of the dump in it)`` (:func:`expected_tree`)."""
    if expected:
        with _cleaner_lock:
            _expected[paths[0]] = expected
    for path in paths:
        run_in_background(path, remove_now)


def run_in_background(path: Path, work) -> None:
    """Run ``work(path)`` — something that deletes or moves ``path`` — in the background
    thread; until it is done, :func:`being_removed` says so of ``path``."""
    global _cleaner
    with _cleaner_lock:
        if _cleaner is None:
            _cleaner = ThreadPoolExecutor(1, thread_name_prefix="stepline-cleanup")
        _pending[:] = [f for f in _pending if not f.done()]
        _removing[path] = future = _cleaner.submit(_run_handed_over, path, work)
        _pending.append(future)


def _run_handed_over(path: Path, work) -> None:
    try:
        work(path)
    finally:
        with _cleaner_lock:
            _removing.pop(path, None)


def being_removed(path: Path) -> bool:
    """Whether the background thread of this process is deleting ``path`` already."""
    with _cleaner_lock:
        return path in _removing


def work_pending_in(parent: Path, prefix: str) -> bool:
    """Whether the background thread has yet to finish something handed to it as ``parent / <prefix>…``."""
    with _cleaner_lock:
        return any(path.parent == parent and path.name.startswith(prefix) for path in _removing)


def wait_for_work_in(parent: Path, prefix: str) -> None:
    """Return once the background thread is done with every ``parent / <prefix>…`` handed to it."""
    with _cleaner_lock:
        pending = [f for path, f in _removing.items() if path.parent == parent and path.name.startswith(prefix)]
    for future in pending:
        future.result()


def wait_for_cleanup() -> None:
    """Return once every deletion handed to the background thread is done."""
    with _cleaner_lock:
        pending = list(_pending)
    for future in pending:
        future.result()


def _forget_cleaner_after_fork() -> None:
    global _cleaner
    _cleaner = None
    _pending.clear()
    _removing.clear()  # the child has no such thread: it deletes leftovers itself
    _expected.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_cleaner_after_fork)
