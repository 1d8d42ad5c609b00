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

#: field -> (required, what it must be, check)
_FIELDS = {
    "name": (False, "a string", lambda v: isinstance(v, str)),
    "class": (False, "a string", lambda v: isinstance(v, str)),
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
    from .manifest import child_entries
    child_entries(data, os.path.dirname(path))  # a list of safe, distinct names (with their digests in v2)
    if INLINE_FIELD in data:
        if data["format_version"] < 3:
            raise ManifestError(f"{path}: field {INLINE_FIELD!r} in a format {data['format_version']} manifest "
                                f"(inline payloads came with format 3): it was edited or corrupted")
        check_inline_field(path, data[INLINE_FIELD], data["files"])


def _shown(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"
