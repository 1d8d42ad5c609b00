"""The JSON manifest of a step folder, and the runtime versions it records.

A manifest is plain JSON (``stepline.json``) so that anything, ``json`` alone included,
can read what a dump holds without unpickling it.

Format v2 makes a dump a Merkle tree: a manifest lists every file with its BLAKE3 digest
and every child as ``{"name": ..., "manifest": <BLAKE3 of the child's stepline.json>}``,
so the digest of the root manifest (:func:`root_digest`) identifies the whole tree, and a
child folder from another save no longer matches its parent. v1 manifests (children as
plain names, SHA-256 file digests) still load.
"""

from __future__ import annotations

import errno
import functools
import json
import json.scanner
import os
import platform
import stat
import sys
import warnings
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import blake3

from .errors import ManifestError, MixedDumpError, NotADumpError, VersionMismatchWarning
from .safe_open import kind_of, open_regular, read_regular, replace_with

MANIFEST_NAME = "stepline.json"
FORMAT = "stepline-dump"
#: 3: small pickles may sit in the manifest (``inline``, :mod:`stepline.saving.inline`);
#: 2: the Merkle tree (BLAKE3); 1: SHA-256 records, children as plain names.
FORMAT_VERSION = 3
#: The one file a dump's root step folder may hold besides what its manifest lists:
#: the signature of the root digest, written by :mod:`stepline.trust`.
SIGNATURE_NAME = "stepline.sig"
_SLASH_MANIFEST = os.sep + MANIFEST_NAME

#: Distribution name -> module name of the libraries always recorded.
CORE_PACKAGES = {"stepline": "stepline", "numpy": "numpy", "joblib": "joblib", "cloudpickle": "cloudpickle"}
#: Recorded only when the saving process has imported them.
OPTIONAL_PACKAGES = {"scikit-learn": "sklearn", "torch": "torch", "dask": "dask", "pandas": "pandas"}


#: The manifest's own digest (format 2 on): BLAKE3 of the manifest's bytes before it.
SELF_DIGEST = "manifest_blake3"
#: No manifest stepline writes comes near this; a bigger one is refused before parsing.
MAX_MANIFEST_BYTES = 64 << 20


def encode_manifest(data: dict) -> bytes:
    """The bytes of the manifest holding ``data``: JSON with every field on a line of its
    own, whose last field is its own digest, the BLAKE3 of every byte before it (the
    manifest as it would end without it).

    Any change to the bytes (a flipped bit, a hand edit) is caught on reading, the root
    manifest's included, at the cost of one hash of a few hundred bytes. The JSON is
    written by one call of the C encoder (``indent`` would switch ``json`` to its
    pure-Python encoder, once the biggest cost of saving a tiny step).
    """
    encoded = _ENCODER.encode({k: v for k, v in data.items() if k != SELF_DIGEST} if SELF_DIGEST in data else data)
    if encoded == "{}":
        raise ValueError("a manifest holds at least one field")
    body = ("{\n  " + encoded[1:-1] + "\n}").encode("utf-8")
    return body[:-2] + _SUFFIX_HEAD + _digest_of(body).encode("ascii") + _SUFFIX_TAIL


_SUFFIX_HEAD = f',\n  "{SELF_DIGEST}": "'.encode("ascii")
_SUFFIX_TAIL = b'"\n}\n'
_SUFFIX_LENGTH = len(_SUFFIX_HEAD) + 64 + len(_SUFFIX_TAIL)


def _digest_of(body: bytes) -> str:
    return blake3.blake3(body).hexdigest()


def manifest_digest(raw: bytes) -> str:
    """BLAKE3 hex digest of a manifest's bytes (one thread: a manifest is small)."""
    return blake3.blake3(raw).hexdigest()


