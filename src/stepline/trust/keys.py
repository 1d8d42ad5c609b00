"""The local Ed25519 signing key, created on first use under the user's config folder.

The config folder is ``$STEPLINE_HOME`` if set, else ``$XDG_CONFIG_HOME/stepline``, else
``~/.config/stepline``. It holds ``signing_key.pem`` (the private key, PKCS#8, mode 0600)
and ``signing_key.pub`` (the public key, PEM, to share with a team).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from stepline.saving.safe_open import publish_new, replace_with

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


#: No key, trust store or allow-list stepline writes comes near this.
MAX_CONFIG_BYTES = 16 << 20


def read_config_file(path, what: str, secret: bool = False) -> bytes:
    """The bytes of the config file ``path`` (``FileNotFoundError`` if absent).

    Read without blocking or following a link (a FIFO there would hang every load), and
    refused with :class:`~stepline.trust.errors.TrustConfigError` when it is not a regular
    file, too big, or owned or writable by another user (who could then make this user
    trust their dumps, as ssh refuses such an ``authorized_keys``); a ``secret`` (the private
    key) readable by others gets a warning: they can sign dumps as this user.
    """
    from stepline.saving.safe_open import open_regular
    from stepline.trust.errors import TrustConfigError
    try:
        with open_regular(path, os.O_RDONLY, TrustConfigError, what) as f:
            st = os.fstat(f.fileno())
            _check_owner_and_mode(path, st, what, secret)
            if st.st_size > MAX_CONFIG_BYTES:
                raise TrustConfigError(f"{path}: {st.st_size} bytes, more than any {what} stepline writes")
            return f.read(MAX_CONFIG_BYTES + 1)
    except (FileNotFoundError, TrustConfigError):
        raise
    except OSError as e:
        raise TrustConfigError(f"{path}: cannot read the {what} ({e.strerror or e})") from e


def _check_owner_and_mode(path, st, what: str, secret: bool) -> None:
    from stepline.trust.errors import TrustConfigError
    if st.st_uid not in (os.getuid(), 0):
        raise TrustConfigError(f"{path}: the {what} is owned by user id {st.st_uid}, not by you (or root): "
                               f"whoever owns it decides which dumps you trust; chown it or remove it")
    if st.st_mode & 0o002:
        raise TrustConfigError(f"{path}: the {what} is writable by every user (mode {st.st_mode & 0o777:o}): "
                               f"anyone could make you trust their dumps; chmod o-w {path}")
    if secret and st.st_mode & 0o077:
        import warnings
        warnings.warn(f"{path}: your private signing key is readable by other users (mode "
                      f"{st.st_mode & 0o777:o}): they can sign dumps as you; chmod 600 {path}", stacklevel=4)


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

    Raises ``ValueError`` naming the file when it holds neither (or is no regular file), and
    the ``OSError`` it is when it cannot be opened.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from stepline.saving.safe_open import open_regular
    with open_regular(path, os.O_RDONLY, ValueError, "public key file") as f:  # (a FIFO never blocks; a
        data = f.read(1 << 16)  # missing or unreadable file is the OSError it is, for the caller to word)
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
    from stepline.trust.errors import TrustConfigError
    data = read_config_file(path, "stepline signing key", secret=True)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise TrustConfigError(f"{path}: cannot read the stepline signing key ({e}); move it away to "
                               f"create a new one") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise TrustConfigError(f"{path}: not an Ed25519 private key")
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
    if not publish_new(home / PRIVATE_NAME, private, mode=0o600):  # never readable by others, even briefly
        return  # another process created one meanwhile: its key is kept
    replace_with(home / PUBLIC_NAME, public)
