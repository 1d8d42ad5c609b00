"""Cutting a data container into minibatches, joining their outputs back in order, and
showing how many are done."""
from __future__ import annotations

import sys
import time

import numpy as np


def cut(data_container, batch_size: int, owner: str) -> list:
    """``[(data_inputs, expected_outputs), ...]`` minibatches; an empty input is one empty batch."""
    di, eo = data_container.data_inputs, data_container.expected_outputs
    try:
        n = len(di)
    except TypeError:
        raise TypeError(f"{owner} cuts data_inputs into minibatches: they need len() and slicing, "
                        f"got {type(di).__name__}") from None
    if eo is not None and len(eo) != n:
        raise ValueError(f"{owner}: expected_outputs has {len(eo)} rows but data_inputs has {n}")
    if n == 0:
        return [(di, eo)]
    return [(di[i:i + batch_size], None if eo is None else eo[i:i + batch_size]) for i in range(0, n, batch_size)]


def join(parts: list):
    """Concatenate minibatch outputs along the first axis, keeping their type."""
    first = parts[0]
    if len(parts) == 1:
        return first
    if isinstance(first, np.ndarray):
        return np.concatenate(parts, axis=0)
    if isinstance(first, tuple):
        return tuple(x for p in parts for x in p)
    if type(first).__module__.split(".")[0] == "pandas":
        import pandas
        return pandas.concat(parts)
    return [x for p in parts for x in p]


def joined(data_container, out: list):
    """Put the joined ``[(data_inputs, expected_outputs), ...]`` of the minibatches back."""
    data_container.data_inputs = join([di for di, _ in out])
    eos = [eo for _, eo in out]
    data_container.expected_outputs = None if all(e is None for e in eos) else join(eos)
    return data_container


class Progress:
    """Batches done / total: a callable ``show(done, total)``, or a bar on stderr."""

    def __init__(self, show, total: int, label: str):
        self.callback = show if callable(show) else None
        self.total = total
        self.label = label
        self._last = 0.0
        self._stream = sys.stderr

    def update(self, done: int) -> None:
        if self.callback is not None:
            self.callback(done, self.total)
            return
        now = time.monotonic()
        if done == self.total or now - self._last >= 0.1:
            self._last = now
            width = 30
            filled = width * done // max(self.total, 1)
            end = "\n" if done == self.total else ""
            self._stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                               f"{done}/{self.total} batches{end}")
            self._stream.flush()
