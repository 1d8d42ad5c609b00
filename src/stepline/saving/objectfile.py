"""One Python object on disk: a cloudpickle stream plus one raw file per big buffer.

The object is pickled with cloudpickle, protocol 5. Buffers of at least 64 KiB (NumPy
array data) go out of band, each to its own uncompressed file ``buffer-000.bin``, ...,
so that loading can read them straight into place or map them. Classes and functions
defined in ``__main__`` are pickled by value, so another process loads them without the
source; the stream's record then notes them and the Python version they need.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import platform
import re
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3
import cloudpickle
import numpy as np

from .errors import (CorruptFileError, IncompatibleDumpError, ManifestError, NotADumpError,
                     StepLoadError, UnpicklingError)
from .preallocation import preallocate, preallocate_big  # noqa: F401 (preallocate: re-exported)
from .safe_open import check_unchanged, open_checked, open_regular
from . import integrity, reclaim
from .hashing import BY_MAP, hash_in_background, read_into
from .integrity import (DIGEST, check_records, mark_mapped_writable, new_hasher, stat_entry, update_stat_cache,
                        verify_files, workers_for)

STREAM_NAME = "step.pkl"
PROTOCOL = 5
BUFFER_MIN_BYTES = 64 << 10
_THREAD_MIN_BYTES = 1 << 20
_WRITE_CHUNK = 1 << 20  # hashed while still in the CPU cache
_CONCURRENT_HASH_MIN_BYTES = 4 << 20  # from here on, hashed by a second thread as the file is written
_PAGE = 4096
_BUFFER_NAME = re.compile(r"buffer-(\d{3,})\.bin")
_MMAP_MODES = (None, "r", "r+", "c")
_BYTES = (bytes, bytearray)
_HINT = ("the class must be importable when loading, or defined in __main__ when saving "
         "(then it is stored by value)")


def buffer_name(index: int) -> str:
    """File name of the ``index``-th out-of-band buffer."""
    return f"buffer-{index:03d}.bin"


# ---------------------------------------------------------------- writing

def write_object(obj, folder, inline_below: int = 0) -> dict[str, dict]:
    """Pickle ``obj`` into ``folder``; return ``{filename: {"size", "blake3"}}``.

    Files are hashed from memory in worker threads while the main thread writes them.
    A stream smaller than ``inline_below`` bytes is not written: its record holds its bytes
    (``"inline"``) for the caller to put in the manifest (:mod:`stepline.saving.inline`).
    """
    stream, buffers, by_value = _dumps(obj)
    inline = stream.nbytes < inline_below
    names = ([] if inline else [STREAM_NAME]) + [buffer_name(i) for i in range(len(buffers))]
    datas = ([] if inline else [stream]) + buffers
    if names:
        folder = Path(folder)
        if not os.path.isdir(folder):  # (a save made it: one stat, not a failed mkdir and a stat)
            folder.mkdir(parents=True, exist_ok=True)
    digests = _write_and_hash(folder, names, datas) if names else []
    cached = [(n, h) for n, d, h in zip(names, datas, digests) if d.nbytes >= integrity.CACHE_MIN_BYTES]
    if cached:  # (the stat cache leaves small files out: no stat for them)
        update_stat_cache(folder, {n: stat_entry(os.stat(folder / n), h) for n, h in cached}, settle=True)
    records = {n: {"size": d.nbytes, DIGEST: h} for n, d, h in zip(names, datas, digests)}
    if inline:
        records[STREAM_NAME] = {"size": stream.nbytes, DIGEST: integrity.digest_bytes(stream), "inline": stream}
    if by_value:
        records[STREAM_NAME].update(python=platform.python_version(), by_value=sorted(by_value))
    return records


class _Pickler(cloudpickle.Pickler):
    """cloudpickle's pickler, noting what it pickles by value and unpacking strided arrays."""

    def __init__(self, file, buffer_callback):
        super().__init__(file, protocol=PROTOCOL, buffer_callback=buffer_callback)
        self.by_value: set[str] = set()

    def reducer_override(self, obj):
        if type(obj) in (np.ndarray, np.memmap) and (reduced := _array_reduce(obj)):
            return reduced
        if isinstance(obj, (type, types.FunctionType)) and _pickled_by_value(obj):
            self.by_value.add(f"{obj.__module__}.{obj.__qualname__}")
        return super().reducer_override(obj)