def root_digest(step_folder) -> str:
    """The Merkle root of the dump at ``step_folder``: BLAKE3 (hex) of its ``stepline.json`` bytes.

    Format v2 manifests list their children's manifest digests, so this one digest
    identifies the whole tree.
    """
    path = Path(step_folder) / MANIFEST_NAME
    try:
        return manifest_digest(read_regular(path, ManifestError, "manifest", MAX_MANIFEST_BYTES))
    except OSError as e:
        raise NotADumpError(f"{step_folder}: cannot read {MANIFEST_NAME} ({e.strerror or e})") from e


def write_manifest(folder, data: dict) -> dict:
    """Write ``data`` plus format, format_version and created time to ``folder/stepline.json``.

    The write is atomic (:func:`~stepline.saving.safe_open.replace_with`). Returns the dict written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    encoded = _manifest_bytes(data)
    replace_with(folder / MANIFEST_NAME, encoded)
    return json.loads(encoded)


def write_new_manifest(folder, data: dict) -> tuple[str, os.stat_result]:
    """Write the manifest of a folder being staged (where no manifest is yet) in place,
    without a temporary file: the staged folder only becomes the dump as a whole.
    Returns its digest (of the bytes in memory) and the file's ``os.stat`` once written."""
    raw, digest = new_manifest_bytes(data)
    return digest, create_manifest(folder, raw)


def new_manifest_bytes(data: dict) -> tuple[bytes, str]:
    """The bytes of the manifest holding ``data`` (see :func:`write_new_manifest`) and their
    digest, the one its parent lists."""
    raw = _manifest_bytes(data)
    return raw, manifest_digest(raw)


def create_manifest(folder: str, raw: bytes) -> os.stat_result:
    """Create ``folder/stepline.json`` (it must not exist) holding ``raw``; its ``os.stat``
    once written. One open, the writes, one fstat, one close: no file object."""
    fd = os.open(os.path.join(folder, MANIFEST_NAME), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view):]
        return os.fstat(fd)
    finally:
        os.close(fd)


def _manifest_bytes(data: dict) -> bytes:
    """``data`` as a manifest: format, format version and creation time first (as given in
    ``data``, when it has them: a save gives every manifest the time it started)."""
    if data.get("format") == FORMAT and data.get("format_version") == FORMAT_VERSION and "created" in data:
        return encode_manifest(data)
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, "created": created_now()}
    full.update((k, v) for k, v in data.items() if k not in full)
    return encode_manifest(full)


