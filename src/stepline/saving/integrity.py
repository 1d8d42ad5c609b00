"""File records (size + BLAKE3), their verification, and the stat cache that spares re-hashing.

A record is ``{"size": int, "blake3": hex}`` (format v2); v1 dumps' ``{"size", "sha256"}``
records still verify. Verifying a folder against its records always checks sizes;
contents are hashed unless the *stat cache* vouches for them.

The stat cache (``.stepline-verified.json``, never listed in a manifest) works like git's
index: it maps a file name to ``[size, mtime_ns, ctime_ns, inode, digest]`` as seen when
the file was last written or fully hashed. A file whose ``os.stat`` still matches and whose
cached hash equals the manifest's is trusted. Any write through the filesystem changes the
ctime, and a copy changes the inode, so such files are hashed again. As in git, an entry
whose ctime is not strictly older than the cache file itself is "racy" (the file could have
changed within the same clock tick) and is never trusted.

The cache vouches only within the boot of the machine that wrote it (Linux's ``boot_id``).
Saves do not ``fsync`` (as ``np.save`` does not): after a power cut or a kernel crash a
file may keep its size, inode and times while blocks that were never written back read as
zeros, so the first load after a reboot hashes every file again and reports such a file as
corrupt instead of loading it.

The cache lives in the dump, where whoever can write could forge it, so it carries a MAC
(keyed BLAKE3 under a key derived from this user's signing key, :func:`~stepline.trust.keys.stat_cache_key`):
a cache forged, copied from another user's or machine's dump, or written where there is no
key vouches for nothing, and its files are hashed.

Only files of at least ``CACHE_MIN_BYTES`` (1 MiB) are cached: hashing a smaller one
(BLAKE3, from the page cache) costs less than writing and reading a cache entry for it,
so a dump of small steps holds no cache files at all.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3

from .errors import CorruptFileError, ManifestError, MissingFileError, StepLoadError
from .hashing import BY_MAP, DIGEST, digest_bytes, file_digest, new_hasher, sha256_file  # noqa: F401 (re-exported)
from .manifest import MANIFEST_NAME
from .safe_open import kind_of, open_regular, replace_with

STAT_CACHE_NAME = ".stepline-verified.json"
_CACHE_FORMAT = "stepline-stat-cache"
_PARALLEL_MIN_BYTES = 1 << 20
#: Files smaller than this are hashed on every load rather than cached.
CACHE_MIN_BYTES = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")
#: The digests format-v2 (BLAKE3) and v1 (SHA-256) records hold.
_ALGORITHMS = ("blake3", "sha256")
_MAX_CACHE_BYTES = 64 << 20
#: Path components a file name in a manifest never has ("a//b", "./a", "../a": one file, one spelling).
_NOT_NAMES = ("", ".", "..")
_BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def _read_boot_id() -> str | None:
    """This boot of the machine (Linux), or ``None`` where the system does not say."""
    try:
        with open(_BOOT_ID_PATH, encoding="ascii") as f:
            return f.read().strip() or None
    except (OSError, ValueError):
        return None


#: The boot a stat cache must have been written in to vouch for anything.
BOOT_ID = _read_boot_id()


# ---------------------------------------------------------------- hashing

def record_digest(record: dict) -> tuple[str, str]:
    """``(algorithm, hex)`` of a well-formed file record."""
    for algorithm in _ALGORITHMS:
        if algorithm in record:
            return algorithm, record[algorithm]
    raise KeyError("no digest")


def workers_for(count: int) -> int:
    """Threads worth using for ``count`` independent hash/IO jobs."""
    return max(1, min(count, os.cpu_count() or 1, 8))


def _hash_files(paths: list[Path], total_bytes: int, algorithms=None, into=None, sizes=None,
                alone: bool = True) -> list[str]:
    """Hash files (BLAKE3 unless ``algorithms`` says otherwise per file). ``into`` gives per
    file a buffer to read it into as it is hashed, or ``None``; ``sizes`` the size (or the
    ``os.stat``) each must still have (see :func:`~stepline.saving.hashing.file_digest`).
    ``alone``: no other step's files are hashed meanwhile (else each file is read and hashed
    on this thread, one after the other).

    One big file at a time is read on one thread while the others hash it; several big
    files are hashed in parallel threads, each file read and hashed chunk by chunk by one.
    """
    algorithms = algorithms or [DIGEST] * len(paths)
    into = into or [None] * len(paths)
    sizes = sizes or [None] * len(paths)
    big = sum(s is None or getattr(s, "st_size", s) >= _PARALLEL_MIN_BYTES for s in sizes)
    if not alone or len(paths) < 2 or total_bytes < _PARALLEL_MIN_BYTES or big < 2:
        return [file_digest(p, a, b, s, alone) for p, a, b, s in zip(paths, algorithms, into, sizes)]
    alone = [False] * len(paths)
    with ThreadPoolExecutor(workers_for(len(paths))) as pool:
        return list(pool.map(file_digest, paths, algorithms, into, sizes, alone))


# ---------------------------------------------------------------- records

def check_records(files, folder) -> None:
    """Raise :class:`ManifestError` unless ``files`` is a well-formed ``{name: record}`` map."""
    where = os.path.join(folder, MANIFEST_NAME)  # (for the messages: a load checks every step's)
    if not isinstance(files, dict):
        raise ManifestError(f"{where}: 'files' must be an object, not {type(files).__name__}")
    for name, record in files.items():
        parts = name.split("/") if isinstance(name, str) else ()  # (JSON keys are strings)
        if "\x00" in name:
            raise ManifestError(f"{where}: invalid file name {name!r} in 'files': a NUL byte in a name")
        if not name or name.startswith("/") or "\\" in name or name == STAT_CACHE_NAME \
                or any(part in _NOT_NAMES for part in parts):
            raise ManifestError(f"{where}: invalid file name {name!r} in 'files'")
        if not (isinstance(record, dict) and type(record.get("size")) is int and record["size"] >= 0
                and _has_digest(record)):
            raise ManifestError(f"{where}: malformed record for {name!r}: {record!r} "
                                f"(expected {{'size': int, 'blake3': 64 hex digits}})")
        _check_code_fields(where, name, record)


def _has_digest(record: dict) -> bool:
    return any(isinstance(record.get(a), str) and _HEX64.fullmatch(record[a]) for a in _ALGORITHMS)


def _check_code_fields(where: Path, name: str, record: dict) -> None:
    """The optional fields of a record that holds code pickled by value."""
    if "python" in record and not isinstance(record["python"], str):
        raise ManifestError(f"{where}: field 'python' of {name!r} must be a version string such as "
                            f"'3.11.7', not {type(record['python']).__name__} {record['python']!r}")
    by_value = record.get("by_value", [])
    if not (isinstance(by_value, list) and all(isinstance(n, str) for n in by_value)):
        raise ManifestError(f"{where}: field 'by_value' of {name!r} must be a list of names, not {by_value!r}")


def cached_records(folder, names, known: dict | None = None) -> dict[str, dict]:
    """Records of files already written in ``folder``, e.g. by a saver (model weights, ...).

    A file the stat cache vouches for keeps its cached hash, one in ``known`` (records its
    writer reported, digested as it wrote them) of the size it has keeps that digest; the
    others are hashed (in parallel) and cached, so that a load right after the save hashes
    nothing. When every file is in ``known`` and too small for the cache (a tiny step's
    pickle), the records are taken as reported, with no ``os.stat``.
    """
    known = known or {}
    if all(_small_and_known(known.get(n)) for n in names):  # (its writer just wrote and hashed it)
        return {n: {"size": known[n]["size"], DIGEST: known[n][DIGEST]} for n in names}
    folder = Path(folder)
    stats = {n: os.stat(folder / n) for n in names}
    cache = load_stat_cache(folder) if _any_cached(stats.values()) else {}
    for name, record in (known or {}).items():
        if name in stats and name not in cache and record.get("size") == stats[name].st_size \
                and isinstance(record.get(DIGEST), str):
            cache[name] = stat_entry(stats[name], record[DIGEST])
    todo = [n for n in names if n not in cache or cache[n][:4] != stat_entry(stats[n], "")[:4]]
    digests = _hash_files([folder / n for n in todo], sum(stats[n].st_size for n in todo))
    fresh = {n: stat_entry(stats[n], d) for n, d in zip(todo, digests)}
    if fresh:
        update_stat_cache(folder, fresh, settle=True)
    return {n: {"size": stats[n].st_size, DIGEST: (fresh.get(n) or cache[n])[4]} for n in names}


def _small_and_known(record) -> bool:
    """Whether a writer's record gives a file's size and digest, and it is too small for the
    stat cache (so nothing needs its ``os.stat``)."""
    return (record is not None and type(record.get("size")) is int and record["size"] < CACHE_MIN_BYTES
            and isinstance(record.get(DIGEST), str))


def verify_files(folder, files: dict, verify=True, read_into=None, alone: bool = True) -> dict:
    """Check every file of ``files`` in ``folder`` before anything is unpickled.

    ``verify=True`` hashes the files the stat cache does not vouch for, ``"full"`` hashes
    all of them, ``False`` checks sizes only. Raises :class:`MissingFileError` or
    :class:`CorruptFileError` naming the first bad file.

    ``read_into(name, size)`` may give a writable buffer of ``size`` bytes for a file about
    to be hashed (or ``None``): the file is then read into it as it is hashed, so a loader
    need not read it again. Or :data:`~stepline.saving.hashing.BY_MAP`, for a file the
    loader will map: it is then hashed through a map of it. ``alone=False``: other steps'
    files are verified meanwhile, on the other cores (:mod:`~stepline.saving.side_by_side`).
    Returns ``{name: buffer}`` of the files so read and verified,
    and ``{name: os.stat_result}`` of the others, as checked: whoever opens one of them
    later must find that very file (:func:`~stepline.saving.safe_open.open_checked`), so
    that what is verified is what is loaded. A file hashed here is the file so stat'ed.
    """
    if verify not in (True, False, "full"):
        raise ValueError(f"verify must be True, False or 'full', not {verify!r}")
    check_records(files, folder)
    folder = os.fspath(folder)  # (strings: this runs for every step of a load)
    names = sorted(files)
    for name in names:
        if "/" in name:
            _check_inside(folder, name)
    stats = {n: _checked_stat(os.path.join(folder, n), files[n]["size"]) for n in names}
    if not verify:
        return dict(stats)
    cache = {} if verify == "full" else load_stat_cache(folder, strict=True) \
        if _any_cached(stats.values()) or os.path.lexists(os.path.join(folder, STAT_CACHE_NAME)) else {}
    expected = {n: record_digest(files[n]) for n in names}
    todo = [n for n in names if not _trusted(cache.get(n), stats[n], expected[n][1])]
    if not todo:
        return dict(stats)
    buffers = [_allocated(read_into, folder, n, stats[n].st_size) for n in todo]
    try:
        digests = _hash_files([Path(folder, n) for n in todo], sum(stats[n].st_size for n in todo),
                              [expected[n][0] for n in todo], buffers, [stats[n] for n in todo], alone)
    except OSError as e:
        raise StepLoadError(f"{e.filename}: cannot read ({e.strerror or e})") from e
    for name, digest in zip(todo, digests):
        algorithm, wanted = expected[name]
        if digest != wanted:
            raise CorruptFileError(f"{os.path.join(folder, name)}: {algorithm.upper()} mismatch (manifest {wanted[:12]}…, "
                                   f"file {digest[:12]}…): the file was modified or corrupted")
    update_stat_cache(folder, {n: stat_entry(stats[n], d) for n, d in zip(todo, digests)})
    checked = dict(stats)
    checked.update((n, b) for n, b in zip(todo, buffers) if b is not None and b is not BY_MAP)
    return checked


def _allocated(read_into, folder: str, name: str, size: int):
    """``read_into(name, size)`` (or ``None``), a clear error when memory cannot hold the file."""
    if read_into is None:
        return None
    try:
        return read_into(name, size)
    except MemoryError:
        raise StepLoadError(f"{os.path.join(folder, name)}: {size} bytes, more than this process can "
                            f"allocate to load it (a file that big, or one that claims to be: sparse)") from None


def _check_inside(folder: str, name: str) -> None:
    """A file name with folders (``sub/file``) must reach its file through real folders of the
    dump: a symbolic link on the way could point anywhere (only the last part is opened with
    ``O_NOFOLLOW``)."""
    parts = name.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        path = os.path.join(folder, *parts[:depth])
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return  # (the file is then missing: named as such by the stat that follows)
        if not stat.S_ISDIR(mode):
            raise CorruptFileError(f"{path}: is {kind_of(mode)}, not a folder of the dump, on the way to "
                                   f"{name!r}: links inside a dump are refused")


def _any_cached(stats) -> bool:
    return any(st.st_size >= CACHE_MIN_BYTES for st in stats)


def _checked_stat(path: Path, size: int) -> os.stat_result:
    """``os.stat`` of a listed file, raising a clear error if it is absent or mis-sized."""
    try:
        st = os.lstat(path)
    except FileNotFoundError as e:
        raise MissingFileError(f"{path}: missing: the manifest lists this file ({size} bytes) "
                               f"but it is absent") from e
    except OSError as e:
        raise StepLoadError(f"{path}: cannot stat ({e.strerror or e})") from e
    if stat.S_ISLNK(st.st_mode):
        raise CorruptFileError(f"{path}: is a symbolic link: links inside a dump are refused")
    if not stat.S_ISREG(st.st_mode):
        raise CorruptFileError(f"{path}: not a regular file")
    if st.st_size != size:
        how = "truncated" if st.st_size < size else "modified or appended to"
        raise CorruptFileError(f"{path}: size {st.st_size} bytes, manifest says {size}: "
                               f"the file was {how}")
    return st


# ---------------------------------------------------------------- stat cache

def stat_entry(st: os.stat_result, digest: str) -> list:
    """The cache entry ``[size, mtime_ns, ctime_ns, inode, digest]`` for a stat result."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, digest]


