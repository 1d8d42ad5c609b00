"""Trusted or not, decided before anything of a dump is unpickled; what an untrusted one needs.

:func:`decide` gives the :class:`~stepline.trust.signing.Verdict` of a load. For an untrusted
dump, :func:`check_untrusted` verifies every file of the steps to load against their
manifests, audits every ``step.pkl`` (a file, or inline in its manifest) from its opcodes and raises one
:class:`~stepline.trust.errors.UntrustedDumpError` listing every refused global and the
file that needs it — before any pickle is opened for loading. The pickles then go through
the restricted unpickler as well (see :mod:`stepline.trust.unpickler`).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from stepline.trust.errors import UntrustedDumpError
from stepline.trust.signing import Verdict, verify_dump

log = logging.getLogger(__name__)
STREAM_NAME = "step.pkl"
#: Deeper than stepline saves (its save recurses once per level) or loads.
MAX_DEPTH = 256


def decide(dump_root, trusted=None, root_digest: str | None = None) -> Verdict:
    """The verdict for loading from the dump whose root step folder is ``dump_root``.

    ``trusted=True`` is the caller's explicit override, ``False`` forces an untrusted load,
    ``None`` checks the signature and the trust store. ``root_digest``: of a format-v2 dump
    whose root manifest the caller read (see :func:`~stepline.trust.signing.verify_dump`).
    """
    if trusted is True:
        return Verdict(True, "trusted=True given by the caller")
    if trusted not in (None, False):
        raise ValueError(f"trusted must be None, True or False, not {trusted!r}")
    verdict = verify_dump(dump_root, root_digest)
    if trusted is False:
        return Verdict(False, "trusted=False given by the caller", verdict.root_digest, verdict.signer,
                       verdict.signature)
    if not verdict.trusted:
        log.info("%s: loading as an untrusted dump (%s)", dump_root, verdict.reason)
    return verdict


def refused_globals(folder, verify=True, verified: set | None = None, read_into=None,
                    preread: dict | None = None) -> dict[str, list[str]]:
    """``{file: [refused globals]}`` for the step tree at ``folder``, its files verified first.

    Folders verified here are added to ``verified`` so that the load does not hash them again;
    with ``read_into`` (see :func:`~stepline.saving.integrity.verify_files`) each file is read
    as it is hashed and ``preread[folder]`` keeps what was read (or how each file was found):
    the pickle audited is then the pickle hashed, and the one the load unpickles.
    """
    from stepline.saving.errors import ManifestError
    from stepline.saving.inline import step_pickle, stream_record
    from stepline.saving.integrity import verify_files
    from stepline.saving.manifest import child_entries, read_manifest
    from stepline.trust import allowlist
    from stepline.trust.audit import pickle_globals
    refused: dict[str, list[str]] = {}
    pending = [(Path(folder), None, 0)]
    while pending:
        current, expected, depth = pending.pop()
        manifest = read_manifest(current, expected)
        files = manifest.get("files", {})
        checked = verify_files(current, files, verify or True, read_into)
        if verified is not None:
            verified.add(current)
        if preread is not None:
            preread[current] = checked
        stream = step_pickle(current, manifest, lambda path: _stream_of(path, checked, files))
        if stream is not None:
            where, data = stream
            audit = pickle_globals(data)
            bad = [g for g in audit.globals if not allowlist.is_allowed(*g.rsplit(".", 1))]
            bad += audit.unresolvable
            by_value = stream_record(manifest, STREAM_NAME).get("by_value")
            if by_value:
                bad.insert(0, f"code pickled by value: {', '.join(map(str, by_value))}")
            if bad:
                refused[where] = bad
        children = child_entries(manifest, current)
        if children and depth >= MAX_DEPTH:  # (refused, never skipped: what is not audited is not loaded)
            raise ManifestError(f"{current}: steps nested more than {MAX_DEPTH} deep: not a dump stepline "
                                f"loads untrusted")
        pending.extend((current / c, d, depth + 1) for c, d in reversed(children))
    return refused


def _stream_of(path: str, checked: dict, files: dict):
    """The bytes of the pickle file at ``path`` as verified: read as it was hashed, or else read
    now from the very file that was checked, and hashed (it may have been vouched for by the
    stat cache, which lives in the dump); kept in ``checked`` for the load to unpickle."""
    from stepline.saving.objectfile import STREAM_NAME as NAME, check_stream_digest, read_checked
    found = checked.get(NAME)
    if found is None or isinstance(found, os.stat_result):
        found = checked[NAME] = read_checked(Path(path), found)
        check_stream_digest(Path(path), found, files[NAME])
    return found


def check_untrusted(folder, verdict: Verdict, verify=True, verified: set | None = None, read_into=None,
                    preread: dict | None = None) -> None:
    """Raise :class:`UntrustedDumpError` unless everything under ``folder`` is on the allow-list
    (``verified``, ``read_into``, ``preread``: see :func:`refused_globals`)."""
    refused = refused_globals(folder, verify, verified, read_into, preread)
    if refused:
        raise UntrustedDumpError(untrusted_message(folder, verdict, refused), refused)


def untrusted_message(folder, verdict: Verdict, refused: dict[str, list[str]]) -> str:
    lines = [f"{folder}: untrusted dump ({verdict.reason}); it needs globals that are not on the "
             f"allow-list, so nothing of it was unpickled:"]
    lines += [f"  {path}: {', '.join(names)}" for path, names in refused.items()]
    lines.append("If you trust whoever made it: load(..., trusted=True), or `stepline trust PATH` for this "
                 "dump, or `stepline trust --key FILE` for their key; for classes of your own, "
                 "stepline.trust.allow(...) (see docs/trust.md).")
    return "\n".join(lines)

