"""Short, unambiguous names for the flat keys of a space (Neuraxle's ``to_wildcards``).

Each key ``a__b__q__c`` gets the shortest of these forms that matches no other key:

- ``*c``: the last name, one or more levels below the root;
- ``*q__c`` / ``q__c``: an ancestor right above it (``q__c`` when that ancestor is the root);
- ``*b*c`` / ``b*c``: an ancestor further up, one or more levels between them.

Ancestors are tried nearest first; a key no form singles out keeps its full name. In a
form, ``*`` stands for one or more levels and ``__`` joins adjacent levels.
"""
from __future__ import annotations

from stepline.hyperparams.space import SEPARATOR


def to_wildcards(flat: dict) -> dict:
    """``{wildcard: value}`` for a flat ``{key: value}`` mapping, in the same order."""
    paths = [key.split(SEPARATOR) for key in flat]
    out = {}
    for key, parts in zip(flat, paths):
        out[_shortest(parts, paths)] = flat[key]
    return out


def _shortest(parts: list, paths: list) -> str:
    others = [p for p in paths if p != parts]
    last = len(parts) - 1
    if last == 0:
        return parts[0]
    forms = [(None, "*" + parts[-1])]
    for i in range(last - 1, -1, -1):
        lead = "*" if i > 0 else ""
        join = SEPARATOR if i == last - 1 else "*"
        forms.append((i, f"{lead}{parts[i]}{join}{parts[-1]}"))
    for i, text in forms:
        if not any(_matches(other, parts, i) for other in others):
            return text
    return SEPARATOR.join(parts)


def _matches(other: list, parts: list, i) -> bool:
    """Whether ``other`` fits the form built from ``parts`` with ancestor index ``i``."""
    if other[-1] != parts[-1]:
        return False
    if i is None:
        return len(other) >= 2
    name, last = parts[i], len(parts) - 1
    if i == last - 1:  # adjacent ancestor
        return len(other) >= 2 and other[-2] == name and ((len(other) >= 3) if i > 0 else len(other) == 2)
    # an ancestor one or more levels above the last name's parent
    positions = range(1 if i > 0 else 0, len(other) - 2)
    return any(other[j] == name for j in positions) if i > 0 else (len(other) >= 3 and other[0] == name)
