"""The first load of a copied pipeline whose steps hold big files (issue 14): the steps' files
are verified side by side, one step per core, before any of them is unpickled. One file's
BLAKE3 is one chain, so a file alone can use one core for its hash; two files' chains run at
once. Real files and threads; which thread opened which file is seen through Python's
``open`` audit event (no mocks)."""

from __future__ import annotations

import os
import shutil
import sys
import threading

import numpy as np
import pytest

from stepline import CX, Pipeline
from stepline.saving import CorruptFileError

from bytes_steps import UNPICKLED, Bytes, flip

N = (16 << 20) + 4099  # (a big file each: above hashing.PARALLEL_READ_MIN_BYTES)
_OPENED: dict[str, int] = {}  # buffer file path -> the thread that opened it
_RECORDING: list[bool] = []
#: A rendezvous: the first open of ``hold`` waits (at most ``WAIT_S``) for ``until`` to be
#: opened; ``met`` notes whether it was. Verified one after the other, it never is.
_RENDEZVOUS: dict = {}
WAIT_S = 5.0


def _hook(event, args):
    if event == "open" and _RECORDING and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        if os.path.basename(path).startswith("buffer-") and path not in _OPENED:
            _OPENED[path] = threading.get_ident()
            if path == _RENDEZVOUS.get("until"):
                _RENDEZVOUS["opened"].set()
            elif path == _RENDEZVOUS.get("hold"):
                _RENDEZVOUS["met"].append(_RENDEZVOUS["opened"].wait(WAIT_S))


sys.addaudithook(_hook)


@pytest.fixture(autouse=True)
def _clean():
    _OPENED.clear()
    yield
    _RECORDING.clear()
    _RENDEZVOUS.clear()


def _copied(tmp_path, steps=3):
    pipeline = Pipeline([Bytes(N, name="s" + "x" * i) for i in range(steps)]).fit(None, None)
    pipeline.save(CX(tmp_path / "orig"), full_dump=True)
    shutil.copytree(tmp_path / "orig", tmp_path / "copy")  # (new inodes: no stat cache vouches for them)
    UNPICKLED.clear()
    return pipeline, tmp_path / "copy"


def _buffers(folder, pipeline) -> list:
    top = next(p for p in folder.iterdir() if p.is_dir())
    return [next((top / step.name).glob("buffer-*.bin")) for step in pipeline.values()]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: nothing to verify side by side")
@pytest.mark.parametrize("mmap_mode", [None, "c"])
def test_the_big_files_of_a_copied_pipeline_are_verified_on_several_threads(tmp_path, mmap_mode):
    pipeline, folder = _copied(tmp_path)
    buffers = [os.fspath(b) for b in _buffers(folder, pipeline)]
    _RENDEZVOUS.update(hold=buffers[0], until=buffers[1], opened=threading.Event(), met=[])
    _RECORDING.append(True)
    loaded = CX(folder).load(pipeline.name, mmap_mode=mmap_mode)
    _RECORDING.clear()
    for ours, theirs in zip(loaded.values(), pipeline.values()):
        assert np.array_equal(ours.data_, theirs.data_)
    assert set(buffers) <= set(_OPENED), _OPENED
    assert _RENDEZVOUS["met"] == [True], "the 2nd step's file was not opened while the 1st step's was verified"
    assert len({_OPENED[b] for b in buffers}) >= 2


@pytest.mark.parametrize("bad", [[1], [0, 2], [2]])
def test_a_bit_flipped_in_any_step_fails_the_load_before_any_step_is_unpickled(tmp_path, bad):
    pipeline, folder = _copied(tmp_path)
    buffers = _buffers(folder, pipeline)
    for index in bad:
        flip(buffers[index], N // 3)
    with pytest.raises(CorruptFileError, match="BLAKE3 mismatch") as error:
        CX(folder).load(pipeline.name)
    assert str(buffers[bad[0]]) in str(error.value)  # (the first bad file in the pipeline's order)
    assert not any(name.startswith("s") for name in UNPICKLED), UNPICKLED


def test_a_missing_file_of_a_later_step_fails_the_load_naming_it(tmp_path):
    pipeline, folder = _copied(tmp_path)
    buffers = _buffers(folder, pipeline)
    os.unlink(buffers[2])
    with pytest.raises(Exception) as error:
        CX(folder).load(pipeline.name)
    assert str(buffers[2]) in str(error.value)
    assert not any(name.startswith("s") for name in UNPICKLED), UNPICKLED


def test_a_warm_load_of_the_same_pipeline_loads_the_same_arrays(tmp_path):
    pipeline, folder = _copied(tmp_path)
    CX(folder).load(pipeline.name)  # (verifies; the stat cache vouches from here on)
    loaded = CX(folder).load(pipeline.name)
    for ours, theirs in zip(loaded.values(), pipeline.values()):
        assert np.array_equal(ours.data_, theirs.data_)
