"""A saved step tree, read from its manifests, unpickling nothing (``stepline inspect``).

Besides reading every manifest (with all the checks a load makes on them), inspect checks
what it can without hashing or unpickling: every listed file is there, a regular file of
the recorded size; stat caches and lock files are regular files. A broken dump raises the
one error a load would raise. The command itself lives in :mod:`stepline.saving.inspect_cli`.
"""
from __future__ import annotations

import json
from pathlib import Path

from stepline.saving.atomic import check_lock_files
from stepline.saving.errors import CorruptFileError
from stepline.saving.inline import ENCODING, INLINE_FIELD, step_pickle
from stepline.saving.integrity import load_stat_cache, verify_files
from stepline.saving.manifest import child_entries, read_manifest, root_digest


def describe(path) -> dict:
    """The dump at ``path`` as plain data: format, root digest, versions and the step tree."""
    root = Path(path)
    check_lock_files(root)
    manifest = read_manifest(root)
    return {"path": str(root), "format_version": manifest["format_version"], "created": manifest.get("created"),
            "root_digest": root_digest(root), "versions": manifest.get("versions", {}),
            "step": _node(root, manifest)}


def _node(folder: Path, manifest: dict) -> dict:
    verify_files(folder, manifest["files"], verify=False)  # there, regular, of the recorded size
    load_stat_cache(folder, strict=True)
    stream = step_pickle(folder, manifest, _read_file)  # an inline one decoded and checked against its digest
    if stream is not None:
        _check_builds_an_object(*stream)
    children = []
    for name, digest in child_entries(manifest, folder):
        children.append(_node(folder / name, read_manifest(folder / name, digest)))  # refuses links
    return {"name": manifest.get("name"), "class": manifest.get("class"), "savers": manifest.get("savers", []),
            "stripped_saver": manifest.get("stripped_saver"), "hyperparams": manifest.get("hyperparams", {}),
            "hyperparams_space": manifest.get("hyperparams_space", {}), "info": manifest.get("info", {}),
            "files": manifest["files"], "inline": _without_bytes(manifest.get(INLINE_FIELD, {})),
            "children": children}


def _without_bytes(inline: dict) -> dict:
    """The records of inline payloads without their (base64) bytes."""
    return {name: {k: v for k, v in record.items() if k != ENCODING} for name, record in inline.items()}


def _read_file(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


_CLASS_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ"}


def _check_builds_an_object(path, data: bytes) -> None:
    """Read the opcodes of a step's pickle ``data`` (``pickletools``: nothing is executed) up
    to the first class reference; a stream with none holds a plain value (``42``), never a step."""
    import pickletools
    try:
        for opcode, _, _ in pickletools.genops(data):
            if opcode.name in _CLASS_OPCODES:
                return
    except (ValueError, EOFError) as e:
        raise CorruptFileError(f"{path}: not a valid pickle stream ({e})") from e
    raise CorruptFileError(f"{path}: holds a plain value (its pickle names no class), not a step: the file "
                           f"was replaced, or the dump was not written by stepline")


def describe_tree(path) -> list[str]:
    """Lines describing the dump at ``path``: names, classes, savers, hyperparameters, sizes."""
    tree = describe(path)
    lines = [f"{tree['path']}  (stepline-dump v{tree['format_version']}, saved {tree['created'] or '?'})",
             f"root digest: {tree['root_digest']}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in tree["versions"].items() if v)]
    lines.extend(_node_lines(tree["step"], ""))
    return lines


def _node_lines(node: dict, indent: str) -> list[str]:
    files, inline = node["files"], node["inline"]
    size = sum(record.get("size", 0) for record in files.values())
    stored = f"{_human(size)} in {len(files)} files"
    if inline:
        stored = f"{_human(sum(record['size'] for record in inline.values()))} inline" + (f", {stored}" if files else "")
    lines = [f"{indent}{node['name']}: {node['class']}  [{stored}]"]
    detail = indent + "    "
    for key, value in node["info"].items():
        lines.append(f"{detail}{key}: {value}")
    if node["savers"]:
        lines.append(f"{detail}savers: {', '.join(s.rsplit('.', 1)[-1] for s in node['savers'])}")
    if node["hyperparams"]:
        lines.append(f"{detail}hyperparams: {json.dumps(node['hyperparams'], sort_keys=True)}")
    if node["hyperparams_space"]:
        lines.append(f"{detail}space: {json.dumps(node['hyperparams_space'], sort_keys=True)}")
    record = files.get("step.pkl") or inline.get("step.pkl") or {}
    if record.get("by_value"):
        lines.append(f"{detail}by value (needs Python {record.get('python')}): {', '.join(record['by_value'])}")
    for child in node["children"]:
        lines.extend(_node_lines(child, detail))
    return lines


def _human(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"
