"""The trust store: public keys whose signatures are trusted, and root digests trusted one by one.

It is ``trust.json`` in the config folder (:func:`stepline.trust.keys.config_home`)::

    {"format": "stepline-trust-store", "keys": {"<64 hex>": {"label": ..., "added": ...}},
     "digests": {"<root digest>": {"path": ..., "added": ...}}}

This user's own public key is always trusted. Writes are atomic (temp file + rename)
and serialized by a lock file, so concurrent ``stepline trust`` calls lose nothing.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import re
from datetime import datetime, timezone
from pathlib import Path

from stepline.saving.safe_open import replace_with
from stepline.trust.errors import TrustConfigError
from stepline.trust.keys import config_home, existing_public_key_hex, read_config_file

STORE_NAME = "trust.json"
_FORMAT = "stepline-trust-store"
_HEX = re.compile(r"[0-9a-f]{64}")
_extra_keys: contextvars.ContextVar[frozenset] = contextvars.ContextVar("stepline_extra_keys", default=frozenset())


def store_path() -> Path:
    return config_home() / STORE_NAME


def read_store() -> dict:
    """The trust store as a dict (empty when there is none yet).

    Raises :class:`~stepline.trust.errors.TrustConfigError` (a ``RuntimeError``) naming the
    file when it is unreadable, garbage, not a regular file, or writable by other users: a
    broken store must not silently trust nothing (or everything), nor hang.
    """
    path = store_path()
    try:
        data = json.loads(read_config_file(path, "stepline trust store").decode("utf-8"))
    except FileNotFoundError:
        return {"format": _FORMAT, "keys": {}, "digests": {}}
    except (ValueError, RecursionError) as e:  # (UnicodeDecodeError and JSONDecodeError are ValueErrors)
        raise TrustConfigError(f"{path}: cannot read the stepline trust store ({type(e).__name__}: "
                               f"{str(e)[:200]})") from e
    if not (isinstance(data, dict) and data.get("format") == _FORMAT and isinstance(data.get("keys"), dict)
            and isinstance(data.get("digests"), dict)):
        raise TrustConfigError(f"{path}: not a stepline trust store")
    return data


def trusted_keys() -> set[str]:
    """Hex public keys whose signatures make a dump trusted: this user's, the store's, and
    those of an enclosing :func:`trusting_keys`."""
    own = existing_public_key_hex()
    return {*([own] if own else []), *read_store()["keys"], *_extra_keys.get()}


def is_trusted_digest(root_digest: str) -> bool:
    return root_digest in read_store()["digests"]


def add_key(public_key: bytes, label: str = "") -> str:
    """Trust signatures made with ``public_key`` (32 raw bytes); return its hex form."""
    if len(public_key) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, not {len(public_key)}")
    hex_key = public_key.hex()
    _update(lambda store: store["keys"].setdefault(hex_key, {"label": label, "added": _now()}))
    return hex_key


def add_digest(root_digest: str, path: str = "") -> None:
    """Trust the one dump whose root digest is ``root_digest``."""
    if not _HEX.fullmatch(root_digest):
        raise ValueError(f"a root digest is 64 hex digits, not {root_digest!r}")
    _update(lambda store: store["digests"].setdefault(root_digest, {"path": path, "added": _now()}))


@contextlib.contextmanager
def trusting_keys(public_keys):
    """Also trust signatures by ``public_keys`` (hex) inside the ``with`` block.

    For processes that load what a parent just saved (Dask workers on other machines):
    the parent passes its own public key over the channel that already carries its code.
    """
    keys = frozenset(k for k in public_keys if k)
    bad = [k for k in keys if not _HEX.fullmatch(k)]
    if bad:
        raise ValueError(f"not hex Ed25519 public keys: {bad}")
    token = _extra_keys.set(_extra_keys.get() | keys)
    try:
        yield
    finally:
        _extra_keys.reset(token)


def _update(change) -> None:
    path = store_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked(path.parent / f".{STORE_NAME}.lock"):
        store = read_store()
        change(store)
        replace_with(path, (json.dumps(store, indent=2, sort_keys=True) + "\n").encode("utf-8"), mode=0o644)


@contextlib.contextmanager
def _locked(lock_path: Path):
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock, writes stay atomic
        yield
        return
    with open(lock_path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
