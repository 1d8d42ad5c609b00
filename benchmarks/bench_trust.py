"""Untrusted vs trusted load of the ~1 GiB benchmark pipeline of ``bench_saving.py`` (issue 13).

An untrusted load decides trust (root digest, signature, trust store), audits every
``step.pkl`` from its opcodes and unpickles through the restricted unpickler; a trusted
one checks the signature and unpickles as before. The pipeline's step class comes from
``bench_saving`` (importable, so pickled by reference) and is added to the allow-list
with ``stepline.trust.allow``, as a user would for classes of their own. Medians over
repeats, each candidate back to back after a warm-up; the trusted load runs first
and last, and the ratio takes the faster of the two. Target: untrusted ≤ 1.1× trusted.

    python benchmarks/bench_trust.py [--size-mb 1024] [--steps 4] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _timing import median_time, print_table  # noqa: E402
from bench_saving import Fitted, build  # noqa: E402

from stepline import CX  # noqa: E402
from stepline.trust import allow  # noqa: E402
from stepline.trust.signing import verify_dump  # noqa: E402


def paired_ratio(reference, candidate, pairs: int) -> float:
    """Median of ``candidate``/``reference`` time ratios over back-to-back pairs, alternating
    which goes first: both see the same state of the page cache and the allocator."""
    import statistics
    import time

    def timed(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    ratios = []
    for i in range(pairs):
        if i % 2:
            c, ref = timed(candidate), timed(reference)
        else:
            ref, c = timed(reference), timed(candidate)
        ratios.append(c / ref)
    return statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    allow(Fitted)
    pipeline = build(args.size_mb, args.steps)
    base = Path(tempfile.mkdtemp(prefix="stepline-bench-trust-"))
    try:
        pipeline.save(CX(base), full_dump=True)
        assert verify_dump(base / "bench").trusted
        r = args.repeats
        rows = [("trusted load (signed by this user's key)", median_time(lambda: CX(base).load("bench"), r)),
                ("untrusted load (trusted=False: audit + restricted unpickler)",
                 median_time(lambda: CX(base).load("bench", trusted=False), r)),
                ("trusted=True (override, no signature check)",
                 median_time(lambda: CX(base).load("bench", trusted=True), r)),
                ("untrusted load, mmap_mode='r'", median_time(lambda: CX(base).load("bench", trusted=False,
                                                                                      mmap_mode="r"), r)),
                ("trusted load, mmap_mode='r'", median_time(lambda: CX(base).load("bench", mmap_mode="r"), r)),
                ("trusted load, again (shows the run's noise)", median_time(lambda: CX(base).load("bench"), r))]
        loaded = CX(base).load("bench", trusted=False)
        assert all(np.array_equal(a.weights_, b.weights_) for a, b in zip(pipeline.values(), loaded.values()))
        total = sum(s.weights_.nbytes for s in pipeline.values())
        print(f"pipeline of {args.steps} fitted steps holding {total / 2**30:.2f} GiB of float32 "
              f"(+1 small step); medians of {r} repeats")
        ref = "trusted load (signed by this user's key)"
        print_table("load", rows, ref)
        t = dict(rows)
        trusted = min(t[ref], t["trusted load, again (shows the run's noise)"])
        ratio = t["untrusted load (trusted=False: audit + restricted unpickler)"] / trusted
        paired = paired_ratio(lambda: CX(base).load("bench"), lambda: CX(base).load("bench", trusted=False), 2 * r)
        print(f"\nuntrusted / trusted, medians above: {ratio:.3f}")
        print(f"target: untrusted / trusted, median over {2 * r} back-to-back pairs (order alternating): "
              f"{paired:.3f} (≤ 1.1)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
