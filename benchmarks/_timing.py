"""Timing helpers shared by the benchmarks: medians over repeats, printed as ratios."""
from __future__ import annotations

import statistics
import time


def median_time(fn, repeats: int = 7, number: int = 1) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` rounds of ``number`` calls."""
    fn()  # warm up
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        rounds.append((time.perf_counter() - start) / number)
    return statistics.median(rounds)


def fmt_seconds(seconds: float) -> str:
    """Seconds in the most readable unit."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:8.2f} {unit}"
    return f"{seconds / 1e-9:8.1f} ns"


def print_table(title: str, rows: list[tuple[str, float]], reference: str) -> None:
    """Print ``(label, seconds)`` rows with each one's ratio to the ``reference`` row."""
    ref = dict(rows)[reference]
    print(f"\n{title}")
    width = max(len(label) for label, _ in rows)
    for label, seconds in rows:
        print(f"  {label:<{width}}  {fmt_seconds(seconds)}   {seconds / ref:7.3f}× {reference}")
