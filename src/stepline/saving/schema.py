"""The shape of a manifest: each field's type, checked before anything uses it.

A manifest that parses as JSON can still hold ``"children": 7`` or ``"versions": "3.11"``;
:func:`check_manifest_fields` turns every such field into a :class:`ManifestError` naming
the manifest, the field and what was expected, so no code further on meets a raw
``AttributeError`` or ``KeyError``.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import ManifestError
from .inline import INLINE_FIELD, check_inline_field

#: field -> what it must be (for the messages)
_EXPECTED = {
    "files": "an object {file name: record}",
    "name": "a string", "class": "a string", "created": "a string", "stripped_saver": "a string",
    "savers": "a list of class names",
    "hyperparams": "an object", "hyperparams_space": "an object", "info": "an object",
    "versions": "an object {package: version string}",
}
_STRINGS = ("name", "class", "created", "stripped_saver")
_OBJECTS = ("hyperparams", "hyperparams_space", "info")
_ABSENT = object()
_EMPTY: dict = {}
_LAST_VERSIONS: list = [{}]  # the last versions found valid


def check_manifest_fields(path: Path, data: dict) -> None:
    """Raise :class:`ManifestError` unless every known field of ``data`` has its type.

    One pass of direct type checks (a load runs this once per step; the manifest came from
    ``json.loads``, so its types are exact)."""
    files = data.get("files", _ABSENT)
    if files is _ABSENT:
        raise ManifestError(f"{path}: the manifest has no 'files' field: it is incomplete or "
                            f"was not written by stepline")
    if type(files) is not dict:
        _wrong(path, "files", files)
    for field in _STRINGS:
        value = data.get(field, "")
        if type(value) is not str:
            _wrong(path, field, value)
    for field in _OBJECTS:
        value = data.get(field, _EMPTY)
        if type(value) is not dict:
            _wrong(path, field, value)
    savers = data.get("savers", _ABSENT)
    if savers is not _ABSENT and not (type(savers) is list and all(type(s) is str for s in savers)):
        _wrong(path, "savers", savers)
    versions = data.get("versions", _EMPTY)
    if versions != _LAST_VERSIONS[0]:  # (every manifest of a dump records the same versions)
        if not (type(versions) is dict and all(type(v) is str or v is None for v in versions.values())):
            _wrong(path, "versions", versions)
        _LAST_VERSIONS[0] = versions
    if data.get("children"):
        from .manifest import child_entries
        child_entries(data, os.path.dirname(path))  # a list of safe, distinct names (with their digests in v2)
    elif "children" in data and type(data["children"]) is not list:
        raise ManifestError(f"{path}: 'children' must be a list, not {type(data['children']).__name__}")
    if INLINE_FIELD in data:
        if data["format_version"] < 3:
            raise ManifestError(f"{path}: field {INLINE_FIELD!r} in a format {data['format_version']} manifest "
                                f"(inline payloads came with format 3): it was edited or corrupted")
        check_inline_field(path, data[INLINE_FIELD], files)


def _wrong(path, field: str, value) -> None:
    raise ManifestError(f"{path}: field {field!r} must be {_EXPECTED[field]}, not {_shown(value)}")


def _shown(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"
