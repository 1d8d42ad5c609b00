"""JSON in and out of the server: orjson where it gives the same answer, the standard library otherwise.

orjson (in the ``serve`` extra) parses a 100-row request three times faster than ``json``
and writes a NumPy array without building a list of Python numbers first (80 → 8 µs for
100×2 probabilities). Where it would read or write something differently from ``json`` —
``NaN`` and infinities (refused on input, written as ``null`` on output), a byte order
mark or UTF-16 body, lone surrogates, float32 arrays (written in float32's shortest form)
— the standard library does the job, so an answer never depends on which one is
installed. One difference is kept: orjson 3.8 reads an integer beyond 64 bits as a float.
"""
from __future__ import annotations

import json
import re

import numpy as np

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is part of the serve extra
    orjson = None

#: NumPy dtypes orjson writes exactly as ``json.dumps(array.tolist())`` does.
_EXACT_KINDS = {"b": (1,), "i": (1, 2, 4, 8), "u": (1, 2, 4, 8), "f": (8,)}


def loads(body: bytes):
    """Parse ``body``; what orjson refuses, or might nest deeper than ``json`` allows, goes to ``json``.

    ``json`` refuses nesting deeper than the interpreter's recursion limit (RecursionError),
    which keeps deep values away from code that recurses (``repr``…); some orjson releases
    have no depth limit, so it only gets bodies whose brackets nest at most
    ``FAST_DEPTH`` levels (checked at C speed; brackets inside strings can only send a
    body to ``json``, never the other way).
    """
    if orjson is not None and nests_at_most(body, FAST_DEPTH):
        try:
            return orjson.loads(body)
        except (orjson.JSONDecodeError, RecursionError):
            pass
    return json.loads(body)


FAST_DEPTH = 32
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_INNERMOST = re.compile(rb"\[\]|\{\}")


def nests_at_most(body: bytes, depth: int) -> bool:
    """Whether the brackets of ``body`` balance and nest at most ``depth`` levels (innermost pairs removed per pass)."""
    brackets = body.translate(None, _NOT_BRACKETS)
    for _ in range(depth):
        if not brackets:
            return True
        inner_removed = _INNERMOST.sub(b"", brackets)  # one level: pairs made by this pass stay
        if inner_removed == brackets:
            return False
        brackets = inner_removed
    return not brackets


def writes_exactly(array: np.ndarray) -> bool:
    """Whether :func:`dumps` may be given ``array`` itself (orjson writes it as ``json`` writes its list)."""
    if orjson is None or not array.flags.c_contiguous:
        return False
    sizes = _EXACT_KINDS.get(array.dtype.kind)
    if sizes is None or array.dtype.itemsize not in sizes or not array.dtype.isnative:
        return False
    return array.dtype.kind != "f" or bool(np.isfinite(array).all())


def jsonable(array: np.ndarray, to_list):
    """``array`` itself when orjson writes it exactly, else ``to_list(array)``."""
    return array if writes_exactly(array) else to_list(array)


def dumps(payload) -> bytes:
    """Compact JSON bytes of ``payload``, which may hold arrays :func:`writes_exactly` accepted.

    Lists of Python floats (NaN written as ``NaN``, as Python reads it) go through ``json``;
    text that UTF-8 cannot encode (a lone surrogate) is written as ``\\u`` escapes.
    """
    if orjson is not None and not _holds_floats(payload):
        try:
            return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
        except (orjson.JSONEncodeError, TypeError):
            pass
    try:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=_listed).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(payload, separators=(",", ":"), default=_listed).encode("ascii")


def _listed(value):
    """For ``json``: the arrays and NumPy scalars :func:`jsonable` left for orjson."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _holds_floats(value) -> bool:
    """Whether ``value`` holds a Python float (NaN: json writes ``NaN``, orjson ``null``)."""
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_holds_floats(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_floats(v) for v in value)
    return False
