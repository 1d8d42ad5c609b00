"""Replace a dump folder all at once, so that an interrupted save loses nothing.

A save writes into a fresh hidden sibling ``.<name>.tmp-<random>``; only when it is
complete does the old folder step aside (``.<name>.old-<random>``) and the new one take
its name. A process killed before that leaves ``final_path`` untouched and a ``.tmp-``
leftover that the next save removes; one killed between the two renames leaves the
previous dump complete under ``.old-``, which :func:`resolve_dump_folder` finds.
One save per destination at a time: a save removes the leftovers of others.
"""

from __future__ import annotations

import os
import secrets
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

from .errors import InterruptedSaveWarning
from .manifest import MANIFEST_NAME


def _sibling(final: Path, kind: str) -> Path:
    return final.parent / f".{final.name}.{kind}-{secrets.token_hex(4)}"


def _leftovers(parent: Path, name: str, kind: str) -> list[Path]:
    prefix = f".{name}.{kind}-"
    try:
        return [p for p in parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return []


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_folder(final_path):
    """Yield a fresh temporary sibling folder; on success swap it into ``final_path``.

    On an exception the temporary folder is removed and ``final_path`` is left as it was.
    Leftovers of earlier interrupted saves are cleaned first.
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(final.parent, final.name)
    tmp = _sibling(final, "tmp")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    _swap_into_place(tmp, final)


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``, moving any previous ``final`` aside and then deleting it."""
    old = None
    if os.path.lexists(final):
        old = _sibling(final, "old")
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        if old is not None:
            os.rename(old, final)
        _remove(tmp)
        raise
    if old is not None:
        _remove(old)


def clean_leftovers(parent, name: str) -> list[Path]:
    """Remove ``.<name>.tmp-*`` folders, and ``.<name>.old-*`` ones when ``name`` exists."""
    parent = Path(parent)
    stale = _leftovers(parent, name, "tmp")
    if os.path.lexists(parent / name):
        stale += _leftovers(parent, name, "old")
    for path in stale:
        _remove(path)
    return stale


def resolve_dump_folder(path) -> Path:
    """``path``, or, if it is missing after a save died between its two renames, the
    complete previous dump left at ``.<name>.old-*`` (with an :class:`InterruptedSaveWarning`).
    """
    path = Path(path)
    if os.path.lexists(path):
        return path
    complete = [p for p in _leftovers(path.parent, path.name, "old") if (p / MANIFEST_NAME).is_file()]
    if not complete:
        return path
    found = max(complete, key=lambda p: p.stat().st_mtime_ns)
    warnings.warn(f"{path} is missing; loading the previous dump {found} that an interrupted "
                  f"save left behind (the next save to {path} cleans it up)",
                  InterruptedSaveWarning, stacklevel=2)
    return found
