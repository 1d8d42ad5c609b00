"""Changes-only saves committed through a journal: the cost follows the change, not the dump.

A changes-only save writes only the steps that changed, into an *overlay*: the hidden
folder ``.<name>.tmp-<random>/<name>`` mirrors the dump's layout but holds just the
re-saved steps' own files (and whole folders for new steps). Nothing under ``<name>``
changes until the overlay is complete. Then one atomic ``os.replace`` writes the journal
``.<name>.journal`` beside the dump — the commit point — naming the overlay and the files
of the previous steps that the new ones no longer have. Applying it moves each overlay
file onto its place (``os.replace``, one file at a time) and deletes those files; then
the journal goes.

A process killed before the commit leaves the dump as it was (the overlay is a leftover
the next save removes); one killed after it leaves a journal that the next save or load
applies first (:func:`recover`): every move and deletion can be done again, so applying
twice is applying once. Saves hold the destination lock while they apply; loads take it
to recover, so no load ever reads a half-applied dump.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import StepLoadError
from .integrity import STAT_CACHE_NAME, trusted_entries, vouch_for
from .manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, SIGNATURE_NAME, is_safe_component, manifest_digest
from .safe_open import read_regular, replace_with

JOURNAL_FORMAT = "stepline-journal"


def journal_path(final: Path) -> Path:
    return final.parent / f".{final.name}.journal"


def commit(overlay: Path, final: Path, listed: dict | None = None) -> None:
    """Commit the complete ``overlay`` onto the dump ``final``, then apply it (returns None:
    nothing of the previous dump is left to delete beyond what applying deletes).

    ``listed``: ``{overlay folder: (file names, child names)}`` of the manifests the save
    wrote there (else they are read)."""
    deletions = _deletions(overlay, final, root=True, listed=listed or {})
    entry = {"format": JOURNAL_FORMAT, "overlay": os.path.relpath(overlay, final.parent), "delete": deletions}
    replace_with(journal_path(final), json.dumps(entry).encode("utf-8"))  # the commit point
    vouched = _trusted_in(overlay)
    _apply(final, entry)
    for relative, entries in vouched.items():
        vouch_for(final / relative, entries)  # moving changed their ctimes, not their bytes


def _trusted_in(overlay: Path) -> dict:
    """Per folder of ``overlay`` (relative), the stat cache entries that vouch for its files."""
    found = {}
    for folder, _, files in os.walk(overlay):
        if STAT_CACHE_NAME in files:
            entries = trusted_entries(folder)
            if entries:
                found[os.path.relpath(folder, overlay)] = entries
    return found


def recover(final: Path) -> bool:
    """Apply the journal a killed save left for ``final``, if any; ``True`` if there was one."""
    path = journal_path(final)
    try:
        raw = read_regular(path, StepLoadError, "journal", 64 << 20)  # a FIFO there never blocks
    except FileNotFoundError:
        return False
    except OSError as e:
        raise StepLoadError(f"{path}: cannot read the journal of an interrupted save ({e.strerror or e})") from e
    try:
        entry = json.loads(raw)
        valid = entry.get("format") == JOURNAL_FORMAT and _is_our_overlay(entry.get("overlay"), final) \
            and isinstance(entry.get("delete"), list) and all(_is_inside(d) for d in entry["delete"])
    except (ValueError, AttributeError):
        valid = False
    if not valid:
        raise StepLoadError(f"{path}: not a journal this stepline wrote: remove it to load {final}")
    _apply(final, entry)
    return True


def _apply(final: Path, entry: dict) -> None:
    overlay = final.parent / entry["overlay"]
    trash = _Trash(overlay.parent)
    if overlay.is_dir():
        _merge(overlay, final, trash)
    for relative in entry["delete"]:
        trash.take(final / relative)
    os.unlink(journal_path(final))


def _merge(source: Path, target: Path, trash: "_Trash") -> None:
    """Move everything in ``source`` onto ``target``: sub-folders recursively (whole when
    ``target`` has none of that name), files one ``os.replace`` each, the manifest last."""
    entries = sorted(os.scandir(source), key=lambda e: e.name == MANIFEST_NAME)
    for entry in entries:
        destination = target / entry.name
        if entry.is_dir(follow_symlinks=False):
            if os.path.isdir(destination) and not os.path.islink(destination):
                _merge(Path(entry.path), destination, trash)
            else:
                os.rename(entry.path, destination)
        else:
            trash.keep(destination)
            os.replace(entry.path, destination)


class _Trash:
    """Where applying a journal leaves what it replaces or deletes: hard links and renames
    into the overlay's container (``.<name>.tmp-…/.replaced-<n>``), which the background
    thread removes with it. On a disk mounted with ``discard`` without a journal (this VM's
    ext4), freeing a file's blocks waits for the device: 0.1–4 ms a file, not on the save's
    thread. Each step can be done again (applying twice is applying once); where a link
    cannot be made (another file system's rules), the file is freed there and then."""

    def __init__(self, container: Path):
        self.container, self.next, self.there = container, 0, container.is_dir()

    def keep(self, path: Path) -> None:
        """Link ``path``, about to be replaced, into the trash (nothing if it is not there)."""
        self._put(path, lambda slot: os.link(path, slot, follow_symlinks=False))

    def take(self, path: Path) -> None:
        """Move ``path`` (a file or a folder) into the trash, or remove it."""
        if not self._put(path, lambda slot: os.rename(path, slot)):
            _remove_path(path)

    def _put(self, path: Path, move) -> bool:
        if not self.there:
            return False
        while True:
            slot = self.container / f".replaced-{self.next}"
            self.next += 1
            try:
                move(slot)
                return True
            except FileExistsError:
                continue  # (a slot an interrupted application used)
            except FileNotFoundError:
                return True  # nothing to keep: a new name, or removed already
            except OSError:
                return False


def _deletions(overlay: Path, final: Path, root: bool, listed: dict) -> list[str]:
    """Files and child folders of the previous steps at ``final`` that the re-saved steps
    in ``overlay`` no longer have (relative to ``final``); only what a save once wrote."""
    new = listed.get(os.fspath(overlay))
    if new is None:
        new = _names_in(overlay) if (overlay / MANIFEST_NAME).is_file() else None
    if new is None or not (final / MANIFEST_NAME).is_file():
        return []  # a kept step (not in the overlay) or a new one (moved whole)
    old = _names_in(final)
    if old is None:
        return []  # nothing stepline wrote is listed there: delete nothing
    (old_files, old_children), (new_files, new_children) = old, new
    gone = sorted((old_files - new_files) | (old_children - new_children))
    if root and os.path.lexists(final / SIGNATURE_NAME) and not os.path.lexists(overlay / SIGNATURE_NAME):
        gone.append(SIGNATURE_NAME)  # a signature of the previous root digest
    resaved = {entry.name for entry in os.scandir(overlay) if entry.is_dir(follow_symlinks=False)}
    for child in sorted(new_children & old_children & resaved):
        gone += [f"{child}/{name}" for name in _deletions(overlay / child, final / child, False, listed)]
    return gone


def _names_in(folder: Path):
    """``(file names, child names)`` a manifest lists, each a safe name inside ``folder``,
    or None if it is not a manifest (then nothing there is deleted)."""
    try:
        raw = read_regular(folder / MANIFEST_NAME, OSError, "manifest", MAX_MANIFEST_BYTES)  # (no link, no FIFO)
    except OSError:
        return None
    digest = manifest_digest(raw)
    listing = _LISTINGS.get(digest)
    if listing is None:
        listing = _listing(raw)
        if listing is not None:
            remember(digest, *listing)
    return listing


def remember(digest: str, files, children) -> None:
    """Note what the manifest of BLAKE3 ``digest`` lists (a save that writes one knows), so
    that the commit of the next changes-only save need not parse it again (a 1000-step root's
    manifest: ~1 ms of JSON). A digest names the bytes, so the note is never stale."""
    if len(_LISTINGS) >= 256:
        _LISTINGS.pop(next(iter(_LISTINGS)))
    _LISTINGS[digest] = (frozenset(files), frozenset(children))


#: Manifest digest -> (file names, child names) it lists; the newest 256.
_LISTINGS: dict = {}


def _listing(raw: bytes):
    try:
        data = json.loads(raw)
        files = set(data["files"])
        children = {c["name"] if isinstance(c, dict) else c for c in data.get("children", [])}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if not all(is_safe_component(n) or _is_inside(n) for n in files) or not all(map(is_safe_component, children)):
        return None
    return files, children


def _remove_path(path: Path) -> None:
    import shutil
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _is_our_overlay(relative, final: Path) -> bool:
    if not isinstance(relative, str):
        return False
    parts = Path(relative).parts
    return (len(parts) == 2 and parts[0].startswith(f".{final.name}.tmp-") and parts[1] == final.name)


def _is_inside(relative) -> bool:
    return (isinstance(relative, str) and bool(relative) and not os.path.isabs(relative)
            and ".." not in Path(relative).parts)
