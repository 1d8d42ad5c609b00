"""The parallel read of a big file loaded alone (issue 14): one thread per core, each reading its
own contiguous part into the array the load returns; the parts cover the file once, in order, at
huge-page boundaries, and a file that ends early is an error naming the first missing byte.
(Every test of tests/test_copied_load.py also runs through this read.)"""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from stepline.saving import CorruptFileError, hashing

C = hashing.CHUNK_BYTES


@pytest.mark.parametrize("size", [1, C, C + 1, 3 * C, 3 * C + 1, 10 * C + 7])
@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_the_parts_of_a_parallel_read_cover_the_file_once_in_order_at_huge_page_boundaries(size, count):
    parts = hashing._parts(size, count)
    assert parts[0][0] == 0 and parts[-1][1] == size and 1 <= len(parts) <= count
    assert all(end == start for (_, end), (start, _) in zip(parts, parts[1:]))
    assert all(start % (2 << 20) == 0 and start < end for start, end in parts)


def test_a_parallel_read_of_a_file_truncated_while_it_is_read_raises_and_leaves_no_thread(tmp_path):
    size = 6 * C + 11
    path = tmp_path / "f.bin"
    np.random.default_rng(1).integers(0, 256, size, np.uint8).tofile(path)
    with open(path, "rb", buffering=0) as f:
        os.truncate(path, 3 * C)  # the second part (from 4 MiB on) finds the end early
        with pytest.raises(CorruptFileError, match=rf"truncated while reading \({3 * C} of {size} bytes\)"):
            hashing.read_parallel(f, memoryview(np.empty(size, np.uint8)), where=str(path))
    assert not [t for t in threading.enumerate() if t.name.startswith(hashing.THREAD_PREFIX)]
