"""The signature of a dump: ``stepline.sig`` in its root step folder, over the root digest.

The root digest identifies the whole dump (the root manifest lists its children with the
digests of their manifests, and every manifest lists its files with their digests), so one
Ed25519 signature over it covers every byte that matters. The file is JSON::

    {"format": "stepline-signature", "format_version": 1, "algorithm": "ed25519",
     "root_digest": "<hex>", "public_key": "<64 hex>", "signature": "<128 hex>"}

It is not listed in the manifest (it signs the manifest) and it is written inside the
staged folder of a save, right before the atomic swap, so a dump and its signature
appear together.
"""
from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from stepline.saving.errors import StepLoadError

from stepline.saving.manifest import SIGNATURE_NAME
from stepline.saving.safe_open import create_new, replace_with

_FORMAT = "stepline-signature"
_MESSAGE_PREFIX = b"stepline-dump-root-digest-v1\0"
_MAX_BYTES = 1 << 16
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")


@dataclass(frozen=True)
class Verdict:
    """Whether a dump is trusted, and why."""

    trusted: bool
    reason: str
    root_digest: str | None = None
    signer: str | None = None  # hex public key of a signature that matches the dump
    signature: str = "missing"  # "missing", "valid", "mismatch" or "malformed"


def root_digest(step_folder) -> str:
    """The hex digest that identifies the dump whose root step folder is ``step_folder``."""
    from stepline.saving import manifest
    folder = Path(step_folder)
    if manifest.read_manifest(folder).get("format_version", 1) >= 2:
        return manifest.root_digest(folder)  # the Merkle root: children listed with their digests
    return _v1_tree_digest(folder, 0)


def _v1_tree_digest(folder: Path, depth: int) -> str:
    """A format v1 manifest does not cover its children: BLAKE3 over it and theirs."""
    import blake3

    from stepline.saving.manifest import MANIFEST_NAME, child_entries, read_manifest
    if depth > 64:
        raise StepLoadError(f"{folder}: the step tree is deeper than 64 levels")
    data = read_manifest(folder)
    digest = blake3.blake3((folder / MANIFEST_NAME).read_bytes())
    for child, _ in child_entries(data, folder):
        digest.update(b"\0" + child.encode() + b"\0" + _v1_tree_digest(folder / child, depth + 1).encode())
    return digest.hexdigest()


def sign_dump(step_folder, digest: str | None = None, staged: bool = False) -> dict:
    """Sign the dump in ``step_folder`` with this user's key; write and return the signature.

    ``digest``: its root digest, when the caller has it (a save: of the manifest it wrote).
    ``staged``: the folder is a save's staged dump, which holds no signature yet and becomes
    the dump only as a whole: the file is created in place (no temporary file to rename)."""
    from stepline.trust.keys import signing_key
    digest = digest or root_digest(step_folder)
    key = signing_key()
    record = {"format": _FORMAT, "format_version": 1, "algorithm": "ed25519", "root_digest": digest,
              "public_key": _public_hex(key), "signature": _signature(key, digest)}
    text = _signature_text(record).encode("utf-8")
    folder = os.fspath(step_folder)
    (create_new if staged else replace_with)(os.path.join(folder, SIGNATURE_NAME), text)
    return record


def _signature(key, digest: str) -> str:
    """``key``'s Ed25519 signature of the root ``digest``, as hex. Ed25519 signatures are
    deterministic, so the last ones made are remembered: a pipeline saved again unchanged
    (the same manifests, within the second its ``created`` time records) is not signed again."""
    known = _SIGNED.get(digest)
    if known is not None and known[0] is key:
        return known[1]
    signature = key.sign(_message(digest)).hex()
    if len(_SIGNED) >= 64:
        _SIGNED.clear()
    _SIGNED[digest] = (key, signature)
    return signature


_SIGNED: dict = {}  # root digest -> (the key that signed it, the signature as hex)


