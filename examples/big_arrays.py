"""Saving and loading a pipeline that holds big arrays (docs/saving.md, "Speed").

A full dump writes each array straight from memory into its own raw file, hashed as it is
written. A load right after trusts the stat cache and hashes nothing; a *copied* dump (new
inodes) has every byte read once, straight into the array, and hashed by a second thread
while the next chunk is read; ``mmap_mode="c"`` hashes every byte too but
maps the arrays copy-on-write instead of allocating new memory for them.
"""
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from stepline import CX, Pipeline
from stepline.base import BaseStep


class Embedding(BaseStep):
    """A fitted step holding one big float32 table."""

    def __init__(self, rows=1000, name=None):
        super().__init__(hyperparams={"rows": rows}, name=name)

    def fit(self, data_inputs, expected_outputs=None):
        self.table_ = np.random.default_rng(0).random((self.hyperparams["rows"], 256), dtype=np.float32)
        return self

    def transform(self, data_inputs):
        return data_inputs  # ids pass through; lookup() reads the table

    def lookup(self, ids):
        return self.table_[np.asarray(ids) % len(self.table_)]


def timed(label, fn):
    start = time.perf_counter()
    result = fn()
    print(f"{label:<46} {(time.perf_counter() - start) * 1e3:8.1f} ms")
    return result


def main():
    root = Path(tempfile.mkdtemp(prefix="stepline-big-arrays-"))
    try:
        pipeline = Pipeline([Embedding(32_768, name="users"), Embedding(16_384, name="items")],
                            name="recommender").fit([0])  # 32 MiB + 16 MiB of float32
        timed("full dump", lambda: pipeline.save(CX(root / "dump"), full_dump=True))
        timed("load, stat cache warm (nothing hashed)", lambda: CX(root / "dump").load("recommender"))
        shutil.copytree(root / "dump", root / "copy")  # new inodes: the stat cache vouches for nothing
        loaded = timed("first load of the copy (every byte hashed)", lambda: CX(root / "copy").load("recommender"))
        shutil.rmtree(root / "copy")
        shutil.copytree(root / "dump", root / "copy")
        mapped = timed("first load of a copy, mmap_mode='c'", lambda: CX(root / "copy").load("recommender",
                                                                                           mmap_mode="c"))
        mapped["users"].table_[0, 0] = -1.0  # copy-on-write: the change stays in this process
        assert CX(root / "copy").load("recommender", verify="full")["users"].table_[0, 0] != -1.0
        same = all(np.array_equal(pipeline[n].lookup([3, 70_000]), loaded[n].lookup([3, 70_000]))
                   for n in ("users", "items"))
        print("tables identical after loading:", same)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
