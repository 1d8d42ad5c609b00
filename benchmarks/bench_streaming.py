"""Streaming throughput: ``SequentialQueuedPipeline`` against a sequential loop and joblib.

A CPU-bound, pure-Python step (it holds the GIL) transforms ``--batches`` minibatches,
in one run: sequentially in this process, through a ``SequentialQueuedPipeline`` with
2 worker processes, and with ``joblib.Parallel(n_jobs=2)`` over the same minibatches.
A bare ``multiprocessing.Pool(2)`` (no framework) shows what the machine allows during
that run: on a shared machine, other load takes cores from every parallel method.
The parallel engines are warmed up first (their workers started), so the times are
steady-state throughput; the start-up costs are printed apart. The methods run
interleaved, in a rotating order, in each of ``--repeats`` rounds; times are medians
over rounds and ratios are medians of the per-round ratios (robust to a load that
drifts between rounds).

Then the framework's per-minibatch overhead: an identity step on small minibatches
(8 rows) through 1 and 2 worker processes, and through 3 single-process stages.

Targets (issue 6, on 2 cores): >= 1.7x the sequential throughput, not slower than
joblib, and under 1 ms of overhead per small minibatch.

    python benchmarks/bench_streaming.py [--batches 200] [--batch-size 16] [--work 4000] [--repeats 5]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _timing import fmt_seconds  # noqa: E402

from stepline.base import BaseStep, Identity, NonFittableMixin  # noqa: E402
from stepline.distributed.streaming import SequentialQueuedPipeline  # noqa: E402


class CpuBound(NonFittableMixin, BaseStep):
    """Pure-Python arithmetic per row: holds the GIL, so threads would not help."""

    def __init__(self, work: int = 4000):
        super().__init__(hyperparams={"work": work})

    def transform(self, data_inputs):
        work = self.hyperparams["work"]
        out = []
        for v in data_inputs.tolist():
            acc = int(v)
            for i in range(work):
                acc = (acc * 31 + i) % 1_000_003
            out.append(acc)
        return np.asarray(out, dtype=np.int64)


_STEP = None


def _init_worker(work: int) -> None:
    global _STEP
    _STEP = CpuBound(work)


def _transform(batch):
    return _STEP.transform(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--work", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--small-batches", type=int, default=2000)
    args = parser.parse_args()

    from joblib import Parallel, delayed

    data = np.arange(args.batches * args.batch_size, dtype=np.float64)
    batches = [data[i:i + args.batch_size] for i in range(0, len(data), args.batch_size)]
    step = CpuBound(args.work)
    expected = np.concatenate([step.transform(b) for b in batches])

    def sequential():
        return np.concatenate([step.transform(b) for b in batches])

    t0 = time.perf_counter()
    pipeline = SequentialQueuedPipeline([(2, CpuBound(args.work))], batch_size=args.batch_size).setup()
    pipeline.transform(data[:4 * args.batch_size])  # waits until both workers are up
    stream_start = time.perf_counter() - t0

    t0 = time.perf_counter()
    parallel = Parallel(n_jobs=2)
    parallel(delayed(step.transform)(b) for b in batches[:8])
    joblib_start = time.perf_counter() - t0

    # What the machine gives two processes right now, with no framework at all: a
    # multiprocessing pool mapping a module-level function over the same minibatches.
    pool = multiprocessing.get_context("spawn").Pool(2, initializer=_init_worker, initargs=(args.work,))
    pool.map(_transform, batches[:8])

    def streaming():
        return pipeline.transform(data)

    def joblib_parallel():
        return np.concatenate(parallel(delayed(step.transform)(b) for b in batches))

    def bare_pool():
        return np.concatenate(pool.map(_transform, batches, chunksize=4))

    methods = {"sequential": sequential, "SequentialQueuedPipeline (2 processes)": streaming,
               "joblib.Parallel(n_jobs=2)": joblib_parallel, "bare multiprocessing.Pool(2)": bare_pool}
    times = {name: [] for name in methods}
    try:
        for fn in methods.values():
            np.testing.assert_array_equal(fn(), expected)
        for r in range(args.repeats):
            order = list(methods.items())
            order = order[r % len(order):] + order[:r % len(order)]
            for name, fn in order:
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    finally:
        pipeline.teardown()
        pool.terminate()
        pool.join()

    med = {name: statistics.median(ts) for name, ts in times.items()}
    seq = times["sequential"]
    print(f"\nCPU-bound step, {args.batches} batches of {args.batch_size} rows "
          f"({os.cpu_count()} cores, {args.repeats} rounds)")
    width = max(map(len, med))
    for name, seconds in med.items():
        ratio = statistics.median(s / t for s, t in zip(seq, times[name]))
        print(f"  {name:<{width}}  {fmt_seconds(seconds)}   {len(batches) / seconds:8.1f} batches/s"
              f"   {ratio:5.2f}x sequential throughput")
    ours, theirs = times["SequentialQueuedPipeline (2 processes)"], times["joblib.Parallel(n_jobs=2)"]
    bare = times["bare multiprocessing.Pool(2)"]
    print(f"  streaming / joblib throughput: {statistics.median(j / o for j, o in zip(theirs, ours)):.3f}x")
    print(f"  streaming / bare pool throughput: {statistics.median(b / o for b, o in zip(bare, ours)):.3f}x"
          f"  (the bare pool shows what the machine allows: ~2x sequential when 2 cores are free)")
    print(f"  start-up (spawn 2 workers, first batches): streaming {fmt_seconds(stream_start)}, "
          f"joblib {fmt_seconds(joblib_start)}")

    # ------------------------------------------------ per-minibatch overhead
    small = np.arange(args.small_batches * 8, dtype=np.float64)
    print(f"\nFramework overhead: identity step, {args.small_batches} minibatches of 8 rows")
    for n_workers in (1, 2):
        p = SequentialQueuedPipeline([(n_workers, Identity())], batch_size=8).setup()
        try:
            p.transform(small[:64])
            rounds = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                out = p.transform(small)
                rounds.append(time.perf_counter() - start)
            np.testing.assert_array_equal(out, small)
        finally:
            p.teardown()
        per_batch = statistics.median(rounds) / args.small_batches
        print(f"  {n_workers} worker process{'es' if n_workers > 1 else ''}: "
              f"{fmt_seconds(per_batch)} per minibatch (round trip, pipelined)")
    three = SequentialQueuedPipeline([Identity(), Identity(), Identity()], batch_size=8).setup()
    try:
        three.transform(small[:64])
        start = time.perf_counter()
        three.transform(small)
        per_batch = (time.perf_counter() - start) / args.small_batches
    finally:
        three.teardown()
    print(f"  3 stages, 1 process each: {fmt_seconds(per_batch)} per minibatch")


if __name__ == "__main__":
    main()