def trusted_entries(folder) -> dict[str, list]:
    """The stat cache entries of ``folder`` that vouch for their files right now."""
    trusted = {}
    for name, entry in load_stat_cache(folder).items():
        try:
            st = os.stat(os.path.join(folder, name), follow_symlinks=False)
        except OSError:
            continue
        if _trusted(entry, st, entry[4]):
            trusted[name] = entry
    return trusted


def vouch_for(folder, vouched: dict[str, list]) -> None:
    """Cache again files whose ctime changed (by moving them) but whose bytes did not.

    ``vouched`` maps a name to the stat entry the cache trusted before; a file whose size, mtime or inode differs from it now is left
    to be hashed on its next load.
    """
    entries = {}
    for name, before in vouched.items():
        try:
            st = os.stat(Path(folder) / name, follow_symlinks=False)
        except OSError:
            continue
        now = stat_entry(st, before[4])
        if [now[0], now[1], now[3]] == [before[0], before[1], before[3]]:
            entries[name] = now
    if entries:
        update_stat_cache(folder, entries, settle=True)


def _trusted(entry, st: os.stat_result, digest: str) -> bool:
    return entry is not None and entry == stat_entry(st, digest)


def load_stat_cache(folder, strict: bool = False) -> dict[str, list]:
    """The cache's trustworthy entries; ``{}`` if it is missing.

    A cache that is not valid JSON is ignored (its files are hashed); one that is a FIFO, a
    folder or a link, or JSON nested too deeply, is ignored too, or with ``strict`` (loading)
    a :class:`CorruptFileError`: stepline never writes one, so something else did.
    Entries for files mapped writable (:func:`mark_mapped_writable`) are never returned.
    """
    entries, marks = _read_cache(Path(folder), strict)
    return {n: e for n, e in entries.items() if marks.get(n) != e[3]}