def _array_reduce(arr: np.ndarray):
    """Reduce a big strided array or a ``np.memmap`` so that its data goes out of band
    (NumPy would copy either in band); ``None`` to let NumPy reduce it as usual."""
    if arr.nbytes < BUFFER_MIN_BYTES or arr.dtype.hasobject:
        return None
    if type(arr) is np.memmap:
        arr = arr.view(np.ndarray)  # comes back as a plain array
    elif arr.flags.c_contiguous or arr.flags.f_contiguous:
        return None
    if not (arr.flags.c_contiguous or arr.flags.f_contiguous):
        arr = arr.copy(order="K")
    return arr.__reduce_ex__(PROTOCOL)


def _pickled_by_value(obj) -> bool:
    """Whether cloudpickle stores this class or function by value (remembered per object:
    cloudpickle's answer looks the object up in its module, ~3 µs, for each class and
    function of each step; :func:`_dumps` forgets it all when a module is registered with
    ``cloudpickle.register_pickle_by_value``)."""
    try:
        return _BY_VALUE[obj]
    except (KeyError, TypeError):  # (TypeError: an unhashable class object)
        pass
    by_reference = getattr(cloudpickle.cloudpickle, "_should_pickle_by_reference", None)
    try:
        answer = not by_reference(obj) if by_reference else obj.__module__ == "__main__"
    except Exception:
        answer = False
    if len(_BY_VALUE) > 4096:
        _BY_VALUE.clear()
    try:
        _BY_VALUE[obj] = answer
    except TypeError:
        pass
    return answer


_BY_VALUE: dict = {}
_REGISTERED_BY_VALUE: list = [frozenset()]


def _forget_by_value_answers_if_registrations_changed() -> None:
    registered = frozenset(getattr(cloudpickle.cloudpickle, "_PICKLE_BY_VALUE_MODULES", ()))
    if registered != _REGISTERED_BY_VALUE[0]:
        _BY_VALUE.clear()
        _REGISTERED_BY_VALUE[0] = registered


class _ByReferencePickler(pickle.Pickler):
    """The C pickler, for objects whose every class and function pickles by reference (as
    cloudpickle would pickle them too): about four times faster than cloudpickle's pickler
    on a small step. Anything cloudpickle would store by value stops it (:class:`_ByValue`)."""

    def __init__(self, file, buffer_callback):
        super().__init__(file, protocol=PROTOCOL, buffer_callback=buffer_callback)

    def reducer_override(self, obj):
        cls = type(obj)
        if cls in _PLAIN_TYPES:  # (called for every object but the builtin scalars and containers)
            return NotImplemented
        if cls is np.ndarray or cls is np.memmap:
            return _array_reduce(obj) or NotImplemented
        if isinstance(obj, _CODE_TYPES):
            if _BY_VALUE.get(obj) is False or not _pickled_by_value(obj):
                return NotImplemented
            raise _ByValue(obj)
        if len(_PLAIN_TYPES) < 4096:
            _PLAIN_TYPES.add(cls)
        return NotImplemented


#: Types of objects that are neither arrays nor classes nor functions (met while pickling).
_PLAIN_TYPES: set = set()
_CODE_TYPES = (type, types.FunctionType)


class _ByValue(Exception):
    """Raised by :class:`_ByReferencePickler` at an object only cloudpickle pickles right."""


def _dumps(obj) -> tuple[memoryview, list[memoryview], set[str]]:
    """Pickle ``obj``: the stream, the out-of-band buffers, the by-value names.

    The C pickler first; if the object holds anything that pickles by value (a class or
    function of ``__main__``, a lambda, a local class…) or that only cloudpickle can pickle,
    cloudpickle's pickler does it all again (its errors are the ones reported)."""
    _forget_by_value_answers_if_registrations_changed()
    try:
        stream, buffers, _ = _pickle_with(_ByReferencePickler, obj)
        return stream, buffers, set()
    except Exception:  # (by value, or not picklable by the C pickler alone)
        return _pickle_with(_Pickler, obj)


def _pickle_with(pickler_class, obj) -> tuple[memoryview, list[memoryview], set[str]]:
    out = io.BytesIO()
    buffers: list[memoryview] = []

    def keep_big(buffer: pickle.PickleBuffer) -> bool:
        raw = buffer.raw()
        if raw.nbytes < BUFFER_MIN_BYTES:
            return True  # in band
        buffers.append(raw)
        return False

    pickler = pickler_class(out, buffer_callback=keep_big)
    pickler.dump(obj)
    return out.getbuffer(), buffers, getattr(pickler, "by_value", set())


