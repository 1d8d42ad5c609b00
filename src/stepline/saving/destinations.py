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

from .manifest import MANIFEST_NAME, manifest_digest

_SAVED_TO = "_stepline_saved_to"


def walk(step, folder: Path):
    """``(step, folder)`` for ``step`` saved at ``folder`` and for each descendant, parents first."""
    yield step, folder
    for child in step.get_children():
        yield from walk(child, folder / child.name)


def _key(folder) -> str:
    return os.path.abspath(folder)


def saved_records(step) -> dict:
    """``{folder: (revision, manifest digest)}`` of the saves and loads of ``step`` in this process."""
    return step.__dict__.get(_SAVED_TO, {})


def unchanged_at(step, destination: Path, on_disk: Path | None = None) -> bool:
    """Whether ``step``'s subtree is what its last save to ``destination`` wrote, and every
    folder of it in ``on_disk`` (where that dump is now, ``destination`` by default) still
    holds the manifest that save wrote."""
    destination = Path(destination)
    on_disk = Path(on_disk or destination)
    for node, folder in walk(step, destination):
        record = saved_records(node).get(_key(folder))
        if record is None or record[0] != node._stepline_revision:
            return False
        if _digest_at(on_disk / folder.relative_to(destination)) != record[1]:
            return False
    return True


def _digest_at(folder: Path) -> str | None:
    try:
        return manifest_digest((folder / MANIFEST_NAME).read_bytes())
    except OSError:
        return None


def never_saved_nor_changed(step) -> bool:
    """Whether no step of the tree was ever changed, saved or loaded in this process."""
    return all(node._stepline_revision == 0 and not saved_records(node) for node, _ in walk(step, Path()))


def record_saved(step, destination: Path, digests: dict) -> None:
    """Note that each step of the tree is at ``destination/…`` with the manifest digest
    ``digests[folder]`` (steps a changes-only save skipped keep their records)."""
    for node, folder in walk(step, Path(destination)):
        digest = digests.get(Path(folder))
        if digest is not None:
            node.__dict__.setdefault(_SAVED_TO, {})[_key(folder)] = (node._stepline_revision, digest)
        node._invalidated = False
