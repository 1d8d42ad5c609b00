"""The parallel read of a big file loaded alone (issue 14): the file's 2 MiB slabs are read by one
thread per core straight into the array the load returns, and each slab is hashed, in file order,
by whichever of those threads is free, right after it was read (while it is in the CPU's cache);
a file that ends early is an error naming the first missing byte, and no thread outlives the read.
(Every test of tests/test_copied_load.py also runs through this read.)"""
from __future__ import annotations

import hashlib
import os
import threading

import blake3
import numpy as np
import pytest

from stepline.saving import CorruptFileError, hashing

C = hashing.CHUNK_BYTES


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(hashing.THREAD_PREFIX)]


class _Recording:
    """A digest that remembers the bytes it was given, in order, and which thread gave them."""

    def __init__(self):
        self.inner, self.threads, self.lengths = blake3.blake3(), set(), []

    def update(self, data):
        self.threads.add(threading.current_thread().name)
        self.lengths.append(memoryview(data).nbytes)
        self.inner.update(data)
        return self


@pytest.mark.parametrize("size", [1, C - 1, C, C + 1, 3 * C, 3 * C + 1, 17 * C + 7])
@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_a_parallel_read_fills_the_array_and_hashes_every_byte_once_in_order(tmp_path, monkeypatch, size, threads):
    monkeypatch.setattr(hashing, "PARALLEL_READ_THREADS", threads)
    data = np.random.default_rng(size).integers(0, 256, size, np.uint8)
    path = tmp_path / "f.bin"
    data.tofile(path)
    into, digest = np.full(size, 7, np.uint8), _Recording()
    with open(path, "rb", buffering=0) as f:
        hashing.read_parallel(f, memoryview(into), digest, where=str(path))
        assert f.tell() == size  # (left at the end, where the caller checks that nothing follows)
    np.testing.assert_array_equal(into, data)
    assert digest.inner.hexdigest() == blake3.blake3(data).hexdigest()
    assert sum(digest.lengths) == size and all(n == C for n in digest.lengths[:-1])
    assert not _threads()


def test_the_slabs_are_hashed_by_the_reading_threads_themselves(tmp_path, monkeypatch):
    monkeypatch.setattr(hashing, "PARALLEL_READ_THREADS", 2)
    size = 40 * C
    path = tmp_path / "f.bin"
    np.random.default_rng(2).integers(0, 256, size, np.uint8).tofile(path)
    digest = _Recording()
    with open(path, "rb", buffering=0) as f:
        hashing.read_parallel(f, memoryview(np.empty(size, np.uint8)), digest, where=str(path))
    readers = {threading.current_thread().name} | {f"{hashing.THREAD_PREFIX}-read-1"}
    assert digest.threads <= readers  # no hashing thread of its own: the readers hash what they read


def test_a_parallel_read_hashes_sha256_records_the_same_way(tmp_path):
    size = 5 * C + 3
    data = np.random.default_rng(3).integers(0, 256, size, np.uint8)
    path = tmp_path / "f.bin"
    data.tofile(path)
    into, digest = np.empty(size, np.uint8), hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        hashing.read_parallel(f, memoryview(into), digest, where=str(path))
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    np.testing.assert_array_equal(into, data)


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("cut", [0, 1, 3 * C, 3 * C + 5, 6 * C])
def test_a_parallel_read_of_a_file_truncated_while_it_is_read_raises_and_leaves_no_thread(tmp_path, monkeypatch,
                                                                                          threads, cut):
    monkeypatch.setattr(hashing, "PARALLEL_READ_THREADS", threads)
    size = 6 * C + 11
    path = tmp_path / "f.bin"
    np.random.default_rng(1).integers(0, 256, size, np.uint8).tofile(path)
    with open(path, "rb", buffering=0) as f:
        os.truncate(path, cut)  # the slabs from the cut on find the end early
        with pytest.raises(CorruptFileError, match=rf"truncated while reading \({cut} of {size} bytes\)"):
            hashing.read_parallel(f, memoryview(np.empty(size, np.uint8)), blake3.blake3(), where=str(path))
    assert not _threads()


def test_an_error_of_the_digest_ends_every_reading_thread_and_is_raised(tmp_path, monkeypatch):
    monkeypatch.setattr(hashing, "PARALLEL_READ_THREADS", 4)
    size = 30 * C
    path = tmp_path / "f.bin"
    np.zeros(size, np.uint8).tofile(path)

    class Failing:
        calls = 0

        def update(self, data):
            Failing.calls += 1
            if Failing.calls == 3:
                raise MemoryError("the digest failed")

    with open(path, "rb", buffering=0) as f:
        with pytest.raises(MemoryError, match="the digest failed"):
            hashing.read_parallel(f, memoryview(np.empty(size, np.uint8)), Failing(), where=str(path))
    assert Failing.calls == 3 and not _threads()