def _read_cache(folder: Path, strict: bool) -> tuple[dict[str, list], dict[str, int]]:
    """(entries not racy, ``{name: inode}`` of files mapped writable) of the folder's cache.

    Garbage (invalid JSON, another shape) is no cache: its files are hashed. What stepline
    could never have written there and that would hang or crash a reader — a FIFO, a
    folder, a link, JSON nested 200 000 deep — is a :class:`CorruptFileError` with ``strict``.
    """
    path = folder / STAT_CACHE_NAME
    try:
        with open_regular(path, os.O_RDONLY, CorruptFileError, "stat cache") as f:
            written_ns = os.fstat(f.fileno()).st_mtime_ns
            raw = f.read(_MAX_CACHE_BYTES + 1)
        if len(raw) > _MAX_CACHE_BYTES:
            return {}, {}
        data = json.loads(raw)
    except OSError:
        return {}, {}
    except ValueError:  # not JSON, not UTF-8
        return {}, {}
    except (CorruptFileError, RecursionError) as error:
        if not strict:
            return {}, {}
        reason = error if isinstance(error, CorruptFileError) else \
            f"{path}: the stat cache is nested too deeply to be one stepline wrote"
        raise CorruptFileError(f"{reason}; delete it (it only spares re-hashing) and load again") from error
    if not isinstance(data, dict) or data.get("format") != _CACHE_FORMAT:
        return {}, {}
    entries, marks = data.get("files"), data.get("mapped_writable", {})
    entries = {n: e for n, e in entries.items() if _valid_entry(e) and e[2] < written_ns} \
        if isinstance(entries, dict) and data.get("boot") == BOOT_ID and _authentic(data) else {}
    marks = {n: i for n, i in marks.items() if type(i) is int} if isinstance(marks, dict) else {}
    return entries, marks


