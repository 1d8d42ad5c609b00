"""The first load of a copied dump (issue 14): each buffer file is read once, in chunks,
straight into the array the load returns, and each chunk is hashed on a second thread
while the next one is read. Nothing is handed out (or unpickled) before the whole digest
matched. Real files, real threads, real pipes and FIFOs; file-system changes made at the
exact moment a load opens a file through an audit hook (no mocks)."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading

import blake3
import numpy as np
import pytest

from stepline import CX
from stepline.saving import CorruptFileError, hashing, integrity
from stepline.saving.hashing import CHUNK_BYTES, SERIAL_CHUNK_BYTES, THREAD_PREFIX, read_hashed
from stepline.saving.manifest import read_manifest

from bytes_steps import ON_OPEN, UNPICKLED, Bytes, flip

C = CHUNK_BYTES
SERIAL = SERIAL_CHUNK_BYTES


@pytest.fixture(autouse=True)
def _disarmed():
    yield
    ON_OPEN.clear()


@pytest.fixture(autouse=True, params=["pipelined read", "parallel read"])
def read_mode(request, monkeypatch):
    """Every test runs with a file loaded alone read by one thread while another hashes it,
    and read by one thread per core, then hashed in memory (the default from 16 MiB on)."""
    threshold = 1 << 62 if request.param == "pipelined read" else C + 1
    monkeypatch.setattr(hashing, "PARALLEL_READ_MIN_BYTES", threshold)
    return request.param


def _hash_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def _saved(tmp_path, n: int, name="s"):
    """A one-step dump of ``n`` bytes under ``tmp_path/orig``; ``(step, root)``."""
    step = Bytes(n, name=name).fit(None)
    step.save(CX(tmp_path / "orig"), full_dump=True)
    return step, tmp_path / "orig"


def _copy(tmp_path, root):
    """A copy of the dump at ``root``: new inodes, so the stat cache vouches for nothing."""
    shutil.copytree(root, tmp_path / "copy")
    return tmp_path / "copy"


SIZES = [0, 1, C - 1, C, C + 1, 3 * C + 1]


# ---------------------------------------------------------------- exact at every chunk boundary

@pytest.mark.parametrize("size", SIZES + [SERIAL - 1, SERIAL + 1, 3 * SERIAL])
@pytest.mark.parametrize("alone", [True, False], ids=["pipelined", "hashed on the reading thread"])
def test_a_file_is_read_and_hashed_exactly_at_every_chunk_boundary(tmp_path, size, alone):
    data = np.random.default_rng(size).integers(0, 256, size, np.uint8)
    path = tmp_path / "f.bin"
    data.tofile(path)
    into = np.full(size, 7, np.uint8)
    assert integrity.file_digest(path, "blake3", into, None, alone) == blake3.blake3(data).hexdigest()
    np.testing.assert_array_equal(into, data)
    assert integrity.file_digest(path, "blake3", None, size, alone) == blake3.blake3(data).hexdigest()  # (a ring)
    into[:] = 0
    assert integrity.file_digest(path, "sha256", into, None, alone) == hashlib.sha256(data).hexdigest()
    np.testing.assert_array_equal(into, data)
    assert not _hash_threads()


def test_a_copied_dump_loads_identical_arrays_and_digests_at_every_chunk_boundary(tmp_path):
    sizes = {f"s{i}": n for i, n in enumerate(SIZES)}  # 0 and 1 byte stay in the pickle
    for name, n in sizes.items():
        Bytes(n, name=name).fit(None).save(CX(tmp_path / "orig"), full_dump=True)
    copy = _copy(tmp_path, tmp_path / "orig")
    for name, n in sizes.items():
        loaded = CX(copy).load(name)
        expected = Bytes(n).fit(None).data_
        np.testing.assert_array_equal(loaded.data_, expected)
        files = read_manifest(copy / name)["files"]
        if n >= 64 << 10:
            assert files["buffer-000.bin"]["blake3"] == blake3.blake3(expected).hexdigest()
    assert not _hash_threads()


# ---------------------------------------------------------------- corruption caught before anything is handed out

@pytest.mark.parametrize("where", ["first chunk", "middle chunk", "last chunk"])
@pytest.mark.parametrize("verify", [True, "full"])
def test_a_bit_flipped_in_any_chunk_of_a_copied_dump_is_caught_before_anything_is_unpickled(tmp_path, where,
                                                                                            verify):
    size = 3 * C + 1
    _, root = _saved(tmp_path, size)
    copy = _copy(tmp_path, root)
    buffer = copy / "s" / "buffer-000.bin"
    flip(buffer, {"first chunk": 3, "middle chunk": size // 2, "last chunk": size - 1}[where])
    UNPICKLED.clear()
    with pytest.raises(CorruptFileError, match="BLAKE3 mismatch") as error:
        CX(copy).load("s", verify=verify)
    assert str(buffer) in str(error.value)
    assert UNPICKLED == [], "the step was unpickled before its buffer's digest was checked"
    assert not _hash_threads(), "the hashing thread outlived the failed load"


class TwoArrays(Bytes):
    """Two buffer files in one step: hashed in parallel, each on one thread."""

    def fit(self, data_inputs, expected_outputs=None):
        super().fit(data_inputs)
        self.more_ = self.data_[::-1].copy()
        return self


@pytest.mark.parametrize("which", ["buffer-000.bin", "buffer-001.bin"])
def test_a_bit_flipped_in_one_of_several_big_files_of_a_step_is_caught(tmp_path, which):
    size = 2 * C + 3
    TwoArrays(size, name="s").fit(None).save(CX(tmp_path / "orig"), full_dump=True)
    copy = _copy(tmp_path, tmp_path / "orig")
    flip(copy / "s" / which, size - 2)
    UNPICKLED.clear()
    with pytest.raises(CorruptFileError, match="BLAKE3 mismatch") as error:
        CX(copy).load("s")
    assert str(copy / "s" / which) in str(error.value) and UNPICKLED == [] and not _hash_threads()
    flip(copy / "s" / which, size - 2)  # restored: the same copy loads
    loaded = CX(copy).load("s")
    np.testing.assert_array_equal(loaded.more_, Bytes(size).fit(None).data_[::-1])


@pytest.mark.parametrize("change", ["truncated", "grown"])
@pytest.mark.parametrize("cache", ["copied", "stat cache warm"])
def test_a_file_truncated_or_grown_between_stat_and_read_is_caught(tmp_path, change, cache):
    size = 2 * C + 5
    step, root = _saved(tmp_path, size)
    folder = _copy(tmp_path, root) if cache == "copied" else root
    if cache != "copied":
        CX(root).load("s")  # the stat cache vouches for the buffer from here on
    buffer = folder / "s" / "buffer-000.bin"
    new_size = size - 1 if change == "truncated" else size + 1
    ON_OPEN[os.fspath(buffer)] = lambda: os.truncate(buffer, new_size)  # after the stat, before the read
    UNPICKLED.clear()
    with pytest.raises(CorruptFileError, match="size|truncated|grew") as error:
        CX(folder).load("s")
    assert str(buffer) in str(error.value)
    assert UNPICKLED == [] and not _hash_threads()
    assert not ON_OPEN, "the load never opened the buffer file"


@pytest.mark.parametrize("cache", ["copied", "stat cache warm"])
def test_a_fifo_put_in_place_of_a_buffer_after_its_stat_neither_hangs_nor_loads(tmp_path, cache):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    _, root = _saved(tmp_path, 2 * C)
    folder = _copy(tmp_path, root) if cache == "copied" else root
    if cache != "copied":
        CX(root).load("s")
    buffer = folder / "s" / "buffer-000.bin"

    def swap_in_a_fifo():
        buffer.unlink()
        os.mkfifo(buffer)

    ON_OPEN[os.fspath(buffer)] = swap_in_a_fifo
    outcome: list = []

    def load():
        try:
            outcome.append(CX(folder).load("s"))
        except Exception as e:  # noqa: BLE001 (the test checks which)
            outcome.append(e)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    loader.join(timeout=30)
    hung = loader.is_alive()
    if hung:  # give the blocked open its writer, so that the thread ends
        os.close(os.open(buffer, os.O_WRONLY | os.O_NONBLOCK))
        loader.join(timeout=30)
    assert not hung, "the load hung opening a FIFO"
    assert isinstance(outcome[0], CorruptFileError), outcome
    assert str(buffer) in str(outcome[0]) and "FIFO" in str(outcome[0])


# ---------------------------------------------------------------- short reads

@pytest.mark.parametrize("written", [0, 1000, C + 3])
@pytest.mark.parametrize("hashing", ["into the array", "through the ring"])
@pytest.mark.parametrize("pipelined", [True, False])
def test_a_short_read_from_a_pipe_raises_and_leaves_no_thread(tmp_path, written, hashing, pipelined):
    size = 3 * C  # several chunks
    read_end, write_end = os.pipe()

    def write():
        with os.fdopen(write_end, "wb") as w:
            w.write(b"x" * written)  # then closed: the reader sees the end of the stream

    writer = threading.Thread(target=write)
    writer.start()
    into = np.empty(size, np.uint8) if hashing == "into the array" else None
    with os.fdopen(read_end, "rb", buffering=0) as f:
        with pytest.raises(CorruptFileError, match=rf"pipe: truncated while reading \({written} of {size} bytes\)"):
            read_hashed(f, blake3.blake3(), size, into, where="pipe", pipelined=pipelined)
    writer.join()
    assert not _hash_threads()


def test_a_file_shorter_than_its_size_when_read_raises(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"y" * (C + 10))
    with open(path, "rb", buffering=0) as f, pytest.raises(CorruptFileError, match="truncated while reading"):
        read_hashed(f, blake3.blake3(), 2 * C, np.empty(2 * C, np.uint8), where=str(path))
    with open(path, "rb", buffering=0) as f, pytest.raises(CorruptFileError, match="grew while reading"):
        read_hashed(f, blake3.blake3(), C, np.empty(C, np.uint8), where=str(path))
    assert not _hash_threads()


# ---------------------------------------------------------------- read once

def test_a_copied_dump_opens_each_of_its_files_once(tmp_path):
    opened: list[str] = []
    _, root = _saved(tmp_path, 3 * C + 1)
    copy = _copy(tmp_path, root)
    step_folder = os.fspath(copy / "s")
    names = sorted(n for n in os.listdir(step_folder) if n.endswith((".bin", ".pkl")))
    assert "buffer-000.bin" in names  # (a small pickle lives inline in the manifest)
    for name in names:
        path = os.path.join(step_folder, name)

        def note(path=path, name=name):
            opened.append(name)
            ON_OPEN[path] = lambda: opened.append(name)  # and any later open too

        ON_OPEN[path] = note
    loaded = CX(copy).load("s", verify="full")
    assert sorted(opened) == names, f"opened: {opened}"
    np.testing.assert_array_equal(loaded.data_, Bytes(3 * C + 1).fit(None).data_)


class _FailingDigest:
    """A BLAKE3 digest that fails at its ``fail_at``-th chunk (whichever thread feeds it)."""

    def __init__(self, fail_at: int):
        self.real, self.fail_at, self.chunks = blake3.blake3(), fail_at, 0

    def update(self, data):
        self.chunks += 1
        if self.chunks == self.fail_at:
            raise MemoryError("the hash failed")
        self.real.update(data)


@pytest.mark.parametrize("fail_at", [1, 3, 6])
def test_a_failing_hash_is_raised_by_the_read_and_leaves_no_thread(tmp_path, fail_at):
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(6 * C))
    with open(path, "rb", buffering=0) as f, pytest.raises(MemoryError, match="the hash failed"):
        read_hashed(f, _FailingDigest(fail_at), 6 * C, np.empty(6 * C, np.uint8), where=str(path))
    assert not _hash_threads()
