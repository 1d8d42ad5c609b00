"""``stepline inspect PATH``: print a saved step tree from its manifests, unpickling nothing."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from stepline.saving.errors import StepLoadError
from stepline.saving.manifest import child_entries, read_manifest, root_digest


def describe_tree(path) -> list[str]:
    """Lines describing the dump at ``path``: names, classes, savers, hyperparameters, sizes."""
    root = Path(path)
    manifest = read_manifest(root)
    versions = manifest.get("versions", {})
    lines = [f"{root}  (stepline-dump v{manifest.get('format_version')}, saved {manifest.get('created', '?')})",
             f"root digest: {root_digest(root)}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v)]
    lines.extend(_node_lines(root, manifest, ""))
    return lines


def _node_lines(folder: Path, manifest: dict, indent: str) -> list[str]:
    files = manifest.get("files", {})
    size = sum(record.get("size", 0) for record in files.values())
    savers = [s.rsplit(".", 1)[-1] for s in manifest.get("savers", [])]
    head = f"{indent}{manifest.get('name')}: {manifest.get('class')}  [{_human(size)} in {len(files)} files]"
    lines = [head]
    detail = indent + "    "
    if savers:
        lines.append(f"{detail}savers: {', '.join(savers)}")
    if manifest.get("hyperparams"):
        lines.append(f"{detail}hyperparams: {json.dumps(manifest['hyperparams'], sort_keys=True)}")
    if manifest.get("hyperparams_space"):
        lines.append(f"{detail}space: {json.dumps(manifest['hyperparams_space'], sort_keys=True)}")
    by_value = files.get("step.pkl", {}).get("by_value")
    if by_value:
        lines.append(f"{detail}by value (needs Python {files['step.pkl'].get('python')}): {', '.join(by_value)}")
    for child, digest in child_entries(manifest, folder):
        try:
            lines.extend(_node_lines(folder / child, read_manifest(folder / child, digest), detail))
        except StepLoadError as error:
            lines.append(f"{detail}{child}: MISSING OR BROKEN ({error})")
    return lines


def _human(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a saved step's folder, e.g. cache_folder/saved_pipeline_name")
    parser.add_argument("--audit", action="store_true", help="also list the globals every pickle needs, "
                        "read from its opcodes, and whether an untrusted load may use them (docs/trust.md)")


def run(args) -> int:
    try:
        print("\n".join(describe_tree(args.path)))
        if getattr(args, "audit", False):
            from stepline.trust.report import audit_lines
            print("\n".join(audit_lines(args.path)))
    except StepLoadError as error:
        print(f"stepline inspect: {error}")
        return 2
    return 0
