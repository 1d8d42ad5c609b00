"""Edit a dump the way an attacker would: change files, then recompute every digest.

After :func:`rehash`, every file record and every parent's child digest up to the root
matches again, so only the signature (which needs the private key) can tell.
"""
import json
from pathlib import Path

import blake3

from stepline.saving.manifest import encode_manifest

MANIFEST_NAME = "stepline.json"


def _blake3(path: Path) -> str:
    return blake3.blake3(Path(path).read_bytes()).hexdigest()


def write_files(folder: Path, files: dict, dump_root: Path) -> None:
    """Write ``{name: bytes}`` into ``folder`` (listing new ones), then :func:`rehash`."""
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    for name, data in files.items():
        (folder / name).unlink(missing_ok=True)  # never write through a hard link
        (folder / name).write_bytes(data)
        manifest["files"].setdefault(name, {"size": 0, "blake3": "0" * 64})
    (folder / MANIFEST_NAME).write_bytes(encode_manifest(manifest))
    rehash(folder, dump_root)


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
