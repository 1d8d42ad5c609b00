"""Saving and loading a pipeline holding ~1 GiB of float32 arrays in several fitted steps.

In one run, medians over repeats:
  - full-dump save vs ``joblib.dump`` of the same pipeline object, ``pickle`` protocol 5,
    and raw ``np.save`` of the same arrays (the physical floor);
  - load vs ``joblib.load``, ``pickle.load`` and raw ``np.load``;
  - mmap load (``mmap_mode="r"``);
  - a changes-only save after changing one small step vs a full dump.
Targets (issue 3): save ≤ 1.3× np.save; load ≤ 1.3× np.load; mmap load < 50 ms;
changes-only save of one small step < 1/20 of the full dump.

Every saved file gets a SHA-256 in its manifest (DESIGN §5), so two more rows are shown:
the SHA-256 of the same bytes alone, on as many threads as there are arrays (what no
hashed save can beat), and np.save followed by that hashing; and np.save into a new
folder that then replaces the old one, as an atomic save must (both copies exist for a
moment). Each candidate runs its repeats back to back after a warm-up: on VMs that hand
freed memory back to the host, interleaving them makes each pay for the others' page
faults.

    python benchmarks/bench_saving.py [--size-mb 1024] [--steps 4] [--repeats 3]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import joblib
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _timing import median_time, print_table  # noqa: E402

from stepline import CX, Pipeline  # noqa: E402
from stepline.base import BaseStep  # noqa: E402


class Fitted(BaseStep):
    """A fitted step holding one big float32 array."""

    def __init__(self, n_floats=0, name=None):
        super().__init__(hyperparams={"n_floats": n_floats}, name=name)

    def fit(self, data_inputs, expected_outputs=None):
        self.weights_ = np.random.default_rng(0).random(self.hyperparams["n_floats"], dtype=np.float32)
        return self

    def transform(self, data_inputs):
        return data_inputs


def build(size_mb: int, steps: int) -> Pipeline:
    n = size_mb * 2**20 // 4 // steps
    big = [(f"big{i}", Fitted(n)) for i in range(steps)]
    return Pipeline(big + [("small", Fitted(16))], name="bench").fit(None)


def fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    pipeline = build(args.size_mb, args.steps)
    arrays = [s.weights_ for s in pipeline.values()]
    total = sum(a.nbytes for a in arrays)
    base = Path(tempfile.mkdtemp(prefix="stepline-bench-saving-"))
    r = args.repeats
    try:
        ours, raw, jl, pk = base / "ours", base / "raw", base / "joblib", base / "pickle"

        def save_ours():
            pipeline.save(CX(ours), full_dump=True)

        def save_raw():
            fresh(raw)
            for i, a in enumerate(arrays):
                np.save(raw / f"{i}.npy", a)

        def save_raw_atomic():
            """np.save into a fresh sibling folder that then replaces the previous one,
            as an atomic save must (the previous dump stays whole until the new one is)."""
            tmp = fresh(base / "raw-atomic.tmp")
            for i, a in enumerate(arrays):
                np.save(tmp / f"{i}.npy", a)
            old = base / "raw-atomic.old"
            if (base / "raw-atomic").exists():
                os.rename(base / "raw-atomic", old)
            os.rename(tmp, base / "raw-atomic")
            shutil.rmtree(old, ignore_errors=True)

        def hash_all():
            with ThreadPoolExecutor(len(arrays)) as pool:
                list(pool.map(lambda a: hashlib.sha256(memoryview(a).cast("B")).hexdigest(), arrays))

        def save_raw_and_hash():
            save_raw()
            hash_all()

        def save_joblib():
            fresh(jl)
            joblib.dump(pipeline, jl / "p.joblib")

        def save_pickle():
            fresh(pk)
            with open(pk / "p.pkl", "wb") as f:
                pickle.dump(pipeline, f, protocol=5)

        saves = [(label, median_time(fn, r)) for label, fn in [
            ("stepline full dump", save_ours), ("np.save (floor)", save_raw),
            ("np.save, atomic (new folder, then swap)", save_raw_atomic),
            ("SHA-256 alone, all threads (hash floor)", hash_all),
            ("np.save + SHA-256 (floor with hashes)", save_raw_and_hash),
            ("joblib.dump", save_joblib), ("pickle protocol 5", save_pickle)]]

        def load_raw():
            return [np.load(raw / f"{i}.npy") for i in range(len(arrays))]

        def load_pickle():
            with open(pk / "p.pkl", "rb") as f:
                return pickle.load(f)

        loads = [("stepline load", median_time(lambda: CX(ours).load("bench"), r)),
                 ("np.load (floor)", median_time(load_raw, r)),
                 ("joblib.load", median_time(lambda: joblib.load(jl / "p.joblib"), r)),
                 ("pickle.load", median_time(load_pickle, r)),
                 ("stepline load, mmap_mode='r'", median_time(lambda: CX(ours).load("bench", mmap_mode="r"), r)),
                 ("stepline load, verify='full'", median_time(lambda: CX(ours).load("bench", verify="full"), r))]
        loaded = CX(ours).load("bench")
        assert all(np.array_equal(a, b.weights_) for a, b in zip(arrays, loaded.values()))

        def change_small_and_save():
            pipeline["small"].set_hyperparams({"n_floats": 16})  # marks the small step changed
            pipeline.save(CX(ours), full_dump=False)

        partial = median_time(change_small_and_save, max(r, 5))
        print(f"pipeline of {args.steps} fitted steps holding {total / 2**30:.2f} GiB of float32 "
              f"(+1 small step); medians of {r} repeats")
        print_table("save", saves, "np.save (floor)")
        print_table("load", loads, "np.load (floor)")
        t = dict(saves + loads)
        full = t["stepline full dump"]
        print("\nchanges-only save after changing one small step")
        print(f"  {partial * 1e3:.1f} ms = 1/{full / partial:.0f} of the full dump")
        print("\ntargets:")
        hashing = t["SHA-256 alone, all threads (hash floor)"] / t["np.save (floor)"]
        print(f"  save / np.save = {full / t['np.save (floor)']:.2f} (≤ 1.3)")
        print(f"    save / atomic np.save       = {full / t['np.save, atomic (new folder, then swap)']:.2f}")
        print(f"    save / (np.save + SHA-256)  = {full / t['np.save + SHA-256 (floor with hashes)']:.2f}")
        print(f"    SHA-256 alone / np.save     = {hashing:.2f} on {os.cpu_count()} cores")
        print(f"  load / np.load = {t['stepline load'] / t['np.load (floor)']:.2f} (≤ 1.3)")
        mmap_load = t["stepline load, mmap_mode='r'"]
        print(f"  mmap load      = {mmap_load * 1e3:.1f} ms (< 50 ms)")
        print(f"  changes-only   = 1/{full / partial:.0f} of a full dump (< 1/20)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
