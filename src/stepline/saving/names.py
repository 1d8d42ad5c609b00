"""Step names as a save checks them: each one a safe folder name, unique among siblings.

``step.name = ...`` bypasses ``set_name``, so a save checks every name of the tree again
before it writes anything: a name that is not one folder inside the dump (``..``, a
separator, hidden, a NUL), a reserved file name, one longer than the file system allows
or one a sibling already has is a :class:`SaveError` naming the step and its folder.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from stepline.core.errors import InvalidStepNameError
from stepline.core.naming import validate_name

from .errors import SaveError
from .manifest import MANIFEST_NAME, SIGNATURE_NAME, is_safe_component

#: Longest name in bytes: NAME_MAX (255) less what the hidden siblings of a save add
#: (``.<name>.tmp-<8 hex>``).
MAX_NAME_BYTES = 255 - len("..tmp-") - 8
_RESERVED = {MANIFEST_NAME, SIGNATURE_NAME, "step.pkl"}
_BUFFER = re.compile(r"buffer-\d{3,}\.bin")


def check_tree_names(step, folder) -> int:
    """Raise :class:`SaveError` unless every step name in the tree of ``step`` is valid;
    return how many steps the tree holds."""
    check_name(step, folder)
    return 1 + _check_children(step, os.fspath(folder))


def _check_children(step, folder: str) -> int:
    seen = {}
    below = 0
    for child in step.get_children():
        name = child.name
        if name not in _CHECKED:
            check_name(child, os.path.join(folder, str(name)))
        if name in seen:
            raise SaveError(f"{folder}: two children of step {step.name!r} are named {name!r} "
                            f"(steps {seen[name]} and {len(seen) + 1}): one would overwrite the "
                            f"other; give one another name with set_name()")
        seen[name] = len(seen) + 1
        below += 1
        if child.get_children():  # (a leaf needs no folder string: most steps of a big pipeline are)
            below += _check_children(child, os.path.join(folder, name))
    return below


def check_name(step, folder) -> None:
    """Raise :class:`SaveError` unless ``step.name`` can name the folder ``folder``."""
    name = step.name
    reason = _problem(name)
    if reason:
        raise SaveError(f"{folder}: cannot save step {name!r} ({type(step).__name__}): {reason}")
    if isinstance(name, str) and len(_CHECKED) < 100_000:
        _CHECKED.add(name)


#: Names already found valid (the check is a pure function of the name).
_CHECKED: set = set()


def _problem(name) -> str | None:
    try:
        validate_name(name)
    except InvalidStepNameError as e:
        return str(e)
    if not is_safe_component(name) or name in ("..", "."):
        return "the name is not a single folder name inside the dump"
    if name in _RESERVED or _BUFFER.fullmatch(name):
        return f"{name!r} is the name of a file a step folder holds"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        return (f"the name is {len(name.encode('utf-8', 'surrogateescape'))} bytes long; the file system "
                f"allows {MAX_NAME_BYTES} for a step folder")
    return None
