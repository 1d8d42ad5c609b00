"""What ``stepline inspect --audit`` and ``stepline verify`` print; nothing here unpickles."""
from __future__ import annotations

from pathlib import Path

from stepline.saving.errors import ManifestError, StepLoadError
from stepline.saving.inline import step_pickle
from stepline.saving.manifest import child_entries, read_manifest
from stepline.trust.audit import pickle_globals, read_regular_file
from stepline.trust.gate import MAX_DEPTH

STREAM_NAME = "step.pkl"


def audit_lines(path) -> list[str]:
    """For every pickle of the dump at ``path``: the globals it needs, each marked allowed or
    REFUSED for an untrusted load, read from the opcodes without running anything."""
    from stepline.trust import allowlist
    lines = [f"globals the pickles of {path} need (read from their opcodes, nothing run):"]
    for folder, manifest in _step_folders(Path(path)):
        stream = step_pickle(folder, manifest, read_regular_file)
        if stream is None:
            continue
        where, data = stream
        audit = pickle_globals(data)
        lines.append(f"{where}:")
        for name in audit.globals:
            mark = "allowed" if allowlist.is_allowed(*name.rsplit(".", 1)) else "REFUSED"
            lines.append(f"    {mark:8} {name}")
        lines.extend(f"    REFUSED  {what}" for what in audit.unresolvable)
    return lines


def _step_folders(root: Path, depth: int = 0):
    """``(folder, manifest)`` of each step under ``root``, parents first, checked against their
    parents' digests (format v2)."""
    pending = [(root, None, 0)]
    while pending:
        folder, expected, depth = pending.pop()
        manifest = read_manifest(folder, expected)
        yield folder, manifest
        children = child_entries(manifest, folder)
        if children and depth >= MAX_DEPTH:  # (refused as the load refuses it, never skipped)
            raise ManifestError(f"{folder}: steps nested more than {MAX_DEPTH} deep: not a dump stepline "
                                f"loads untrusted")
        pending.extend((folder / n, d, depth + 1) for n, d in reversed(children))


def verify_lines(path) -> tuple[list[str], bool]:
    """The report of ``stepline verify PATH`` and whether the dump is intact."""
    from stepline.saving.integrity import verify_files
    from stepline.trust.gate import refused_globals
    from stepline.trust.signing import verify_dump
    root = Path(path)
    verdict = verify_dump(root)
    lines = [f"dump:        {root}", f"root digest: {verdict.root_digest}",
             f"signature:   {verdict.signature}" + (f" (signer {verdict.signer})" if verdict.signer else ""),
             f"trusted:     {'yes' if verdict.trusted else 'no'} ({verdict.reason})"]
    try:
        for folder, manifest in _step_folders(root):
            verify_files(folder, manifest.get("files", {}), "full")
            step_pickle(folder, manifest, None)  # an inline pickle: decoded, checked against its digest
        lines.append("integrity:   ok (every manifest and file matches its digest)")
        intact = True
    except StepLoadError as error:
        lines.append(f"integrity:   BROKEN: {error}")
        return lines, False
    refused = refused_globals(root, "full")
    if not refused:
        lines.append("untrusted:   would load untrusted (everything it needs is on the allow-list)")
    else:
        lines.append("untrusted:   would be refused untrusted; it needs:")
        lines += [f"    {file}: {', '.join(names)}" for file, names in refused.items()]
    return lines, intact