def _write_and_hash(folder: Path, names: list[str], datas: list[memoryview]) -> list[str]:
    """Write each buffer to its file, hashing it chunk by chunk as it goes; return the digests.

    Each chunk is hashed right after it is written, while it is still in the CPU cache;
    big files are written by several threads at once (both writing and hashing release
    the GIL).
    """
    jobs = [(folder / n, d) for n, d in zip(names, datas)]
    big = sum(d.nbytes >= _THREAD_MIN_BYTES for d in datas)
    if big < 2:
        return [write_hashed(p, d) for p, d in jobs]
    with ThreadPoolExecutor(workers_for(big)) as pool:
        write = reclaim.in_this_context(write_hashed)  # (its writes make room as this thread's do)
        return list(pool.map(lambda job: write(*job), jobs))


def write_hashed(path: Path, data) -> str:
    """Write ``data`` to a new file at ``path``; return its BLAKE3, computed while writing.

    A big buffer is hashed from memory by a second thread while this one writes it in
    one go (both release the GIL), so the save costs the write, not the write plus the
    hash; a small one is hashed chunk by chunk right after each chunk is written.
    """
    view = memoryview(data).cast("B")
    if view.nbytes >= _CONCURRENT_HASH_MIN_BYTES:
        hashed = hash_in_background(view)
        reclaim.make_room(view.nbytes)  # (as it hashes: the pages this write takes freed just before)
        try:
            _write_file(path, view, view.nbytes)
        finally:
            digest = hashed.result()  # (the view is not let go while it is hashed)
        return digest
    digest = new_hasher(view.nbytes)
    reclaim.make_room(view.nbytes)
    _write_file(path, view, _WRITE_CHUNK, digest)
    return digest.hexdigest()


def _write_file(path: Path, view: memoryview, chunk_size: int, digest=None) -> None:
    """Write ``view`` to a new file in chunks, each hashed into ``digest`` (if given) once written."""
    try:
        with open(path, "wb", buffering=0) as f:
            preallocate_big(f.fileno(), view.nbytes)
            for start in range(0, view.nbytes, chunk_size):
                chunk = view[start:start + chunk_size]
                _write_all(f, chunk)
                if digest is not None:
                    digest.update(chunk)
    except OSError as e:
        raise OSError(e.errno, e.strerror, e.filename or str(path)) from e  # name the file


def _write_all(f, chunk: memoryview) -> None:
    done = 0
    while done < chunk.nbytes:
        done += f.write(chunk[done:])


# ---------------------------------------------------------------- reading

def read_object(folder, files: dict, mmap_mode=None, verify=True, restricted=False, check_stream=False,
                preread=None, stream_label=None):
    """Verify the files of ``folder`` against ``files``, then unpickle the object.

    ``mmap_mode`` (``"r"``, ``"r+"``, ``"c"``) maps the buffer files instead of reading
    them, so arrays come back backed by ``np.memmap`` (with ``"r+"`` writes go to the dump,
    whose next load then reports the files as modified). ``verify``: ``True`` trusts the
    stat cache, ``"full"`` re-hashes everything, ``False`` checks sizes only.
    ``restricted``: unpickle through the allow-list (an untrusted dump, DESIGN §5a).
    ``check_stream``: hash the pickle's bytes as read, whatever ``verify`` and the stat
    cache say (the cache lives in the dump, and a file can change after it was verified).
    ``preread``: ``{name: bytes or array}`` of files already read and verified (hashed as
    read) by :func:`~stepline.saving.integrity.verify_files`, the pickle's bytes included
    (an inline pickle's, :mod:`stepline.saving.inline`, too), and ``{name: os.stat_result}``
    of files it checked without reading them: each is opened only if it is still that very
    file (not replaced, not written to since), so what is verified is what is loaded. ``stream_label``: how messages
    name the pickle (by default its path).
    """
    if mmap_mode not in _MMAP_MODES:
        raise ValueError(f"mmap_mode must be one of {_MMAP_MODES}, not {mmap_mode!r}")
    if preread and type(files) is dict and len(files) == 1 and STREAM_NAME in files \
            and type(preread.get(STREAM_NAME)) in _BYTES:
        # the pickle alone, read and verified (a tiny step's, inline): nothing else to check or read
        return loads_verified(stream_label or os.path.join(folder, STREAM_NAME), preread[STREAM_NAME],
                              files[STREAM_NAME], restricted)
    folder = folder if isinstance(folder, Path) else Path(folder)
    preread = dict(preread or {})
    verified = bool(files) and all(name in preread for name in files)  # read as verify_files checked them
    if not verified:
        if not folder.is_dir():
            raise NotADumpError(f"{folder}: no such folder: there is no stepline dump here")
        check_records(files, folder)
    if STREAM_NAME not in files:
        raise ManifestError(f"{folder}: the manifest lists no {STREAM_NAME}")
    stream_path = stream_label or folder / STREAM_NAME  # (only for messages)
    _check_python(stream_path, files[STREAM_NAME])
    if not verified:
        unread = {n: r for n, r in files.items() if n not in preread}
        preread.update(verify_files(folder, unread, verify, map_for if mmap_mode else buffer_for))
    stream = preread.pop(STREAM_NAME, None)  # hashed as it was read: these bytes are unpickled
    names = _buffer_names(folder, files)
    if mmap_mode == "r+" and names:
        mark_mapped_writable(folder, names)  # writes through the map may leave mtime and ctime as they were
    paths = [folder / n for n in names]
    try:
        if stream is None or isinstance(stream, os.stat_result):  # (checked, not read: read it now)
            stream = read_checked(folder / STREAM_NAME, stream)
            if check_stream:
                check_stream_digest(stream_path, stream, files[STREAM_NAME])
        buffers = _map_buffers(paths, mmap_mode, [files[n]["size"] for n in names], preread) if mmap_mode \
            else _read_buffers(paths, preread, [files[n]["size"] for n in names])
    except OSError as e:
        raise StepLoadError(f"{e.filename}: cannot read ({e.strerror or e})") from e
    return _loads(stream_path, stream, buffers, restricted)