def created_now() -> str:
    """The creation time a manifest records: now, UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_manifest(folder, expected_digest: str | None = None) -> dict:
    """Read and check ``folder/stepline.json``: its bytes, its own digest, its fields' types.

    Raises :class:`NotADumpError` when the folder or the manifest is missing,
    :class:`ManifestError` when the manifest is unreadable, invalid, foreign, newer,
    altered or of the wrong shape, and :class:`MixedDumpError` when ``expected_digest``
    (the one the parent manifest lists) differs from the manifest's BLAKE3. Never blocks
    (a FIFO in its place is refused).
    """
    return read_checked_manifest(folder, expected_digest)[0]


def read_checked_manifest(folder, expected_digest: str | None = None) -> tuple[dict, str, os.stat_result]:
    """:func:`read_manifest`, also returning the manifest's digest and its ``os.stat``, as read
    (one ``lstat`` of the folder, one open that follows no link: a load does this per step)."""
    where = os.fspath(folder)
    path = where + _SLASH_MANIFEST if where and not where.endswith(os.sep) else os.path.join(where, MANIFEST_NAME)
    try:
        mode = os.lstat(where).st_mode
    except (OSError, ValueError):
        mode = None
    if mode is None or not stat.S_ISDIR(mode):
        if mode is not None and stat.S_ISLNK(mode):
            raise NotADumpError(f"{folder}: is a symbolic link: links inside a dump are refused")
        _check_is_folder(Path(folder))  # raises, naming what is there
    try:
        raw, st = _read_bytes(path)
    except FileNotFoundError as e:
        raise NotADumpError(f"{folder}: not a stepline dump (no {MANIFEST_NAME}){_hint_children(Path(folder))}") from e
    except ManifestError:
        if os.path.islink(path):
            raise NotADumpError(f"{path}: is a symbolic link: links inside a dump are refused") from None
        raise
    except OSError as e:
        raise ManifestError(f"{path}: cannot read the manifest ({e.strerror or e})") from e
    digest = manifest_digest(raw)
    if expected_digest is not None and digest != expected_digest:
        raise MixedDumpError(f"{folder}: this step folder is not the one its parent's manifest lists "
                             f"(manifest digest {digest[:12]}…, parent expects "
                             f"{expected_digest[:12]}…): it comes from another save or was changed")
    return parse_manifest(path, raw, own_digest=expected_digest is None), digest, st


def _read_bytes(path: str) -> tuple[bytes, os.stat_result]:
    """The bytes of the manifest at ``path`` and its ``fstat`` (a regular file, not too big).

    One ``open`` that never blocks nor follows a final link, one ``fstat``, the reads, one
    ``close``: no file object (a load does this for every step). Anything but a regular
    file is refused as :func:`~stepline.saving.safe_open.open_regular` words it."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as e:
        if e.errno not in _NOT_A_FILE:
            raise
        with open_regular(path, os.O_RDONLY, ManifestError, "manifest"):  # raises, naming what is there
            pass
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ManifestError(f"{path}: is {kind_of(st.st_mode)}, not a regular file: this is not the "
                                f"manifest stepline writes here; remove it")
        if st.st_size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{path}: {st.st_size} bytes, more than any manifest stepline writes "
                                f"({MAX_MANIFEST_BYTES}): this is not the manifest stepline wrote")
        raw = os.read(fd, st.st_size)  # (no read past the size fstat gave)
        if len(raw) < st.st_size:
            chunks, left = [raw], st.st_size - len(raw)
            while left > 0 and (chunk := os.read(fd, left)):
                chunks.append(chunk)
                left -= len(chunk)
            raw = b"".join(chunks)
        return raw, st
    finally:
        os.close(fd)


_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
_NOT_A_FILE = {errno.ENXIO, errno.EISDIR, errno.ELOOP, errno.ENODEV, errno.EOPNOTSUPP}


def parse_manifest(path, raw: bytes, own_digest: bool = True) -> dict:
    """The manifest ``raw`` read from ``path``, checked (see :func:`read_manifest`).

    ``own_digest=False`` skips the check of the digest the manifest ends with, for bytes
    already found to be the ones the parent manifest lists (a parent is checked first, so
    they are the bytes the save wrote, with the digest it computed)."""
    data = parse_json(path, raw, "the manifest", ManifestError)
    _check_format(path, data)
    if own_digest and data["format_version"] >= 2:
        _check_own_digest(path, data, raw)
    check_manifest_fields, check_records = _field_checks()
    check_manifest_fields(path, data)
    if data["files"]:
        check_records(data["files"], os.path.dirname(path))
    return data


@functools.lru_cache(maxsize=1)
def _field_checks():
    """The shape checks of a manifest (imported on first use: those modules import this one)."""
    from .integrity import check_records
    from .schema import check_manifest_fields
    return check_manifest_fields, check_records


def parse_json(path: Path, raw: bytes, what: str, error) -> object:
    """``raw`` parsed as JSON, or ``error`` naming ``path`` (bad UTF-8, bad JSON, too deep).

    The C scanner is called directly (``json.loads`` adds two regular-expression matches and
    two Python calls: a fifth of a tiny manifest's parse); anything it does not take whole,
    whitespace after aside, is parsed again by ``json.loads``, which words the error."""
    try:
        text = raw.decode("utf-8")
        try:
            data, end = _SCAN(text, 0)
        except StopIteration:  # (not a JSON value at the first byte)
            end = -1
        if end == len(text) or (end > 0 and not text[end:].strip(_JSON_SPACE)):
            return data
        return json.loads(text)
    except RecursionError as e:
        raise error(f"{path}: {what} is nested too deeply to be one stepline wrote: it is corrupted") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: {what} is not valid JSON ({e}): it is corrupted") from e