def _valid_entry(e) -> bool:
    return (isinstance(e, list) and len(e) == 5 and all(type(x) is int for x in e[:4])
            and isinstance(e[4], str))


def update_stat_cache(folder, entries: dict[str, list], settle: bool = False, marks: dict | None = None) -> None:
    """Merge ``entries`` (and ``marks``, see :func:`mark_mapped_writable`) into the folder's
    stat cache, atomically; never raises (a read-only dump simply stays uncached).

    Entries of files under ``CACHE_MIN_BYTES`` are left out (nothing is written for them).

    With ``settle``, wait (a clock tick at most, usually nothing) until the cache file is
    strictly newer than the files it describes, so the entries are trusted right away.
    """
    entries = {n: e for n, e in entries.items() if e[0] >= CACHE_MIN_BYTES}
    if not entries and not marks:
        return
    try:
        _write_cache(Path(folder), entries, marks or {}, settle)
    except OSError:
        pass


def mark_mapped_writable(folder, names) -> None:
    """Never vouch again for these files (by inode): a writable memory map (``mmap_mode="r+"``)
    can change their bytes without touching their mtime or ctime (on tmpfs, for one).

    Raises :class:`StepLoadError` if the mark cannot be written: then the map is not made.
    """
    folder = Path(folder)
    try:
        marks = {n: os.stat(folder / n).st_ino for n in names}
        _write_cache(folder, {}, marks, settle=False)
    except OSError as e:
        raise StepLoadError(f"{e.filename or folder}: cannot record in the stat cache that these files are "
                            f"mapped writable ({e.strerror or e}), so they are not mapped: load with "
                            f"mmap_mode='c' or 'r'") from e


