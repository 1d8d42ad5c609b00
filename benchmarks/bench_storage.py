"""Benchmark the step-dump storage layer against its peers, measured in the same run.

A dict of 8 float32 arrays (~1 GiB in all by default) is written and read back with
stepline's ``write_object``/``read_object``, raw ``np.save``/``np.load`` per array,
``pickle.dump`` (protocol 5, in band) and ``joblib.dump``/``joblib.load``; each timing is
the median of ``--repeats`` runs. Each method writes and then reads back at once (this
machine's memory manager pages out files that sit idle); methods take turns going first from
one repeat to the next; dirty pages are flushed (``os.sync``) before each timed write so
that one method's writeback does not land on the next, and memory is warmed before each timed
call (see ``warm_memory``). Ratios are ours / NumPy.

    python benchmarks/bench_storage.py [--size-mb 1024] [--repeats 5] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import joblib
import numpy as np

from stepline.saving.objectfile import read_object, write_object

N_ARRAYS = 8
ORDER = ["write ours", "write np", "write pickle", "write joblib", "read ours", "read np", "read pickle",
         "read joblib", "read ours mmap", "read np mmap", "read ours full-verify"]


def make_arrays(size_mb: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n = max(1, int(size_mb * 2**20 / 4 / N_ARRAYS))
    return {f"a{i}": rng.random(n, dtype=np.float32) for i in range(N_ARRAYS)}


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def np_save(arrays, folder):
    for k, a in arrays.items():
        np.save(folder / f"{k}.npy", a)


def np_load(arrays, folder, mmap_mode=None):
    return {k: np.load(folder / f"{k}.npy", mmap_mode=mmap_mode) for k in arrays}


def pickle_dump(arrays, folder):
    with open(folder / "data.pkl", "wb") as f:
        pickle.dump(arrays, f, protocol=5)


def pickle_load(arrays, folder):
    with open(folder / "data.pkl", "rb") as f:
        return pickle.load(f)


def rotated(methods: dict, shift: int) -> list:
    """The methods' items, starting at a different one each repeat (no order bias)."""
    items = list(methods.items())
    shift %= len(items)
    return items[shift:] + items[:shift]


def warm_memory(nbytes: int) -> None:
    """Touch and free ``nbytes`` so the timed call gets recently used memory, as every method does.

    On a VM that hands freed memory back to its host (free page reporting, ~2 s after the
    free), a call that comes right after a slow one would otherwise pay host page faults for
    its output arrays or page cache, and its rival would not.
    """
    np.ones(nbytes, dtype=np.uint8)


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - t0, result


def methods(arrays) -> dict[str, tuple]:
    """name -> (write(folder), {read name: read(folder, written)})."""
    return {
        "ours": (lambda d: write_object(arrays, d), {
            "read ours": lambda d, files: read_object(d, files),
            "read ours mmap": lambda d, files: read_object(d, files, mmap_mode="r"),
            "read ours full-verify": lambda d, files: read_object(d, files, verify="full"),
        }),
        "np": (lambda d: np_save(arrays, d), {
            "read np": lambda d, _: np_load(arrays, d),
            "read np mmap": lambda d, _: np_load(arrays, d, mmap_mode="r"),
        }),
        "pickle": (lambda d: pickle_dump(arrays, d), {"read pickle": lambda d, _: pickle_load(arrays, d)}),
        "joblib": (lambda d: joblib.dump(arrays, d / "data.joblib"),
                   {"read joblib": lambda d, _: joblib.load(d / "data.joblib")}),
    }


def run(size_mb: float, repeats: int, base: Path, sync: bool) -> dict[str, list[float]]:
    """Each repeat writes then reads back with every method, in a rotating order."""
    arrays = make_arrays(size_mb)
    nbytes = sum(a.nbytes for a in arrays.values()) * 5 // 4
    root = Path(tempfile.mkdtemp(prefix="bench-storage-", dir=base))
    times: dict[str, list[float]] = {}
    try:
        for r in range(repeats):
            for name, (write, readers) in rotated(methods(arrays), r):
                folder = fresh(root / name)
                if sync:
                    os.sync()
                warm_memory(nbytes)
                dt, written = timed(write, folder)
                times.setdefault(f"write {name}", []).append(dt)
                for key, read in readers.items():
                    warm_memory(nbytes)
                    dt, out = timed(read, folder, written)
                    del out
                    times.setdefault(key, []).append(dt)
                shutil.rmtree(folder)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {key: times[key] for key in ORDER}


def report(size_mb: float, times: dict[str, list[float]], load: tuple) -> None:
    gib = size_mb / 1024
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{N_ARRAYS} float32 arrays, {size_mb:g} MiB in all, {len(next(iter(times.values())))} repeats; "
          f"{os.cpu_count()} CPUs, load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after\n")
    print(f"{'operation':<24}{'median s':>10}{'min s':>10}{'GiB/s':>8}{'vs np':>8}")
    for key, seconds in med.items():
        kind = key.split()[0]
        ref = med[f"{kind} np mmap"] if key.endswith("mmap") else med[f"{kind} np"]
        print(f"{key:<24}{seconds:>10.4f}{min(times[key]):>10.4f}{gib / seconds:>8.2f}{seconds / ref:>7.2f}x")
    print(f"\nwrite ours/np: {med['write ours'] / med['write np']:.2f}  "
          f"read ours/np: {med['read ours'] / med['read np']:.2f}  "
          f"mmap read: {med['read ours mmap'] * 1e3:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=1024, help="total size of the arrays")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: temp dir)")
    parser.add_argument("--no-sync", action="store_true", help="do not flush dirty pages between runs")
    args = parser.parse_args()
    load = os.getloadavg()
    times = run(args.size_mb, args.repeats, args.dir, sync=not args.no_sync)
    report(args.size_mb, times, load)


if __name__ == "__main__":
    main()
