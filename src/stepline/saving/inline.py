"""Small payloads kept inside their step's manifest instead of a file of their own (format v3).

A tiny step's stripped pickle (under :data:`INLINE_MAX_BYTES`) is written into its manifest's
``inline`` field, ``{"step.pkl": {"size", "blake3", "base64", …}}``, rather than to a
``step.pkl`` beside it: one file created per step on save and one opened on load, not two.
The bytes are covered twice: by the manifest's digest (its own, and the one its parent
lists), and by their own size and BLAKE3, checked after decoding and before anything reads
them. Every reader of a step's pickle — the load, the trust gate's audit, ``stepline
inspect`` and ``verify`` — gets its bytes through :func:`stream_bytes`, so an inline pickle
meets exactly the checks a ``step.pkl`` file does.
"""
from __future__ import annotations

import binascii
import os
import re

import blake3

from .errors import CorruptFileError, ManifestError

#: The manifest field holding inline payloads, and the record field holding their bytes.
INLINE_FIELD = "inline"
ENCODING = "base64"
#: Pickles smaller than this go inline. Measured on this project's 2-core VM (ext4): creating,
#: writing and closing a small file costs 70–200 µs; base64 + JSON + BLAKE3 of a payload costs
#: about 1 µs per KiB to save and 2 µs per KiB to load. So inline wins a save up to ~64 KiB
#: and a save + load round trip up to ~32 KiB; 16 KiB keeps a load's extra cost under ~30 µs.
INLINE_MAX_BYTES = 16 << 10


def encode_record(data, record: dict) -> dict:
    """The inline record of the payload ``data``: ``record`` (its size, BLAKE3 and any other
    field its writer reported) plus its bytes, base64."""
    inline = {k: v for k, v in record.items() if k != "inline"}
    inline[ENCODING] = binascii.b2a_base64(data, newline=False).decode("ascii")
    return inline


def label(folder, name: str) -> str:
    """How messages name an inline payload: where its file would be, and where it is."""
    return f"{os.path.join(folder, name)} (inline in stepline.json)"


class Label:
    """:func:`label`, spelled only if a message needs it (a load names every step's pickle)."""

    __slots__ = ("folder", "name")

    def __init__(self, folder, name: str):
        self.folder, self.name = folder, name

    def __str__(self) -> str:
        return label(self.folder, self.name)

    __repr__ = __fspath__ = __str__


def check_inline_field(where: str, inline, files: dict) -> None:
    """Raise :class:`ManifestError` unless ``inline`` is ``{name: {"size": int, "blake3": hex,
    "base64": str}}`` whose names are safe and not also listed as files.

    Direct checks, once per manifest (a load runs this for every step): a digest of the right
    length that is not hex simply never matches the payload's (:func:`decode`)."""
    if type(inline) is not dict:
        raise ManifestError(f"{where}: field {INLINE_FIELD!r} must be an object {{name: record}}, "
                            f"not {type(inline).__name__}")
    for name, record in inline.items():
        if not (type(record) is dict and type(record.get("size")) is int and record["size"] >= 0
                and type(record.get("blake3")) is str and len(record["blake3"]) == 64
                and type(record.get(ENCODING)) is str):
            raise ManifestError(f"{where}: malformed record for {name!r} in {INLINE_FIELD!r} (expected "
                                f"{{'size': int, 'blake3': 64 hex digits, 'base64': str}})")
        if name in files:
            raise ManifestError(f"{where}: {name!r} is listed both as a file and inline: this is not "
                                f"a manifest stepline wrote")
        if not _SAFE_NAME.fullmatch(name):
            raise ManifestError(f"{where}: invalid inline payload name {name!r} in {INLINE_FIELD!r}")
        if "python" in record or "by_value" in record:
            _check_code_fields(where, name, record)


_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _check_code_fields(where: str, name: str, record: dict) -> None:
    """The fields of a record that holds code pickled by value (as a file's record has them)."""
    from .integrity import check_records
    check_records({name: {k: v for k, v in record.items() if k != ENCODING}}, os.path.dirname(where))


def stream_record(manifest: dict, name: str) -> dict | None:
    """The record of the payload ``name`` (a file's or an inline one's), or ``None``."""
    record = manifest.get("files", {}).get(name)
    return record if record is not None else manifest.get(INLINE_FIELD, {}).get(name)


def is_inline(manifest: dict, name: str) -> bool:
    return name in manifest.get(INLINE_FIELD, ())


def decode(folder, name: str, record: dict) -> bytes:
    """The bytes of the inline payload ``name`` of the step at ``folder``, checked against
    its size and BLAKE3 (:class:`ManifestError` if not base64, :class:`CorruptFileError` if
    they differ): nothing reads them before that."""
    try:
        raw = binascii.a2b_base64(record[ENCODING], strict_mode=True)
    except (binascii.Error, ValueError) as e:
        raise ManifestError(f"{label(folder, name)}: the payload is not base64 ({e}): the manifest "
                            f"was edited or corrupted") from e
    if len(raw) != record["size"]:
        raise CorruptFileError(f"{label(folder, name)}: size {len(raw)} bytes, the record says "
                               f"{record['size']}: the payload was modified")
    actual = blake3.blake3(raw).hexdigest()  # (one thread: an inline payload is small)
    if actual != record["blake3"]:
        raise CorruptFileError(f"{label(folder, name)}: BLAKE3 mismatch (record {record['blake3'][:12]}…, "
                               f"payload {actual[:12]}…): the payload was modified or corrupted")
    return raw


def stream_bytes(folder, manifest: dict, name: str) -> tuple[str, bytes] | None:
    """``(label, bytes)`` of the inline payload ``name`` of a checked manifest, decoded and
    verified; ``None`` when it is a file (or absent)."""
    record = manifest.get(INLINE_FIELD, {}).get(name)
    if record is None:
        return None
    return label(folder, name), decode(folder, name, record)


def step_pickle(folder, manifest: dict, read_file, name: str = "step.pkl") -> tuple[str, bytes] | None:
    """``(label, bytes)`` of the pickle ``name`` of the step at ``folder`` (its manifest
    checked): inline, decoded and verified; or a file, read by ``read_file(path)`` (``None``
    leaves files unread: ``(path, None)``); ``None`` when the step has none."""
    inline = stream_bytes(folder, manifest, name)
    if inline is not None or name not in manifest.get("files", {}):
        return inline
    path = os.path.join(folder, name)
    return path, (read_file(path) if read_file is not None else None)