def mapped_writable(folder) -> dict[str, int]:
    """``{name: inode}`` of the files of ``folder`` that were mapped writable."""
    return _read_cache(Path(folder), strict=False)[1]


def _write_cache(folder: Path, entries: dict, marks: dict, settle: bool) -> None:
    path = folder / STAT_CACHE_NAME
    old_entries, old_marks = _read_cache(folder, strict=False)
    all_marks = {**old_marks, **marks}
    merged = {n: e for n, e in {**old_entries, **entries}.items() if all_marks.get(n) != e[3]}
    body = {"format": _CACHE_FORMAT, "boot": BOOT_ID, "files": merged, "mapped_writable": all_marks}
    key = _mac_key()
    if key is not None:
        body[_MAC] = _mac(key, body)
    replace_with(path, json.dumps(body).encode("utf-8"))
    if settle and entries:
        _settle(path, max(e[2] for e in entries.values()))


#: The field holding the cache's MAC: keyed BLAKE3, under a key derived from this user's
#: signing key, of the rest of the cache (canonical JSON). The cache lives in the dump, where
#: whoever can write could otherwise forge entries that vouch for bytes nobody hashed; a
#: cache without a valid MAC (forged, another user's or machine's, or older) vouches for nothing.
_MAC = "mac"
_MAC_FIELDS = ("format", "boot", "files", "mapped_writable")


def _mac_key() -> bytes | None:
    from stepline.trust.keys import stat_cache_key
    try:
        return stat_cache_key()
    except (OSError, RuntimeError):  # an unreadable key: no cache vouches for anything
        return None


def _mac(key: bytes, data: dict) -> str:
    body = {k: data[k] for k in _MAC_FIELDS if k in data}
    return blake3.blake3(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8"),
                         key=key).hexdigest()


def _authentic(data: dict) -> bool:
    """Whether the cache ``data`` carries the MAC this user's key gives it (see :data:`_MAC`)."""
    mac, key = data.get(_MAC), _mac_key()
    return key is not None and isinstance(mac, str) and hmac.compare_digest(mac, _mac(key, data))


def _settle(path: Path, newest_ctime_ns: int, max_wait_s: float = 0.2) -> None:
    """Touch ``path`` until its mtime is strictly after ``newest_ctime_ns``.

    A file and the cache written right after it often get the same coarse timestamp (the
    clock's last tick). The first touch comes at once: where the kernel has multigrain
    timestamps (Linux 6.13+), a file whose times were just read gets a fine-grained one
    when next changed, so one touch after the ``stat`` settles it (a save of big steps
    waited a tick, ~1.1 ms, per step folder); elsewhere each next touch waits for a tick."""
    deadline = time.monotonic() + max_wait_s
    waited = False
    while os.stat(path).st_mtime_ns <= newest_ctime_ns and time.monotonic() < deadline:
        if waited:
            time.sleep(0.001)
        os.utime(path)
        waited = True