def loads_verified(label, stream: bytes, record: dict, restricted: bool = False):
    """The object pickled in ``stream``, bytes already read and verified against ``record``
    (an inline pickle, decoded and checked): a pickle with no buffer files. ``label``: how
    messages name it."""
    _check_python(label, record)
    return _loads(label, stream, [], restricted)


def check_stream_digest(path: Path, stream: bytes, record: dict) -> None:
    """Raise :class:`CorruptFileError` unless ``stream`` has the digest its record lists."""
    from .integrity import digest_bytes
    algorithm = DIGEST if DIGEST in record else "sha256"
    actual = digest_bytes(stream) if algorithm == DIGEST else hashlib.sha256(stream).hexdigest()
    if actual != record[algorithm]:
        raise CorruptFileError(f"{path}: {algorithm} mismatch (manifest {record[algorithm][:12]}…, file "
                               f"{actual[:12]}…): the file was modified or corrupted")


def _check_python(path: Path, record: dict) -> None:
    """Refuse code pickled by value under another Python minor version."""
    saved, names = record.get("python"), record.get("by_value")
    running = platform.python_version()
    if names and saved and saved.split(".")[:2] != running.split(".")[:2]:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise IncompatibleDumpError(
            f"{path}: holds code pickled by value ({shown}) under Python {saved}; this is Python "
            f"{running}. Load it with Python {'.'.join(saved.split('.')[:2])}, or make those "
            f"classes importable (a module, not __main__) and save again")


def _buffer_names(folder: Path, files: dict) -> list[str]:
    """The buffer files of ``files``, in pickling order (they must be numbered 0..n-1)."""
    indexed = sorted((int(m[1]), n) for n in files if (m := _BUFFER_NAME.fullmatch(n)))
    if [i for i, _ in indexed] != list(range(len(indexed))):
        raise ManifestError(f"{folder}: buffer files are not numbered 0..{len(indexed) - 1}: "
                            f"{[n for _, n in indexed]}")
    return [n for _, n in indexed]


def _map_buffers(paths: list[Path], mode: str, sizes: list[int], checked: dict) -> list[np.memmap]:
    """Map each buffer file; one ``checked`` (``{name: os.stat_result}``) lists must still be
    that file when opened. (Once mapped, a later write to the file shows through the map: a
    map is the file, see docs/saving.md.)"""
    maps = []
    for path, size in zip(paths, sizes):
        if size == 0:  # (an empty file cannot be mapped)
            maps.append(np.empty(0, np.uint8))
            continue
        with _open_listed(path, size, os.O_RDWR if mode == "r+" else os.O_RDONLY, checked.get(path.name)) as f:
            maps.append(np.memmap(f, dtype=np.uint8, mode=mode, shape=(size,)))
    return maps


def buffer_for(name: str, size: int):
    """A fresh page-aligned array to read the buffer file ``name`` into; ``None`` for other files."""
    return _page_aligned_empty(size) if _BUFFER_NAME.fullmatch(name) else None


def map_for(name: str, size: int):
    """``BY_MAP`` for the buffer file ``name`` a mapped load will map (hash it through a map); ``None`` for other files."""
    return BY_MAP if _BUFFER_NAME.fullmatch(name) else None


