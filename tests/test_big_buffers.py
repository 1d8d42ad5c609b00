"""The big-array path of saving and loading (issue 14): buffers written straight from the
array's memory into preallocated files, the replaced dump deleted off the save's path,
and what the stat cache may vouch for. Real files, real threads, real processes."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import numpy as np
import pytest

from stepline import CX, Pipeline
from stepline.base import BaseStep
from stepline.saving import atomic, integrity, removal, spare
from stepline.saving.atomic import wait_for_cleanup
from stepline.saving.objectfile import preallocate


class Weights(BaseStep):
    """A fitted step holding one float32 array of ``n`` values."""

    def __init__(self, n=0, name=None):
        super().__init__(hyperparams={"n": n}, name=name)

    def fit(self, data_inputs, expected_outputs=None):
        self.w_ = np.random.default_rng(0).random(self.hyperparams["n"], dtype=np.float32)
        return self

    def transform(self, data_inputs):
        return data_inputs


def _pipeline(n=300_000):
    return Pipeline([Weights(n, name="a"), Weights(n, name="b")], name="p").fit(None)


def test_a_save_leaves_the_previous_dump_to_the_background_thread_deleting_it(tmp_path, monkeypatch):
    """A full save keeps the dump it replaced as the spare tree, its big files moved out of
    the tree and (too small to be kept for the next save: ``spare.KEEP_DATA_MIN_BYTES``)
    deleted by a background thread; no save deletes anything handed to it on its own path
    (one did: both ran rmtree on the same folder), and none waits for that deletion."""
    release = threading.Event()
    deleted_on, timed_out = [], []
    real_remove, real_delete_moved = removal.remove_now, spare._delete_moved

    def watched(real, what):
        def run(*args):
            deleted_on.append((threading.current_thread().name, what(*args)))
            if threading.current_thread().name.startswith("stepline-cleanup"):
                if not release.wait(30):  # the background deletion of the first dump's files is still under way
                    timed_out.append(what(*args))  # (a save waited for it: only the timeout let it go on)
            real(*args)
        return run

    monkeypatch.setattr(removal, "remove_now", watched(real_remove, lambda path, *_: path.name))
    monkeypatch.setattr(spare, "_delete_moved", watched(real_delete_moved, lambda fd, moved: moved))
    p = _pipeline()
    try:
        for _ in range(3):
            p.save(CX(tmp_path), full_dump=True)
        on_the_save_path = [name for thread, name in deleted_on if not thread.startswith("stepline-cleanup")]
    finally:
        release.set()
        wait_for_cleanup()
    assert on_the_save_path == [] and timed_out == []
    assert sorted(e.name for e in tmp_path.iterdir() if not e.name.endswith((".lock", ".turn"))) == [".p.spare", "p"]
    kept = sorted(str(f.relative_to(tmp_path)) for f in (tmp_path / ".p.spare").rglob("*") if f.is_file())
    assert kept == [".p.spare/p/a/stepline.json", ".p.spare/p/b/stepline.json", ".p.spare/p/stepline.json"]
    np.testing.assert_array_equal(CX(tmp_path).load("p")["b"].w_, p["b"].w_)


def test_a_leftover_of_another_process_is_still_cleaned_by_the_next_save(tmp_path):
    p = _pipeline(1000)
    p.save(CX(tmp_path), full_dump=True)
    wait_for_cleanup()
    stale = tmp_path / ".p.tmp-0badc0de"
    (stale / "p").mkdir(parents=True)  # what a save killed before its swap leaves
    p.save(CX(tmp_path), full_dump=True)
    assert not stale.exists()


def test_preallocate_reserves_the_blocks_of_a_new_file_before_it_is_written(tmp_path):
    if sys.platform != "linux":
        pytest.skip("preallocation uses Linux's fallocate")
    path = tmp_path / "f"
    with open(path, "wb") as f:
        preallocate(f.fileno(), 8 << 20)
        st = os.fstat(f.fileno())
    assert st.st_size == 0 and st.st_blocks * 512 >= 8 << 20  # reserved, size unchanged


_PREALLOCATED: list[list] = []  # while a test records: [(path, size)] of the files reserved


def _on_preallocate(event, args):
    if event == "stepline.preallocate" and _PREALLOCATED:
        fd, size = args
        _PREALLOCATED[-1].append((os.readlink(f"/proc/self/fd/{fd}"), size))


sys.addaudithook(_on_preallocate)


def _preallocated_while(action) -> list:
    _PREALLOCATED.append([])
    try:
        action()
    finally:
        return _PREALLOCATED.pop()


def test_buffers_and_torch_weights_are_preallocated_by_the_same_mechanism(tmp_path):
    if sys.platform != "linux":
        pytest.skip("preallocation uses Linux's fallocate")
    torch = pytest.importorskip("torch")
    from stepline.torch.tensorfile import write_safetensors_shards
    step = Weights(1 << 20, name="w").fit(None)  # 4 MiB: one buffer file
    reserved = _preallocated_while(lambda: step.save(CX(tmp_path / "np"), full_dump=True))
    buffer = tmp_path / "np" / "w" / "buffer-000.bin"
    assert [(os.path.basename(p), n) for p, n in reserved] == [("buffer-000.bin", buffer.stat().st_size)]
    tensors = {"w": torch.ones(1 << 20), "b": torch.zeros(3)}
    written = []
    reserved = _preallocated_while(lambda: written.extend(write_safetensors_shards(tmp_path, "model", tensors)))
    (name, _, size), = written
    assert size == (tmp_path / name).stat().st_size > 4 << 20
    assert len(reserved) == 1 and reserved[0][1] == size, reserved
    assert os.path.basename(reserved[0][0]).startswith(f".{name}.tmp-"), "reserved before being written, renamed after"
    small = _preallocated_while(lambda: write_safetensors_shards(tmp_path, "tiny", {"b": torch.zeros(3)}))
    assert small == [], "a small file is written without a reservation"


def test_a_big_buffer_is_written_exactly_and_verifies(tmp_path):
    p = _pipeline(3_000_000)  # 12 MB per step: preallocated, hashed by a second thread
    p.save(CX(tmp_path), full_dump=True)
    buffer = tmp_path / "p" / "a" / "buffer-000.bin"
    assert buffer.stat().st_size == p["a"].w_.nbytes
    np.testing.assert_array_equal(np.fromfile(buffer, dtype=np.float32), p["a"].w_)
    loaded = CX(tmp_path).load("p", verify="full")
    np.testing.assert_array_equal(loaded["a"].w_, p["a"].w_)


@pytest.fixture
def hashed(monkeypatch):
    """The names of the files the load hashes."""
    names = []
    real = integrity.file_digest
    monkeypatch.setattr(integrity, "file_digest", lambda p, *a: names.append(os.path.basename(p)) or real(p, *a))
    return names


@pytest.mark.parametrize("boot", ["another boot", None, "absent"])
def test_the_stat_cache_vouches_only_within_the_boot_that_wrote_it(tmp_path, hashed, boot):
    """Saves do not fsync: after a power cut a file can keep its size and times with blocks
    never written back. A cache from before a reboot (or from a stepline that did not note
    the boot) must vouch for nothing, so the first load after it hashes every buffer."""
    p = _pipeline()
    p.save(CX(tmp_path), full_dump=True)
    CX(tmp_path).load("p")
    assert "buffer-000.bin" not in hashed  # this boot's cache vouches for what it wrote
    for cache in tmp_path.rglob(integrity.STAT_CACHE_NAME):
        data = json.loads(cache.read_text())
        assert data["boot"] == integrity.BOOT_ID
        data.pop("boot") if boot == "absent" else data.update(boot=boot)
        cache.write_text(json.dumps(data))
    hashed.clear()
    loaded = CX(tmp_path).load("p")
    assert hashed.count("buffer-000.bin") == 2  # both steps' buffers, hashed again
    np.testing.assert_array_equal(loaded["a"].w_, p["a"].w_)
    hashed.clear()
    CX(tmp_path).load("p")
    assert "buffer-000.bin" not in hashed  # cached again, under this boot


def _has_multigrain_timestamps(folder) -> bool:
    """Whether a file whose times were just read gets a fine-grained timestamp when next
    touched (Linux 6.13+ on ext4, xfs, btrfs, tmpfs): then it is newer than a file written
    in the same clock tick."""
    written, touched = folder / "written", folder / "touched"
    for _ in range(20):
        written.write_bytes(b"x")
        touched.write_bytes(b"y")
        ctime = os.stat(written).st_ctime_ns
        if os.stat(touched).st_mtime_ns <= ctime:
            os.utime(touched)
            return os.stat(touched).st_mtime_ns > ctime
    return True  # (never the same tick: nothing to wait for either)


def test_a_save_of_big_steps_waits_for_no_clock_tick_to_make_its_stat_cache_trusted(tmp_path, monkeypatch):
    """The stat cache must be strictly newer than the files it vouches for; written in the
    same tick, it used to wait a tick (1.1 ms) per step folder. With multigrain timestamps,
    touching it right after reading its times settles it at once."""
    if not _has_multigrain_timestamps(tmp_path):
        pytest.skip("this kernel's file timestamps are coarse: the cache waits for the next tick")
    p = _pipeline()
    p.save(CX(tmp_path / "d"), full_dump=True)
    slept = []

    class Clock:  # the stat cache's clock, noting each wait (and waiting)
        monotonic = staticmethod(time.monotonic)

        @staticmethod
        def sleep(seconds):
            slept.append(seconds)
            time.sleep(seconds)

    monkeypatch.setattr(integrity, "time", Clock)
    for _ in range(3):
        p.save(CX(tmp_path / "d"), full_dump=True)
    assert slept == []
    hashed = []
    real = integrity.file_digest
    monkeypatch.setattr(integrity, "file_digest", lambda path, *a: hashed.append(path) or real(path, *a))
    loaded = CX(tmp_path / "d").load("p")
    assert hashed == []  # the cache the last save wrote vouches for every buffer at once
    np.testing.assert_array_equal(loaded["a"].w_, p["a"].w_)
