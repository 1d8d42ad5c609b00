"""The local Ed25519 signing key, created on first use under the user's config folder.

The config folder is ``$STEPLINE_HOME`` if set, else ``$XDG_CONFIG_HOME/stepline``, else
``~/.config/stepline``. It holds ``signing_key.pem`` (the private key, PKCS#8, mode 0600)
and ``signing_key.pub`` (the public key, PEM, to share with a team).
"""
from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path

PRIVATE_NAME = "signing_key.pem"
PUBLIC_NAME = "signing_key.pub"
_lock = threading.Lock()
_cache: dict[Path, object] = {}


def config_home() -> Path:
    """The folder that holds the keys and the trust store (see the module doc)."""
    global _home
    environ = os.environ
    spelled = (environ.get("STEPLINE_HOME"), environ.get("XDG_CONFIG_HOME"), environ.get("HOME"))
    known, home = _home
    if known != spelled:  # (every save signs its dump: the path is built again only if these change)
        home = _config_home()
        _home = (spelled, home)
    return home


def _config_home() -> Path:
    if os.environ.get("STEPLINE_HOME"):
        return Path(os.environ["STEPLINE_HOME"]).expanduser()
    if os.environ.get("XDG_CONFIG_HOME"):
        return Path(os.environ["XDG_CONFIG_HOME"]).expanduser() / "stepline"
    return Path.home() / ".config" / "stepline"


_home: tuple = (None, None)  # ((STEPLINE_HOME, XDG_CONFIG_HOME, HOME) as last seen, the folder they gave)


def signing_key():
    """This user's private key (an ``Ed25519PrivateKey``), created on first use."""
    home = config_home()
    with _lock:
        key = _cache.get(home)
        if key is None:
            key = _cache[home] = _load_or_create(home)
        return key


def stat_cache_key() -> bytes | None:
    """32 secret bytes that authenticate the stat caches this user writes (derived from the
    signing key, BLAKE3 ``derive_key``), or ``None`` where there is no key yet (never creates
    one). A stat cache lives in the dump; without this key whoever writes there could make
    it vouch for bytes nobody hashed (see :mod:`stepline.saving.integrity`)."""
    home = config_home()
    with _lock:
        key = _cache.get(home)
    if key is None:
        if not (home / PRIVATE_NAME).exists():
            return None
        key = signing_key()
    derived = _derived.get(home)
    if derived is None or derived[0] is not key:
        from cryptography.hazmat.primitives import serialization
        import blake3
        seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
        derived = _derived[home] = (key, blake3.blake3(seed, derive_key_context=_CACHE_KEY_CONTEXT).digest())
    return derived[1]


_CACHE_KEY_CONTEXT = "stepline 2026-12-01 stat cache authentication v1"
_derived: dict[Path, tuple] = {}


def public_key_bytes(key=None) -> bytes:
    """The 32 raw bytes of a public key (by default this user's)."""
    from cryptography.hazmat.primitives import serialization
    key = signing_key() if key is None else key
    public = key.public_key() if hasattr(key, "public_key") else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def local_public_key_hex() -> str:
    """This user's public key as 64 hex digits (the form signatures and the trust store use)."""
    return public_key_bytes().hex()


def existing_public_key_hex() -> str | None:
    """This user's public key as hex if a key exists already; never creates one (a load
    on a fresh machine must not leave a key behind)."""
    home = config_home()
    if home not in _cache and not (home / PRIVATE_NAME).exists():
        return None
    return local_public_key_hex()


def read_public_key_file(path) -> bytes:
    """The raw public key in ``path``: a PEM public key, or 64 hex digits.

    Raises ``ValueError`` naming the file when it holds neither.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    data = Path(path).read_bytes()[:1 << 16]
    text = data.decode("ascii", "replace").strip()
    if len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text):
        return bytes.fromhex(text)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as e:
        raise ValueError(f"{path}: not a public key (expected a PEM Ed25519 public key or 64 hex digits)") from e
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: a {type(key).__name__}, not an Ed25519 public key")
    return public_key_bytes(key)


def _load_or_create(home: Path):
    path = home / PRIVATE_NAME
    if not path.exists():
        try:
            _create(home)
        except OSError as e:
            from stepline.saving.errors import SaveError
            raise SaveError(f"{home}: cannot create the stepline signing key ({e.strerror or e}); every save "
                            f"signs its dump: set STEPLINE_HOME to a writable folder") from e
    return _load(path)


def _load(path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise RuntimeError(f"{path}: cannot read the stepline signing key ({e}); move it away to "
                           f"create a new one") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise RuntimeError(f"{path}: not an Ed25519 private key")
    return key


def _create(home: Path) -> None:
    """Write a new key pair; when another process wins the race, its key is kept."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    tmp = home / f".{PRIVATE_NAME}.tmp-{secrets.token_hex(4)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private)
        try:
            os.link(tmp, home / PRIVATE_NAME)  # fails if another process created one meanwhile
        except FileExistsError:
            return
    finally:
        tmp.unlink(missing_ok=True)
    pub_tmp = home / f".{PUBLIC_NAME}.tmp-{secrets.token_hex(4)}"
    pub_tmp.write_bytes(public)
    os.replace(pub_tmp, home / PUBLIC_NAME)