def _public_hex(key) -> str:
    """The public key of ``key`` as hex (derived once per key: a save signs every dump)."""
    known = _PUBLIC_HEX.get(id(key))
    if known is None or known[0] is not key:
        from stepline.trust.keys import public_key_bytes
        known = _PUBLIC_HEX[id(key)] = (key, public_key_bytes(key).hex())
    return known[1]


_PUBLIC_HEX: dict = {}  # id(private key) -> (the key, its public key as hex)


def _signature_text(record: dict) -> str:
    """``json.dumps(record, indent=2) + "\\n"``; its values are plain ASCII (hex digests and names),
    so the C encoder writes each of them (``indent`` alone would switch json to Python)."""
    encode = json.encoder.encode_basestring_ascii
    fields = ",\n".join(f"  {encode(k)}: {encode(v) if isinstance(v, str) else json.dumps(v)}" for k, v in record.items())
    return "{\n" + fields + "\n}\n"


def verify_dump(step_folder, digest: str | None = None) -> Verdict:
    """Decide whether the dump in ``step_folder`` is trusted; unpickles nothing.

    Trusted when its signature matches its root digest and was made by a trusted key, or
    when its root digest is in the trust store. Raises :class:`StepLoadError` subclasses
    only for a dump whose manifests cannot be read at all. ``digest``: the root digest of a
    format-v2 dump, when the caller has read its root manifest (a load: of the bytes it uses).
    """
    from stepline.trust import store
    digest = digest or root_digest(step_folder)
    record, problem = _read_signature(Path(step_folder) / SIGNATURE_NAME)
    state, signer = "missing", None
    if record is not None:
        state = _check(record, digest)
        signer = record["public_key"] if state == "valid" else None
    if signer and signer in store.trusted_keys():
        return Verdict(True, f"signed by trusted key {signer[:16]}…", digest, signer, state)
    if store.is_trusted_digest(digest):
        return Verdict(True, "root digest in the trust store", digest, signer, state)
    if state == "valid":
        reason = f"signed by unknown key {signer[:16]}… (trust it with stepline trust --key FILE)"
    elif state == "mismatch":
        reason = "the signature does not match: a file or manifest changed after signing"
    else:
        reason = problem or "no signature"
    return Verdict(False, reason, digest, signer, state)


def _message(digest: str) -> bytes:
    return _MESSAGE_PREFIX + digest.encode("ascii")


def _check(record: dict, digest: str) -> str:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    if record["root_digest"] != digest:
        return "mismatch"
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(record["public_key"]))
        key.verify(bytes.fromhex(record["signature"]), _message(digest))
    except InvalidSignature:
        return "mismatch"
    except ValueError:
        return "malformed"
    return "valid"


def _read_signature(path: Path) -> tuple[dict | None, str | None]:
    """The signature record at ``path``, or ``(None, why not)``; never follows a link or
    blocks on a FIFO, never reads more than 64 KiB."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None, "no signature"
    except OSError as e:
        return None, f"{path}: unreadable signature ({e.strerror or e})"
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None, f"{path}: the signature is not a regular file"
        data = f.read(_MAX_BYTES + 1)
    try:
        record = json.loads(data.decode("utf-8")) if len(data) <= _MAX_BYTES else None
    except (UnicodeDecodeError, ValueError):
        record = None
    if not (isinstance(record, dict) and record.get("format") == _FORMAT and record.get("algorithm") == "ed25519"
            and isinstance(record.get("root_digest"), str)
            and isinstance(record.get("public_key"), str) and _HEX64.fullmatch(record["public_key"])
            and isinstance(record.get("signature"), str) and _HEX128.fullmatch(record["signature"])):
        return None, f"{path}: malformed signature file"
    return record, None


__all__ = ["SIGNATURE_NAME", "Verdict", "root_digest", "sign_dump", "verify_dump", "StepLoadError"]
