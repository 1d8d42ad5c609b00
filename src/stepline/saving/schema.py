"""The shape of a manifest: each field's type, checked before anything uses it.

A manifest that parses as JSON can still hold ``"children": 7`` or ``"versions": "3.11"``;
:func:`check_manifest_fields` turns every such field into a :class:`ManifestError` naming
the manifest, the field and what was expected, so no code further on meets a raw
``AttributeError`` or ``KeyError``.
"""
from __future__ import annotations

from pathlib import Path

from .errors import ManifestError

#: field -> (required, what it must be, check)
_FIELDS = {
    "name": (True, "a string", lambda v: isinstance(v, str)),
    "class": (True, "a string", lambda v: isinstance(v, str)),
    "files": (True, "an object {file name: record}", lambda v: isinstance(v, dict)),
    "created": (False, "a string", lambda v: isinstance(v, str)),
    "stripped_saver": (False, "a string", lambda v: isinstance(v, str)),
    "savers": (False, "a list of class names", lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v)),
    "hyperparams": (False, "an object", lambda v: isinstance(v, dict)),
    "hyperparams_space": (False, "an object", lambda v: isinstance(v, dict)),
    "info": (False, "an object", lambda v: isinstance(v, dict)),
    "versions": (False, "an object {package: version string}",
                 lambda v: isinstance(v, dict) and all(isinstance(x, str) or x is None for x in v.values())),
}


def check_manifest_fields(path: Path, data: dict) -> None:
    """Raise :class:`ManifestError` unless every known field of ``data`` has its type."""
    for field, (required, expected, valid) in _FIELDS.items():
        if field not in data:
            if required:
                raise ManifestError(f"{path}: the manifest has no {field!r} field: it is incomplete or "
                                    f"was not written by stepline")
            continue
        if not valid(data[field]):
            raise ManifestError(f"{path}: field {field!r} must be {expected}, not {_shown(data[field])}")
    check_children(path, data.get("children", []))


def check_children(path: Path, children) -> None:
    """``children`` must be a list of distinct child folder names, each one path component."""
    if not isinstance(children, list):
        raise ManifestError(f"{path}: field 'children' must be a list of step names, not {_shown(children)}")
    seen = set()
    for child in children:
        name = child.get("name") if isinstance(child, dict) else child
        problem = folder_name_problem(name)
        if problem:
            raise ManifestError(f"{path}: field 'children' holds {_shown(name)}: {problem}")
        if name in seen:
            raise ManifestError(f"{path}: field 'children' lists {name!r} twice")
        seen.add(name)


def folder_name_problem(name) -> str | None:
    """Why ``name`` cannot be a file or folder name inside a dump, or ``None`` if it can."""
    if not isinstance(name, str):
        return f"a name must be a string, not {type(name).__name__}"
    if name in ("", ".", ".."):
        return "not a folder name"
    if "\x00" in name:
        return "a NUL byte in a name"
    if "/" in name or "\\" in name:
        return "a name cannot hold a path separator"
    if name.startswith("."):
        return "hidden names are reserved for stepline's own files"
    return None


def _shown(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"