_SCAN = json.scanner.make_scanner(json.JSONDecoder())  # (the C scanner, as json.loads uses it)
_JSON_SPACE = " \t\n\r"


def _check_own_digest(path: Path, data: dict, raw: bytes) -> None:
    """Check the digest :func:`encode_manifest` ended ``raw`` with."""
    digest = data.get(SELF_DIGEST)
    suffix = raw[-_SUFFIX_LENGTH:]
    if not (isinstance(digest, str) and suffix.startswith(_SUFFIX_HEAD) and suffix.endswith(_SUFFIX_TAIL)
            and suffix[len(_SUFFIX_HEAD):-len(_SUFFIX_TAIL)] == digest.encode("ascii", "replace")):
        raise ManifestError(f"{path}: the manifest does not end with its own digest as stepline writes it "
                            f"(edited by hand or corrupted): save the step again")
    if _digest_of(raw[:-_SUFFIX_LENGTH] + b"\n}") != digest:
        raise ManifestError(f"{path}: the manifest's own digest does not match its content: it was "
                            f"edited or corrupted; save the step again")


def _check_is_folder(folder: Path) -> None:
    """Raise :class:`NotADumpError` unless ``folder`` is a folder, saying what is there."""
    try:
        mode = os.stat(folder).st_mode
    except FileNotFoundError:
        raise NotADumpError(_missing_dump_message(folder)) from None
    except NotADirectoryError:
        file = next((p for p in folder.parents if p.is_file()), folder.parent)
        raise NotADumpError(f"{file}: a file, not a folder: there is no stepline dump in it") from None
    except (OSError, ValueError) as e:
        raise NotADumpError(f"{folder}: cannot read ({getattr(e, 'strerror', None) or e})") from e
    if not stat.S_ISDIR(mode):
        what = "a file" if stat.S_ISREG(mode) else kind_of(mode)
        raise NotADumpError(f"{folder}: {what}, not a folder: there is no stepline dump here")


def _missing_dump_message(folder: Path) -> str:
    parent = folder.parent
    if not parent.is_dir():
        return f"{folder}: no such folder: there is no stepline dump here"
    names = dumps_in(parent)
    there = f"{parent} holds the dumps {', '.join(names[:20])}" if names else f"{parent} holds no dump"
    return f"{folder}: no such dump; {there}"


def dumps_in(folder: Path) -> list[str]:
    """Names of the sub-folders of ``folder`` that are stepline dumps, sorted."""
    try:
        return sorted(p.name for p in Path(folder).iterdir()
                      if not p.name.startswith(".") and (p / MANIFEST_NAME).is_file())
    except OSError:
        return []


def child_entries(manifest: dict, folder) -> list[tuple[str, str | None]]:
    """``[(child name, manifest digest or None for v1)]`` of a checked manifest.

    Raises :class:`ManifestError` on a malformed list or a name that is not one safe
    path component (so nothing reads outside the dump).
    """
    children = manifest.get("children", [])
    where = os.path.join(folder, MANIFEST_NAME)
    if not isinstance(children, list):
        raise ManifestError(f"{where}: 'children' must be a list, not {type(children).__name__}")
    entries = []
    for child in children:
        if isinstance(child, dict) and manifest.get("format_version", 1) >= 2:
            name, digest = child.get("name"), child.get("manifest")
            if not (isinstance(digest, str) and len(digest) == 64):
                raise ManifestError(f"{where}: child {child!r} has no manifest digest")
        elif isinstance(child, str):
            name, digest = child, None
        else:
            raise ManifestError(f"{where}: malformed child entry {child!r}")
        if not is_safe_component(name):
            raise ManifestError(f"{where}: invalid child name {name!r}: not a single folder name inside the dump")
        entries.append((name, digest))
    if len({n for n, _ in entries}) != len(entries):
        raise ManifestError(f"{where}: two children share one name")
    return entries


def listed_children(manifest: dict) -> dict:
    """``{child name: manifest digest or None for v1}`` of a manifest :func:`parse_manifest`
    checked (its children's names and digests were checked there, by :func:`child_entries`:
    not a second time for a pipeline of a thousand steps)."""
    return dict((c["name"], c["manifest"]) if type(c) is dict else (c, None) for c in manifest.get("children", ()))


