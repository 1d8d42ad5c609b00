"""BLAKE3 of bytes and of files, and the read that hashes a file as it loads it.

A file that must be verified as it is loaded (a copied dump: no stat cache; ``verify="full"``)
is read once, in chunks of ``CHUNK_BYTES``, straight into the memory that will hold it
(no intermediate copy), and each chunk is hashed right after it was read, while it is
still in the CPU's cache. A big file loaded alone (``PARALLEL_READ_MIN_BYTES``) is read by
one thread per core, each hashing the chunks it read, in file order (:func:`read_parallel`). A smaller one is read on one thread while a second hashes it:
``readinto`` and BLAKE3 both release the GIL, so on two cores the load costs about the longer of the read and the hash instead of their sum. The hashing thread is
fed the chunks in file order and at most ``IN_FLIGHT`` chunks ahead of it, so that each
is hashed while it is still in the CPU's last-level cache; when that many wait, the
reading thread hashes the oldest itself (one lock keeps the order), so the two threads
share the hash on an idle machine and the reader never waits for a descheduled thread.
A file hashed without being kept (a record, ``stepline verify``) goes through a small ring
of ``IN_FLIGHT`` reusable chunks the same way, but for a big one a mapped load
(``mmap_mode``) is about to map anyway (:data:`BY_MAP`): that one is hashed through a
read-only map of it, on every core, with no copy at all.

What is read is exactly the size the caller checked: a file that ends early (truncated, a
pipe) or goes on past it (appended to) while it is read is a :class:`CorruptFileError`
naming it, and files are opened without blocking or following links (see
:mod:`~stepline.saving.safe_open`), so a FIFO swapped in after the ``stat`` is refused
rather than waited on. The reading and hashing threads have ended before any of these return or raise.
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import blake3

from .errors import CorruptFileError
from .safe_open import check_unchanged, open_regular

#: Bytes read (and handed to the hashing thread) at a time: 1–2 MiB measured cheapest for
#: the hashing thread (the chunk is still in the shared cache), 4–8 MiB 5–10 % dearer.
CHUNK_BYTES = 2 << 20
#: Bytes read then hashed at a time on one thread (about a core's L2 cache).
SERIAL_CHUNK_BYTES = 1 << 20
#: Chunks read but not yet hashed, at most (the ring's size when nothing is kept).
IN_FLIGHT = 2
#: Name prefix of the threads that hash chunks as they are read.
THREAD_PREFIX = "stepline-verify"
#: The digest a format-v2 record holds.
DIGEST = "blake3"
#: From this size on, bytes in memory are hashed by BLAKE3 on several threads.
MULTITHREAD_MIN_BYTES = 4 << 20
#: From this size on, a file loaded alone is read by one thread per core, each slab hashed
#: right after it is read by the thread that read it (:func:`read_parallel`).
PARALLEL_READ_MIN_BYTES = 16 << 20
#: Threads that read (and hash) one file at most.
PARALLEL_READ_THREADS = 4
#: From this size on, a file given :data:`BY_MAP` is hashed through a map of it.
MAP_MIN_BYTES = 16 << 20


class _ByMap:
    def __repr__(self) -> str:
        return "BY_MAP"


#: Given as ``into`` by a loader that will map the file rather than read it (``mmap_mode``):
#: a big file is then hashed through a read-only map of it, BLAKE3 on every core. Copying the
#: bytes into a ring first cost 1.4-1.7× more (1 GiB: 239 vs 138 ms from the page cache;
#: 215 vs 165 ms right after a copy). A file truncated while it is hashed so would fault the
#: process (SIGBUS), as it would once mapped; that is what ``mmap_mode`` is, so only it asks.
BY_MAP = _ByMap()


def hash_in_background(view) -> Future:
    """The BLAKE3 (hex) of the bytes ``view``, computed on one of this process's hashing
    threads while the caller goes on (a save writes the same bytes meanwhile).

    The threads are started once per process, at most one per core, and kept: starting and
    joining one per file cost a save of 16 MiB arrays half its time (the new thread waits
    for the GIL to say it started, and again to end)."""
    return _hashing_pool().submit(lambda: blake3.blake3(view).hexdigest())


def _hashing_pool() -> ThreadPoolExecutor:
    pid = os.getpid()
    with _POOL_LOCK:
        pool = _POOLS.get(pid)
        if pool is None:  # (a forked child gets a pool of its own: the parent's threads are not in it)
            pool = _POOLS[pid] = ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="stepline-hash")
        return pool


_POOLS: dict = {}
_POOL_LOCK = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: globals().update(_POOL_LOCK=threading.Lock()))


def new_hasher(size_hint: int = 0):
    """A BLAKE3 hasher (``update``/``hexdigest``), multi-threaded for big inputs."""
    if size_hint >= MULTITHREAD_MIN_BYTES:
        return blake3.blake3(max_threads=blake3.blake3.AUTO)
    return blake3.blake3()


def digest_bytes(data) -> str:
    """BLAKE3 hex digest of bytes in memory."""
    return new_hasher(len(data)).update(data).hexdigest()


def file_digest(path, algorithm: str = DIGEST, into=None, size: int | None = None, alone: bool = True) -> str:
    """Hex digest of a file (BLAKE3, or ``"sha256"`` for v1 records), read once, in chunks.

    With ``into`` (a writable buffer of the file's size) the file is read into it as it is
    hashed: the bytes that are verified are the bytes that are loaded. ``size`` (or the
    size of ``into``) is the size the caller checked; the file must still have it. ``size``
    may be the caller's ``os.stat`` of the file: then the file hashed must be that very file
    (:func:`~stepline.saving.safe_open.check_unchanged`).
    ``alone``: no other file is hashed meanwhile, so the file is read on this thread while a
    second thread hashes it; otherwise each chunk is hashed on this thread right after it is read,
    while it is in this core's cache (the other cores are busy with the other files).
    """
    by_map, into = into is BY_MAP, None if into is BY_MAP else into
    view = memoryview(into).cast("B") if into is not None else None
    checked = size if isinstance(size, os.stat_result) else None
    if checked is not None:
        size = checked.st_size
    with open_regular(path, os.O_RDONLY, CorruptFileError, "file its manifest lists") as f:
        if checked is not None:  # the file checked is the one hashed (and the one later opens must find)
            check_unchanged(f, checked, path, CorruptFileError)
        actual = os.fstat(f.fileno()).st_size
        expected = view.nbytes if view is not None else actual if size is None else size
        if actual != expected:
            how = "truncated" if actual < expected else "appended to"
            raise CorruptFileError(f"{path}: size {actual} bytes when opened, {expected} when checked: "
                                   f"the file was {how} while loading")
        if by_map and algorithm == DIGEST and expected >= MAP_MIN_BYTES:
            mapped = _mapped_digest(f, expected, path, alone)
            if mapped is not None:
                return mapped
        digest = _stream_hasher(algorithm)
        if view is not None and alone and expected >= PARALLEL_READ_MIN_BYTES:
            read_parallel(f, view, digest, where=path)
            _check_end(f, expected, path)
        else:
            read_hashed(f, digest, expected, view, where=path, pipelined=alone)
    return digest.hexdigest()


def _mapped_digest(f, size: int, where, alone: bool) -> str | None:
    """BLAKE3 (hex) of the ``size`` bytes of the open file ``f``, hashed through a read-only
    map of it (on every core if ``alone``); ``None`` where the file cannot be mapped."""
    try:
        view = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)
    except (OSError, ValueError):  # (a file system that cannot map: read it instead)
        return None
    try:
        digest = blake3.blake3(view, max_threads=blake3.blake3.AUTO if alone else 1).hexdigest()
    finally:
        view.close()
    if os.fstat(f.fileno()).st_size != size:
        raise CorruptFileError(f"{where}: grew or shrank while hashed: not the {size} bytes it had when checked")
    return digest


def _stream_hasher(algorithm: str):
    """The hasher of one file read in chunks: SHA-256 (v1 records) or BLAKE3 on one thread,
    since the chunks are hashed beside the reads (BLAKE3 on every core there measured 8 %
    more CPU than one hashing thread, for about 5 % less time on an idle 2-core machine)."""
    return hashlib.sha256() if algorithm == "sha256" else blake3.blake3()


def sha256_file(path) -> str:
    """SHA-256 hex digest of a file (v1 records)."""
    return file_digest(path, "sha256")


def read_hashed(f, digest, size: int, into=None, where="", pipelined: bool = True) -> None:
    """Read exactly ``size`` bytes of the open binary file ``f`` (into ``into`` if given,
    a writable buffer of that size), feeding them to ``digest.update`` in order.

    Files of more than one chunk are read on this thread and hashed on another, chunk by
    chunk (``pipelined``), or else hashed chunk by chunk on this thread. Raises :class:`CorruptFileError` naming ``where`` if ``f`` ends before ``size``
    bytes or goes on after them.
    """
    view = memoryview(into).cast("B") if into is not None else None
    if size > CHUNK_BYTES and pipelined:
        _read_pipelined(f, digest, size, view, where)
    else:
        _read_serially(f, digest, size, view, where)
    _check_end(f, size, where)


def read_into(f, into, where="") -> None:
    """Read the open binary file ``f`` into the writable buffer ``into``, which it must fill exactly."""
    view = memoryview(into).cast("B")
    _fill(f, view, 0, view.nbytes, where)
    _check_end(f, view.nbytes, where)


def read_parallel(f, view: memoryview, digest, where="") -> None:
    """Fill ``view`` from the open regular file ``f`` (from its start), feeding every byte to
    ``digest.update`` in file order; leave ``f`` at the end.

    The file is cut into slabs of ``CHUNK_BYTES`` (2 MiB: a huge page each, cut where the
    destination's huge pages start) read (``preadv``) by one thread per core, up to
    ``PARALLEL_READ_THREADS``, each taking the next slab not yet taken and hashing it itself
    once the slabs before it are hashed (see :class:`_Slabs`). So the page faults of the fresh
    memory being filled are taken on every core at once (on a VM that hands freed memory back
    to its host they cost more than the copy itself), no two threads fault in one huge page,
    and each slab is hashed right after it was read, in the cache of the core that read it:
    the bytes cross memory once, as in a plain read, and no thread waits for another's
    wake-up. The threads have ended before this returns or raises; a file that ends early is
    a :class:`CorruptFileError` naming the first byte missing.
    """
    slabs = _Slabs(f.fileno(), view, digest, where)
    threads = [threading.Thread(target=slabs.work, name=f"{THREAD_PREFIX}-read-{i}", daemon=True)
               for i in range(1, min(os.cpu_count() or 1, PARALLEL_READ_THREADS, len(slabs.starts)))]
    for thread in threads:
        thread.start()
    slabs.work()
    for thread in threads:
        thread.join()
    slabs.raise_first_error()
    f.seek(view.nbytes)


class _Slabs:
    """The slabs of one file being read into ``view`` by several threads, each slab hashed by
    the thread that read it, in file order.

    A thread takes the next slab, reads it, waits until every slab before it is hashed, hashes
    it, and takes the next: at most one slab per thread is read and not yet hashed. The first
    error (a slab that ends early, the digest failing) stops every thread after its slab.
    """

    def __init__(self, fd: int, view: memoryview, digest, where):
        self._fd, self._view, self._digest, self._where = fd, view, digest, where
        size = view.nbytes
        first = min(size, -_address(view) % CHUNK_BYTES or CHUNK_BYTES)  # (to the first huge page boundary)
        self.starts = [0] + list(range(first, size, CHUNK_BYTES))
        self._ends = self.starts[1:] + [size]
        self._next_to_take = self._next_to_hash = 0
        self._errors: dict[int, BaseException] = {}  # by the offset of the slab that raised it
        self._changed = threading.Condition()

    def work(self) -> None:
        while (index := self._take()) is not None:
            start, end = self.starts[index], self._ends[index]
            try:
                _pfill(self._fd, self._view, start, end, self._view.nbytes, self._where)
                if self._wait_for_turn(index):
                    self._digest.update(self._view[start:end])
            except BaseException as error:  # noqa: BLE001 (raised by the caller once all have ended)
                with self._changed:
                    self._errors.setdefault(start, error)
                    self._changed.notify_all()
                return
            with self._changed:
                self._next_to_hash += 1
                self._changed.notify_all()

    def raise_first_error(self) -> None:
        if self._errors:
            raise self._errors[min(self._errors)]  # (the first bytes missing, whichever thread saw its end first)
        if self._next_to_hash != len(self.starts):  # (every slab is read and hashed when no thread failed)
            raise RuntimeError(f"{self._where}: {self._next_to_hash} of {len(self.starts)} slabs hashed")

    def _take(self) -> int | None:
        with self._changed:
            if self._errors or self._next_to_take >= len(self.starts):
                return None
            self._next_to_take += 1
            return self._next_to_take - 1

    def _wait_for_turn(self, index: int) -> bool:
        """Wait until the slabs before ``index`` are hashed; ``False`` if a thread failed meanwhile."""
        with self._changed:
            while self._next_to_hash != index and not self._errors:
                self._changed.wait()
            return not self._errors


def _address(view: memoryview) -> int:
    """Where the writable buffer ``view`` starts in memory."""
    return ctypes.addressof(ctypes.c_char.from_buffer(view)) if view.nbytes else 0


def _pfill(fd: int, view: memoryview, start: int, end: int, size: int, where) -> None:
    """Fill ``view[start:end]`` with the file's bytes at the same offsets."""
    offset = start
    while offset < end:
        n = os.preadv(fd, [view[offset:end]], offset)
        if not n:
            raise CorruptFileError(f"{where}: truncated while reading ({offset} of {size} bytes)")
        offset += n


def _read_pipelined(f, digest, size: int, view, where) -> None:
    """Read chunk *k+1* while another thread hashes chunk *k* (in order, ``IN_FLIGHT`` at most
    read and not yet hashed; when that many wait, this thread hashes the oldest itself)."""
    ring = None if view is not None else [memoryview(bytearray(CHUNK_BYTES)) for _ in range(IN_FLIGHT)]
    feed = _HashFeed(digest)
    try:
        for index, start in enumerate(range(0, size, CHUNK_BYTES)):
            length = min(CHUNK_BYTES, size - start)
            feed.wait_below(IN_FLIGHT)  # (and the ring's next chunk is hashed: free to refill)
            chunk = view[start:start + length] if ring is None else ring[index % IN_FLIGHT][:length]
            _fill(f, chunk, start, size, where)
            feed.put(chunk)
        feed.wait_below(1)
    finally:
        feed.close()


class _HashFeed:
    """Chunks read but not yet hashed, fed to one digest in the order they were read by
    whichever thread is free: its own hashing thread, or the reader when it is ahead.

    A chunk is taken from the queue and hashed under one lock (``_turn``), so that two
    threads never hash at once and the digest sees the chunks in file order.
    """

    def __init__(self, digest):
        self._digest = digest
        self._ready: deque = deque()
        self._unhashed = 0  # chunks put and not yet hashed (queued or being hashed)
        self._turn = threading.Lock()
        self._changed = threading.Condition()
        self._closed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name=f"{THREAD_PREFIX}-{id(self):x}", daemon=True)
        self._thread.start()

    def put(self, chunk) -> None:
        with self._changed:
            self._ready.append(chunk)
            self._unhashed += 1
            self._changed.notify_all()

    def wait_below(self, count: int) -> None:
        """Return once fewer than ``count`` chunks are unhashed, hashing them here meanwhile."""
        while True:
            with self._changed:
                if self._error is not None:
                    raise self._error
                if self._unhashed < count:
                    return
            self._hash_oldest()  # (waits for the chunk being hashed elsewhere, if any)

    def close(self) -> None:
        """Drop what is left and end the hashing thread (it finishes the chunk it hashes)."""
        with self._changed:
            self._closed = True
            self._ready.clear()
            self._changed.notify_all()
        self._thread.join()

    def _hash_oldest(self) -> None:
        with self._turn:
            with self._changed:
                if not self._ready:
                    return
                chunk = self._ready.popleft()
            try:
                self._digest.update(chunk)
            finally:
                with self._changed:
                    self._unhashed -= 1
                    self._changed.notify_all()

    def _work(self) -> None:
        while True:
            with self._changed:
                while not self._ready and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
            try:
                self._hash_oldest()
            except BaseException as error:  # noqa: BLE001 (handed to the reader)
                with self._changed:
                    self._error = error
                    self._closed = True
                    self._changed.notify_all()
                return


def _read_serially(f, digest, size: int, view, where) -> None:
    """Read a chunk, hash it while it is in this core's cache, read the next."""
    buffer = None if view is not None else memoryview(bytearray(min(size, SERIAL_CHUNK_BYTES)))
    for start in range(0, size, SERIAL_CHUNK_BYTES):
        length = min(SERIAL_CHUNK_BYTES, size - start)
        chunk = view[start:start + length] if buffer is None else buffer[:length]
        _fill(f, chunk, start, size, where)
        digest.update(chunk)


def _fill(f, chunk: memoryview, offset: int, size: int, where) -> None:
    """Fill ``chunk`` from ``f`` (``offset``: where it starts in the file of ``size`` bytes)."""
    done = 0
    while done < chunk.nbytes:
        n = f.readinto(chunk[done:])
        if not n:  # (0: the end; None: a non-blocking stream with nothing to give)
            raise CorruptFileError(f"{where}: truncated while reading ({offset + done} of {size} bytes)")
        done += n


def _check_end(f, size: int, where) -> None:
    if f.read(1):
        raise CorruptFileError(f"{where}: grew while reading: more than the {size} bytes it had when checked")
