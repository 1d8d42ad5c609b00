"""Step names: what a valid name is, and how a pipeline makes names unique."""
from __future__ import annotations

from stepline.core.errors import DuplicateStepNameError, InvalidStepNameError

_FORBIDDEN = ("/", "\\", "\0")


def validate_name(name) -> str:
    """Return ``name`` if it can name a step (and a folder), else raise."""
    if not isinstance(name, str):
        raise InvalidStepNameError(f"a step name must be a string, got {type(name).__name__} {name!r}")
    if not name or name.strip() != name:
        raise InvalidStepNameError(f"invalid step name {name!r}: it is empty or starts/ends with spaces")
    if any(c in name for c in _FORBIDDEN):
        raise InvalidStepNameError(f"invalid step name {name!r}: a name cannot hold a path separator")
    if name.startswith(".") or "__" in name:
        raise InvalidStepNameError(
            f"invalid step name {name!r}: names cannot start with '.' or contain '__' "
            f"('__' separates steps in hyperparameter keys)")
    return name


def unique_names(steps, explicit: list[bool]) -> list[str]:
    """Names for ``steps``: explicit names must be unique; default ones get ``_1``, ``_2``…"""
    names = [s.name for s in steps]
    taken: dict[str, int] = {}
    for name, is_explicit in zip(names, explicit):
        if is_explicit:
            if name in taken:
                raise DuplicateStepNameError(
                    f"two steps of one pipeline are both named {name!r}: step names must be unique")
            taken[name] = 1
    result = []
    used = {n for n, e in zip(names, explicit) if e}
    for name, is_explicit in zip(names, explicit):
        if not is_explicit:
            candidate, i = name, 0
            while candidate in used:
                i += 1
                candidate = f"{name}_{i}"
            name = candidate
        used.add(name)
        result.append(name)
    return result
