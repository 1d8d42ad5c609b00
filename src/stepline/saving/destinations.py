"""Which steps a changes-only save may skip: "saved here" is tracked per destination.

A step remembers, for each folder this process saved it to (or loaded it from), its
revision then and the digest of the manifest that save wrote (``_stepline_saved_to``,
never pickled). A step is skipped only if it and all its descendants are at the
revision recorded for their folders *and* the folder still holds that manifest digest,
so a new pipeline over an old dump, a second root, a deleted child folder or a dump
rewritten by another process meanwhile all get written.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import ManifestError
from .manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, manifest_digest
from .safe_open import read_regular

_SAVED_TO = "_stepline_saved_to"


def walk(step, folder):
    """``(step, folder)`` for ``step`` saved at ``folder`` and for each descendant, parents
    first (folders as strings: this runs over every step of a save)."""
    yield step, folder
    for child in step.get_children():
        yield from walk(child, os.path.join(folder, child.name))


def saved_records(step) -> dict:
    """``{folder: (revision, manifest digest)}`` of the saves and loads of ``step`` in this process."""
    return step.__dict__.get(_SAVED_TO, {})


def unchanged_at(step, destination: Path, absolute: bool = False) -> str | None:
    """The manifest digest at ``destination`` if ``step``'s subtree is what its last save
    there wrote and every folder of it still holds the manifest that save wrote; else None.

    Revisions are compared first (no file is read for a changed subtree). A manifest whose
    ``os.stat`` (inode, size, mtime, ctime) is what it was when recorded is not read again:
    any write, replacement or copy changes one of them. ``absolute``: ``destination`` is
    already an absolute, normalised path string (a save's live folders are).
    """
    checked = []
    for node, folder in walk(step, destination if absolute else os.path.abspath(destination)):
        record = saved_records(node).get(folder)
        if record is None or record[0] != node._stepline_revision:
            return None
        checked.append((folder, record))
    for folder, record in checked:
        if not _still_holds(folder, record):
            return None
    return checked[0][1][1]


def unchanged_children(children, live_parent: str) -> dict:
    """``{name: manifest digest}`` of the ``children`` whose subtrees :func:`unchanged_at`
    finds unchanged at ``live_parent/<name>`` (an absolute, normalised path string).

    The same check, one loop for a parent's children: a leaf costs a dict lookup, a
    revision compare and one ``os.stat`` relative to the parent's folder (a changes-only
    save of 1 step in 1000 runs this over the 999 others)."""
    kept = {}
    try:
        parent_fd = os.open(live_parent, _FOLDER_FLAGS)
    except OSError:
        return kept  # (no folder there: every child is written)
    try:
        for child in children:
            name = child.name
            folder = f"{live_parent}{os.sep}{name}"
            record = child.__dict__.get(_SAVED_TO, _NONE).get(folder)
            if record is None or record[0] != child._stepline_revision:
                continue
            if child.get_children():
                digest = unchanged_at(child, folder, absolute=True)
                if digest is not None:
                    kept[name] = digest
            elif _still_holds(folder, record, f"{name}{os.sep}{MANIFEST_NAME}", parent_fd):
                kept[name] = record[1]
    finally:
        os.close(parent_fd)
    return kept


_NONE: dict = {}
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _still_holds(folder: str, record: tuple, relative: str | None = None, parent_fd: int | None = None) -> bool:
    try:
        if parent_fd is None:
            st = os.stat(os.path.join(folder, MANIFEST_NAME), follow_symlinks=False)
        else:
            st = os.stat(relative, dir_fd=parent_fd, follow_symlinks=False)
    except OSError:
        return False
    if _signature(st) == record[2]:
        return True
    return _digest_at(folder) == record[1]


def _signature(st: os.stat_result) -> tuple:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _digest_at(folder: str) -> str | None:
    try:
        return manifest_digest(read_regular(Path(folder) / MANIFEST_NAME, ManifestError, "manifest", MAX_MANIFEST_BYTES))
    except (OSError, ManifestError):  # nothing stepline wrote there (a FIFO is never opened blocking)
        return None


def never_saved_nor_changed(step) -> bool:
    """Whether no step of the tree was ever changed, saved or loaded in this process."""
    return all(node._stepline_revision == 0 and not saved_records(node) for node, _ in walk(step, ""))


def record_saved(step, destination: Path, digests: dict, stats: dict | None = None) -> None:
    """Note that each step of the tree is at ``destination/…`` with the manifest digest
    ``digests[folder]`` (steps a changes-only save skipped keep their records), and how
    that manifest's ``os.stat`` looks now: ``stats[folder]`` where the caller has it
    (taken as the manifest was written or read), else stat'ed here."""
    top = os.path.abspath(destination)
    absolute = _absolute_keys(os.fspath(destination), top)
    digests, stats = absolute(digests), absolute(stats or {})
    for node, folder in walk(step, top):
        digest = digests.get(folder)
        if digest is not None:
            st = stats.get(folder)
            if st is None:
                try:
                    st = os.stat(os.path.join(folder, MANIFEST_NAME), follow_symlinks=False)
                except OSError:
                    st = None
            signature = None if st is None else _signature(st)
            node.__dict__.setdefault(_SAVED_TO, {})[folder] = (node._stepline_revision, digest, signature)
        node._invalidated = False


def record_written(written) -> None:
    """:func:`record_saved` for a save that wrote every step: ``written`` gives, for each,
    ``(step, its folder as walk spells it, its manifest digest, its manifest's os.stat or None)``."""
    for node, folder, digest, st in written:
        signature = None if st is None else _signature(st)
        node.__dict__.setdefault(_SAVED_TO, {})[folder] = (node._stepline_revision, digest, signature)
        node._invalidated = False


def _absolute_keys(given: str, top: str):
    """A function giving a ``{folder: value}`` dict with its folders made absolute as
    :func:`walk` spells them: folders under ``given`` (the destination as the caller spelled
    it, children joined onto it by name) get ``top`` (its absolute form) as prefix, the
    others ``os.path.abspath`` (which normalises: a few µs a folder, over every step)."""
    def absolute(mapping: dict) -> dict:
        out = {}
        for folder, value in mapping.items():
            folder = os.fspath(folder)
            if folder == given or folder.startswith(given + os.sep):
                out[top + folder[len(given):]] = value
            else:
                out[os.path.abspath(folder)] = value
        return out
    return absolute