def _read_buffers(paths: list[Path], preread: dict, sizes: list[int]) -> list[np.ndarray]:
    """Each buffer file in a fresh array (``preread[name]`` if read already), several
    read at once when they are big."""
    if not paths:
        return []
    todo = [(p, s) for p, s in zip(paths, sizes) if _unread(preread.get(p.name))]
    sizes = [s for _, s in todo]
    checked = [preread.get(p.name) for p, _ in todo]
    todo = [p for p, _ in todo]
    if len(todo) < 2 or sum(sizes) < _THREAD_MIN_BYTES:
        read = [_read_into(p, s, c) for p, s, c in zip(todo, sizes, checked)]
    else:
        with ThreadPoolExecutor(workers_for(len(todo))) as pool:
            read = list(pool.map(_read_into, todo, sizes, checked))
    fresh = {p.name: buf for p, buf in zip(todo, read)}
    return [fresh[p.name] if p.name in fresh else preread[p.name] for p in paths]


def _unread(entry) -> bool:
    return entry is None or isinstance(entry, os.stat_result)


def read_checked(path: Path, checked: os.stat_result | None) -> bytes:
    """The bytes of a file its manifest lists, which must still be the file ``checked``
    describes (when given) and not change while it is read."""
    size = checked.st_size if checked is not None else None
    with _open_listed(path, size, os.O_RDONLY, checked) as f:
        data = f.read() if size is None else bytearray(size)
        if size is not None:
            read_into(f, data, where=path)
            check_unchanged(f, checked, path, CorruptFileError)
    return data


def _read_into(path: Path, size: int, checked: os.stat_result | None = None) -> np.ndarray:
    """The whole file in a preallocated, page-aligned array (it must still be ``size`` bytes,
    and the very file ``checked`` describes, when given)."""
    try:
        buf = _page_aligned_empty(size)
    except MemoryError:
        raise StepLoadError(f"{path}: {size} bytes, more than this process can allocate to load it") from None
    with _open_listed(path, size, os.O_RDONLY, checked) as f:
        read_into(f, buf, where=path)
        if checked is not None:
            check_unchanged(f, checked, path, CorruptFileError)
    return buf


def _open_listed(path: Path, size: int | None, flags: int, checked: os.stat_result | None = None):
    """Open a buffer file without blocking or following a link (a FIFO or a link put there
    after it was checked is refused), checking it still has the ``size`` it was checked with,
    and is the very file ``checked`` (its ``os.stat`` when verified) describes, when given."""
    if checked is not None:
        return open_checked(path, checked, flags, CorruptFileError, "file its manifest lists")
    f = open_regular(path, flags, CorruptFileError, "buffer file its manifest lists")
    if size is None:
        return f
    actual = os.fstat(f.fileno()).st_size
    if actual != size:
        f.close()
        how = "truncated" if actual < size else "appended to"
        raise CorruptFileError(f"{path}: size {actual} bytes when opened, {size} when checked: the file was "
                               f"{how} while loading")
    return f


def _page_aligned_empty(size: int) -> np.ndarray:
    """An uninitialised byte array starting on a page boundary.

    Large allocations otherwise start 16 bytes into a page, and on some CPUs (AMD Zen) the
    kernel's copy from the page cache into such a buffer runs about 3x slower. (A
    ``MemoryError`` is worded by the caller, who knows the file.)
    """
    raw = np.empty(size + _PAGE, dtype=np.uint8)
    start = -raw.ctypes.data % _PAGE
    return raw[start:start + size]


def _loads(path: Path, stream: bytes, buffers: list, restricted: bool = False):
    """``pickle.loads`` (or the restricted unpickler) whose failures become
    :class:`UnpicklingError` naming ``path``."""
    try:
        if restricted:
            from stepline.trust.unpickler import restricted_loads
            return restricted_loads(stream, buffers=buffers, where=path)
        return pickle.loads(stream, buffers=buffers)
    except StepLoadError:
        raise
    except ModuleNotFoundError as e:
        raise UnpicklingError(f"{path}: cannot unpickle: module {e.name!r} not found ({e}); {_HINT}") from e
    except (AttributeError, ImportError) as e:
        hint = f"; {_HINT}" if isinstance(e, ImportError) or "Can't get attribute" in str(e) else ""
        raise UnpicklingError(f"{path}: cannot unpickle: {type(e).__name__}: {e}{hint}") from e
    except Exception as e:
        raise UnpicklingError(f"{path}: cannot unpickle: {type(e).__name__}: {e}") from e
