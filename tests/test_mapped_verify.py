"""A mapped load (``mmap_mode``) of a dump the stat cache does not vouch for (a copy): each
big buffer file is hashed through a read-only map of it, on every core, instead of being
read through a ring of chunks that is then thrown away (issue 14). Real files, real maps;
the maps are seen through Python's ``mmap.__new__`` audit event, file-system changes are
made at the moment the load opens a file (an ``open`` audit hook); no mocks."""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest

from stepline import CX
from stepline.saving import CorruptFileError

from bytes_steps import ON_OPEN, UNPICKLED, Bytes, flip

BIG = (16 << 20) + 12_345  # (above hashing.MAP_MIN_BYTES; not a multiple of a page)
_MAPS: list[tuple[int, str]] = []  # (length, the module that made it) of every mmap.mmap made while recording
_RECORDING: list[bool] = []


class Two(Bytes):
    """Two buffer files."""

    def fit(self, data_inputs, expected_outputs=None):
        super().fit(data_inputs)
        self.other_ = self.data_[::-1].copy()
        return self


def _hook(event, args):
    if event == "mmap.__new__" and _RECORDING:
        _MAPS.append((args[1], os.path.basename(sys._getframe(1).f_code.co_filename)))


sys.addaudithook(_hook)


@pytest.fixture(autouse=True)
def _clean():
    UNPICKLED.clear()
    _MAPS.clear()
    yield
    _RECORDING.clear()
    ON_OPEN.clear()


def _copied(tmp_path, n: int):
    """``(step, folder)``: a one-step dump of ``n`` bytes, copied (new inodes: nothing vouched for)."""
    step = Bytes(n, name="s").fit(None)
    step.save(CX(tmp_path / "orig"), full_dump=True)
    shutil.copytree(tmp_path / "orig", tmp_path / "copy")
    return step, tmp_path / "copy"


def _hashed() -> list[int]:
    """The lengths of the maps stepline's hashing made (not np.memmap's)."""
    return [length for length, module in _MAPS if module == "hashing.py"]


@pytest.mark.parametrize("mode", ["r", "c"])
def test_a_mapped_load_of_a_copied_dump_hashes_its_big_buffer_through_a_read_only_map(tmp_path, mode):
    step, folder = _copied(tmp_path, BIG)
    _RECORDING.append(True)
    loaded = CX(folder).load("s", mmap_mode=mode)
    _RECORDING.clear()
    assert np.array_equal(loaded.data_, step.data_)
    assert _hashed() == [BIG], f"maps made: {_MAPS}"
    assert (BIG, "memmap.py") in _MAPS  # (what the load returns: np.memmap's own map)


def test_a_small_buffer_and_a_loaded_copy_are_read_not_mapped_to_be_hashed(tmp_path):
    _, folder = _copied(tmp_path, (1 << 20) + 7)
    _RECORDING.append(True)
    CX(folder).load("s", mmap_mode="r")
    _, big = _copied(tmp_path / "big", BIG)
    CX(big).load("s")  # (the arrays are read into memory: the bytes hashed are the bytes read)
    _RECORDING.clear()
    assert _hashed() == [], f"maps made: {_MAPS}"


@pytest.mark.parametrize("where", [0, BIG // 2, BIG - 1])
@pytest.mark.parametrize("mode", ["r", "c"])
def test_a_bit_flipped_in_a_big_buffer_fails_a_mapped_load_before_anything_is_unpickled(tmp_path, mode, where):
    _, folder = _copied(tmp_path, BIG)
    buffer = folder / "s" / "buffer-000.bin"
    flip(buffer, where)
    UNPICKLED.clear()
    with pytest.raises(CorruptFileError, match="BLAKE3 mismatch") as error:
        CX(folder).load("s", mmap_mode=mode)
    assert str(buffer) in str(error.value)
    assert UNPICKLED == []


@pytest.mark.parametrize("change", ["truncated", "grown"])
def test_a_big_buffer_truncated_or_grown_between_stat_and_map_fails_a_mapped_load(tmp_path, change):
    _, folder = _copied(tmp_path, BIG)
    buffer = folder / "s" / "buffer-000.bin"
    new_size = BIG - 1 if change == "truncated" else BIG + 1
    ON_OPEN[os.fspath(buffer)] = lambda: os.truncate(buffer, new_size)  # after the stat, before the map
    UNPICKLED.clear()  # (only what the load unpickles counts)
    with pytest.raises(CorruptFileError, match="size|truncated|grew") as error:
        CX(folder).load("s", mmap_mode="c")
    assert str(buffer) in str(error.value)
    assert UNPICKLED == [] and not ON_OPEN


def test_several_big_buffers_of_one_step_are_each_hashed_through_a_map(tmp_path):
    step = Two(BIG, name="s").fit(None)
    step.save(CX(tmp_path / "orig"), full_dump=True)
    shutil.copytree(tmp_path / "orig", tmp_path / "copy")
    _RECORDING.append(True)
    loaded = CX(tmp_path / "copy").load("s", mmap_mode="r")
    _RECORDING.clear()
    assert np.array_equal(loaded.other_, step.other_) and np.array_equal(loaded.data_, step.data_)
    assert _hashed() == [BIG, BIG], f"maps made: {_MAPS}"
