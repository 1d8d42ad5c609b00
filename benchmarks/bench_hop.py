"""The cost of the hop off the event loop alone: uvloop + Python threads, no HTTP, no model.

Each of ``--concurrency`` coroutines on a uvloop loop runs requests back to back: ``--loop-us``
µs of Python on the loop (what parsing and answering cost), then ``--work-us`` µs of Python
(what a one-row ``predict`` costs, holding the GIL as scikit-learn does on tiny arrays),
either inline on the loop (``inline``: the bare app's way; then one turn of the loop, so
that the requests interleave as they do when handed off) or handed to a thread and back:

- ``executor``: ``loop.run_in_executor`` on a ``ThreadPoolExecutor`` (what Starlette's
  ``run_in_threadpool`` amounts to);
- ``stepline``: ``stepline.serving.threads.PredictionThreads`` (what ``stepline serve`` uses),
  with ``--threads`` threads.

Printed per mechanism: CPU µs per request of the process, and that minus ``inline``'s (the
hop's own cost), both pinned (every thread on one CPU) and unpinned (every CPU). Medians of
``--rounds`` interleaved rounds.

    python benchmarks/bench_hop.py [--requests 20000] [--rounds 5] [--work-us 100] [--loop-us 150] [--threads 1,2]
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


_LOOPS_PER_US = 1.0


def calibrate() -> None:
    """How many turns of an empty Python loop take a microsecond here (no clock read inside ``spin``)."""
    global _LOOPS_PER_US
    n = 200_000
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            pass
        best = min(best, time.perf_counter() - started)
    _LOOPS_PER_US = n / (best * 1e6)


def spin(microseconds: float) -> None:
    """Hold the GIL running Python for about ``microseconds`` (as scikit-learn does on tiny arrays)."""
    for _ in range(int(microseconds * _LOOPS_PER_US)):
        pass


def pin_all(cores) -> None:
    """Every thread of this process (and those it starts later) on ``cores``."""
    for thread in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(thread), cores)
        except OSError:
            pass


async def run_round(hop, requests: int, concurrency: int, loop_us: float, work_us: float) -> tuple[float, float]:
    """``(CPU µs per request, wall µs per request)`` of ``requests`` requests, ``concurrency`` at a time."""
    per_client = requests // concurrency

    async def client():
        for _ in range(per_client):
            spin(loop_us)
            await hop(spin, work_us)

    await asyncio.gather(*(client() for _ in range(concurrency)))  # warm up
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    done = per_client * concurrency
    return (time.process_time() - cpu) / done * 1e6, (time.perf_counter() - wall) / done * 1e6


def mechanisms(thread_counts):
    """``{name: (make, close)}``: ``make()`` gives ``hop(fn, *args)`` for the running loop."""
    from stepline.serving.threads import PredictionThreads
    made = {}

    async def inline(fn, *args):  # the work on the loop, then one turn of the loop as an await would give
        result = fn(*args)
        await asyncio.sleep(0)
        return result

    made["inline"] = (lambda: inline, lambda: None)
    for n in thread_counts:
        executor = concurrent.futures.ThreadPoolExecutor(n)
        made[f"executor, {n} thread(s)"] = (
            lambda executor=executor: (lambda fn, *args: asyncio.get_running_loop().run_in_executor(executor, fn, *args)),
            executor.shutdown)
        threads = PredictionThreads(n)
        made[f"stepline, {n} thread(s)"] = (lambda threads=threads: threads.submit, threads.shutdown)
    return made


async def main_async(args) -> None:
    calibrate()
    available = set(os.sched_getaffinity(0))
    placements = [("pinned to 1 CPU", {min(available)}), (f"unpinned ({len(available)} CPUs)", available)]
    made = mechanisms([int(n) for n in args.threads.split(",")])
    results = {(p, m): [] for p, _ in placements for m in made}
    for _ in range(args.rounds):
        for placement, cores in placements:
            pin_all(cores)
            for name, (make, _) in made.items():
                results[placement, name].append(
                    await run_round(make(), args.requests, args.concurrency, args.loop_us, args.work_us))
    pin_all(available)
    for _, close in made.values():
        close()
    print(f"uvloop, {args.concurrency} requests at a time, {args.loop_us:g} µs on the loop + {args.work_us:g} µs of "
          f"work per request; medians of {args.rounds} rounds of {args.requests}; load {os.getloadavg()[0]:.1f}")
    for placement, _ in placements:
        base = statistics.median(c for c, _ in results[placement, "inline"])
        print(f"\n  {placement}: {'CPU µs/req':>10} {'hop µs':>7} {'wall µs/req':>11}")
        for name in made:
            cpu = statistics.median(c for c, _ in results[placement, name])
            wall = statistics.median(w for _, w in results[placement, name])
            print(f"  {name:<24} {cpu:>10.1f} {cpu - base:>7.1f} {wall:>11.1f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--work-us", type=float, default=100.0, help="Python µs per request off the loop (predict)")
    parser.add_argument("--loop-us", type=float, default=150.0, help="Python µs per request on the loop (HTTP, JSON)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts to measure")
    args = parser.parse_args(argv)
    import uvloop
    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