def is_safe_component(name) -> bool:
    """Whether ``name`` is one path component a dump may hold: not empty, ``.``/``..``,
    hidden, a separator, a NUL or the manifest's own name."""
    return (isinstance(name, str) and bool(name) and not name.startswith(".") and name != MANIFEST_NAME
            and "/" not in name and "\\" not in name and "\0" not in name)


def _check_format(path: Path, data) -> None:
    """Raise :class:`ManifestError` unless ``data`` is a stepline manifest this version reads."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ManifestError(f"{path}: not a stepline manifest (format {found!r}, expected {FORMAT!r})")
    version = data.get("format_version")
    if version is None:
        raise ManifestError(f"{path}: the manifest has no 'format_version' field: it is corrupted")
    if type(version) is not int or version < 1:
        raise ManifestError(f"{path}: unknown format version {version!r}")
    if version > FORMAT_VERSION:
        raise ManifestError(f"{path}: format version {version} is newer than this stepline reads "
                            f"({FORMAT_VERSION}): upgrade stepline to load this dump")


def _hint_children(folder: Path) -> str:
    """Name the sub-folders that are dumps, for a user who pointed at the parent."""
    names = dumps_in(folder)
    return f"; it contains the dumps {', '.join(names[:10])}" if names else ""


def _json_default(value):  # (bound into _ENCODER below)
    """Convert NumPy scalars/arrays and paths; refuse anything else clearly."""
    if hasattr(value, "tolist") and type(value).__module__ == "numpy":
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"manifest value {value!r} of type {type(value).__name__} is not JSON serialisable")


def runtime_versions() -> dict:
    """Versions of Python, stepline and the main libraries in this process (see _runtime_versions)."""
    return dict(_runtime_versions(tuple(m for m in OPTIONAL_PACKAGES.values() if m in sys.modules)))


@functools.lru_cache(maxsize=8)
def _runtime_versions(imported_optional: tuple) -> dict:
    """Versions of Python, stepline and the main libraries in this process.

    scikit-learn, torch and dask are listed only when already imported, so that a dump
    records what it used; nothing is imported here (versions come from package metadata).
    """
    versions = {"python": platform.python_version()}
    for dist in CORE_PACKAGES:
        versions[dist] = _installed_version(dist)
    for dist, module in OPTIONAL_PACKAGES.items():
        if module in sys.modules:
            versions[dist] = _installed_version(dist)
    return versions


@functools.lru_cache(maxsize=64)
def _installed_version(dist: str) -> str | None:
    """The installed version of ``dist``, falling back to its module's ``__version__``.

    Cached: reading package metadata costs about a millisecond a package, on every load."""
    if dist == "python":
        return platform.python_version()
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        module = sys.modules.get(CORE_PACKAGES.get(dist) or OPTIONAL_PACKAGES.get(dist, dist))
        return getattr(module, "__version__", None)


def version_differences(recorded: dict) -> list[str]:
    """Human lines, one per package whose recorded version differs from the running one.

    e.g. ``"numpy: saved with 2.3.0, running 2.4.6"``.
    """
    lines = []
    for dist, saved in sorted(recorded.items()):
        if saved is None:
            continue
        running = _installed_version(dist)
        if running is None:
            lines.append(f"{dist}: saved with {saved}, not installed")
        elif str(running) != str(saved):
            lines.append(f"{dist}: saved with {saved}, running {running}")
    return lines


def warn_version_differences(recorded: dict, where) -> list[str]:
    """Emit one :class:`VersionMismatchWarning` per differing package; return the lines."""
    lines = version_differences(recorded)
    for line in lines:
        warnings.warn(f"{where}: {line}", VersionMismatchWarning, stacklevel=2)
    return lines


#: Each item on a line of its own (nested ones too), in one call of the C encoder.
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=_json_default, separators=(",\n  ", ": "))
