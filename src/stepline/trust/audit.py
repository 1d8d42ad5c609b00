"""The globals a pickle needs, read from its opcodes without running anything.

:func:`pickle_globals` walks the opcodes with :func:`pickletools.genops` and keeps a
symbolic stack (strings and memo slots only), so that ``STACK_GLOBAL`` (protocol 4+)
names are recovered even when they come through the memo. A ``STACK_GLOBAL`` whose
module or name is not a literal string (computed by an earlier call), an extension-registry
code (``EXT1``/``EXT2``/``EXT4``) or a persistent id is reported as such: none of them can
be checked against an allow-list, so an untrusted load refuses them.
"""
from __future__ import annotations

import os
import pickletools
import stat
from dataclasses import dataclass, field

_STRINGS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
            "BINUNICODE8"}
_GETS = {"GET", "BINGET", "LONG_BINGET"}
_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
COMPUTED = "STACK_GLOBAL with a computed module or name"


class _Unknown:
    __slots__ = ()


_UNKNOWN = _Unknown()
_MARK = object()


@dataclass
class PickleAudit:
    """What one pickle needs: ``globals`` (``"module.name"``, in first-use order) and
    ``unresolvable`` (descriptions of what cannot be named: computed names, extension codes,
    persistent ids, a malformed stream)."""

    globals: list[str] = field(default_factory=list)
    unresolvable: list[str] = field(default_factory=list)


def read_regular_file(path) -> bytes:
    """The bytes of ``path``; a link, FIFO or device is refused (never followed, never blocks)."""
    from stepline.saving.errors import CorruptFileError, MissingFileError
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError as e:
        raise MissingFileError(f"{path}: missing") from e
    except OSError as e:
        raise CorruptFileError(f"{path}: cannot open ({e.strerror or e}); a link is never followed") from e
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise CorruptFileError(f"{path}: not a regular file")
        return f.read()


def pickle_globals(data: bytes) -> PickleAudit:
    """Audit one pickle stream (see the module doc); never raises on malformed input."""
    audit, stack, memo = PickleAudit(), [], {}
    seen = set()

    def need(module, name):
        if isinstance(module, str) and isinstance(name, str):
            qualified = f"{module}.{name}"
            if qualified not in seen:
                seen.add(qualified)
                audit.globals.append(qualified)
        elif COMPUTED not in audit.unresolvable:
            audit.unresolvable.append(COMPUTED)

    try:
        for opcode, arg, _ in pickletools.genops(data):
            _step(opcode, arg, stack, memo, need, audit)
    except Exception as e:  # genops raises ValueError & co on a malformed stream
        audit.unresolvable.append(f"malformed pickle ({type(e).__name__}: {e})")
    return audit


def _step(opcode, arg, stack: list, memo: dict, need, audit: PickleAudit) -> None:
    name = opcode.name
    if name in _STRINGS:
        stack.append(arg)
    elif name == "MARK":
        stack.append(_MARK)
    elif name == "MEMOIZE":
        memo[len(memo)] = stack[-1] if stack else _UNKNOWN
    elif name in _PUTS:
        memo[arg] = stack[-1] if stack else _UNKNOWN
    elif name in _GETS:
        stack.append(memo.get(arg, _UNKNOWN))
    elif name == "DUP":
        stack.append(stack[-1] if stack else _UNKNOWN)
    elif name in ("GLOBAL", "INST"):
        module, _, attr = arg.partition(" ")
        need(module, attr)
        _generic(opcode, stack)
    elif name == "STACK_GLOBAL":
        attr = stack.pop() if stack else _UNKNOWN
        module = stack.pop() if stack else _UNKNOWN
        need(module, attr)
        stack.append(_UNKNOWN)
    elif name in ("EXT1", "EXT2", "EXT4"):
        audit.unresolvable.append(f"extension-registry code {arg} ({name})")
        stack.append(_UNKNOWN)
    elif name in ("PERSID", "BINPERSID"):
        audit.unresolvable.append(f"persistent id ({name})")
        _generic(opcode, stack)
    else:
        _generic(opcode, stack)


def _generic(opcode, stack: list) -> None:
    """Apply an opcode's documented stack effect, with unknown values for its results."""
    before = opcode.stack_before
    if pickletools.markobject in before:
        while stack and stack.pop() is not _MARK:
            pass
        below = before.index(pickletools.markobject)
    else:
        below = len(before)
    for _ in range(min(below, len(stack))):
        stack.pop()
    stack.extend(_UNKNOWN for _ in opcode.stack_after)
