"""Edit a dump the way an attacker would: change files, then recompute every digest.

After :func:`rehash`, every file record and every parent's child digest up to the root
matches again, so only the signature (which needs the private key) can tell.
"""
import base64
import json
from pathlib import Path

import blake3

from stepline.saving.manifest import encode_manifest

MANIFEST_NAME = "stepline.json"


def _blake3(path: Path) -> str:
    return blake3.blake3(Path(path).read_bytes()).hexdigest()


def write_files(folder: Path, files: dict, dump_root: Path) -> None:
    """Write ``{name: bytes}`` into ``folder`` (listing new ones, in place of an inline
    payload of that name), then :func:`rehash`."""
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    for name, data in files.items():
        (folder / name).unlink(missing_ok=True)  # never write through a hard link
        (folder / name).write_bytes(data)
        manifest["files"].setdefault(name, {"size": 0, "blake3": "0" * 64})
        _drop_inline(manifest, name)
    (folder / MANIFEST_NAME).write_bytes(encode_manifest(manifest))
    rehash(folder, dump_root)


def write_inline(folder: Path, payloads: dict, dump_root: Path) -> None:
    """Put ``{name: bytes}`` inline in ``folder``'s manifest, with their sizes and digests (in
    place of a file of that name, which is removed), then :func:`rehash`."""
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    for name, data in payloads.items():
        manifest["files"].pop(name, None)
        (folder / name).unlink(missing_ok=True)
        manifest.setdefault("inline", {})[name] = {"size": len(data), "blake3": blake3.blake3(data).hexdigest(),
                                                  "base64": base64.b64encode(data).decode("ascii")}
    (folder / MANIFEST_NAME).write_bytes(encode_manifest(manifest))
    rehash(folder, dump_root)


def pickle_to_file(folder: Path, dump_root: Path) -> Path:
    """Move ``folder``'s inline ``step.pkl`` to a file beside its manifest, as a save writes a
    pickle too big to go inline, then :func:`rehash`; returns the file's path."""
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    record = manifest.get("inline", {}).get("step.pkl")
    if record is not None:
        (folder / "step.pkl").write_bytes(base64.b64decode(record.pop("base64")))
        manifest["files"]["step.pkl"] = record
        _drop_inline(manifest, "step.pkl")
        (folder / MANIFEST_NAME).write_bytes(encode_manifest(manifest))
        rehash(folder, dump_root)
    return folder / "step.pkl"


def pickles_to_files(dump_root: Path) -> None:
    """:func:`pickle_to_file` for every step folder of the dump (the layout before format 3)."""
    folders = sorted((p.parent for p in Path(dump_root).rglob(MANIFEST_NAME)), key=lambda p: -len(p.parts))
    for folder in folders:
        pickle_to_file(folder, dump_root)


def _drop_inline(manifest: dict, name: str) -> None:
    inline = manifest.get("inline", {})
    inline.pop(name, None)
    if not inline:
        manifest.pop("inline", None)


def edit_manifest(folder: Path, change, dump_root: Path) -> None:
    """Apply ``change(manifest_dict)`` to ``folder``'s manifest, then :func:`rehash`."""
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    change(manifest)
    (folder / MANIFEST_NAME).write_bytes(encode_manifest(manifest))
    rehash(folder, dump_root)


def rehash(folder: Path, dump_root: Path) -> None:
    """Recompute ``folder``'s file records, then each parent's child digest up to ``dump_root``."""
    folder, dump_root = Path(folder), Path(dump_root)
    while True:
        path = folder / MANIFEST_NAME
        manifest = json.loads(path.read_text())
        for name, record in manifest.get("files", {}).items():
            record["size"] = (folder / name).stat().st_size
            record["blake3"] = _blake3(folder / name)
        for child in manifest.get("children", []):
            if isinstance(child, dict):
                child["manifest"] = _blake3(folder / child["name"] / MANIFEST_NAME)
        path.write_bytes(encode_manifest(manifest))  # with the manifest's own digest, as stepline writes it
        if folder == dump_root:
            return
        folder = folder.parent
