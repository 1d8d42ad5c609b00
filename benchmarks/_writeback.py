"""What the kernel's write-back does while a benchmark runs (Linux; elsewhere: nothing known).

Linux starts writing dirty pages back to the disk once they pass a *background threshold*
(``vm.dirty_background_ratio``, 10 % of free + page-cache memory by default: 2.0 GiB on a
24 GiB machine). A candidate whose runs keep more than that dirty makes the disk write,
and a file whose pages are being written back waits for the disk to be deleted. So each
save candidate starts from :func:`settle` (no dirty page of another candidate's is left to
slow it down), and :class:`DirtyPeak` reports how much it kept dirty.
"""
from __future__ import annotations

import os
import threading


def settle() -> None:
    """Write every dirty page back (``os.sync``) so that the next candidate starts clean."""
    os.sync()


def background_threshold_bytes() -> int | None:
    """The dirty bytes from which the kernel starts writing back, or None if unknown."""
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                if line.startswith("nr_dirty_background_threshold "):
                    return int(line.split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        pass
    return None


def dirty_bytes() -> tuple[int, int] | None:
    """The bytes of page cache dirty and being written back now (``Dirty:`` and
    ``Writeback:`` of ``/proc/meminfo``), or None."""
    found = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(("Dirty:", "Writeback:")):
                    found[line.split(":")[0]] = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return (found["Dirty"], found["Writeback"]) if len(found) == 2 else None


class DirtyPeak:
    """Context manager: the most bytes seen dirty and being written back (every 5 ms) while
    it is open (``.peak``: a pair, or None where unknown)."""

    def __init__(self, every_s: float = 0.005):
        self.every_s, self.peak = every_s, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "DirtyPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            now = dirty_bytes()
            if now is None:
                return
            self.peak = now if self.peak is None else tuple(map(max, self.peak, now))
            if self._stop.wait(self.every_s):
                return


def describe(peaks: dict) -> list[str]:
    """Lines saying each candidate's peaks of dirty pages and of pages being written back."""
    threshold = background_threshold_bytes()
    if threshold is None or not any(peaks.values()):
        return []
    lines = [f"write-back (the kernel's background threshold: {threshold / 2**30:.2f} GiB dirty)"]
    for label, peak in peaks.items():
        if peak is not None:
            lines.append(f"  {label:<40} up to {peak[0] / 2**30:.2f} GiB dirty, "
                         f"{peak[1] / 2**20:4.0f} MiB being written back")
    return lines
