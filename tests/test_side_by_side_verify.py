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
from stepline.base import BaseStep
from stepline.saving import CorruptFileError

N = (16 << 20) + 4099  # (a big file each: above hashing.PARALLEL_READ_MIN_BYTES)
UNPICKLED: list[str] = []
_OPENED: dict[str, int] = {}  # buffer file path -> the thread that opened it
_RECORDING: list[bool] = []


class Bytes(BaseStep):
    """A fitted step holding ``n`` random bytes (its own buffer file)."""

    def __init__(self, n=0, name=None):
        super().__init__(hyperparams={"n": n}, name=name)

    def fit(self, data_inputs, expected_outputs=None):
        self.data_ = np.random.default_rng(len(self.name)).integers(0, 256, self.hyperparams["n"], np.uint8)
        return self

    def transform(self, data_inputs):
        return data_inputs

    def __setstate__(self, state):
        UNPICKLED.append(state.get("name", "?"))
        self.__dict__.update(state)


def _hook(event, args):
    if event == "open" and _RECORDING and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        if os.path.basename(path).startswith("buffer-"):
            _OPENED.setdefault(path, threading.get_ident())


sys.addaudithook(_hook)


@pytest.fixture(autouse=True)
def _clean():
    _OPENED.clear()
    yield
    _RECORDING.clear()


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
    _RECORDING.append(True)
    loaded = CX(folder).load(pipeline.name, mmap_mode=mmap_mode)
    _RECORDING.clear()
    for ours, theirs in zip(loaded.values(), pipeline.values()):
        assert np.array_equal(ours.data_, theirs.data_)
    buffers = [os.fspath(b) for b in _buffers(folder, pipeline)]
    assert set(buffers) <= set(_OPENED), _OPENED
    assert len({_OPENED[b] for b in buffers}) >= 2, "every step's file was verified by one thread"


@pytest.mark.parametrize("bad", [[1], [0, 2], [2]])
def test_a_bit_flipped_in_any_step_fails_the_load_before_any_step_is_unpickled(tmp_path, bad):
    pipeline, folder = _copied(tmp_path)
    buffers = _buffers(folder, pipeline)
    for index in bad:
        with open(buffers[index], "r+b") as f:
            f.seek(N // 3)
            byte = f.read(1)
            f.seek(N // 3)
            f.write(bytes([byte[0] ^ 1]))
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
