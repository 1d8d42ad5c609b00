"""Dynamic batching (opt-in): requests that arrive close together share one ``predict``.

Requests whose data have the same structure (an array's dtype and row shape, or a
DataFrame's columns and dtypes) and ask for the same output are queued; the queue is
flushed into one call of at most ``max_batch_size`` rows when it is full, when no batch is
running (an idle pipeline starts at once, and the requests that arrive meanwhile form the
next batch, flushed as soon as it is idle again), or at the latest ``max_latency_s`` after
its first request arrived; the outputs are split back by row counts. When a batched call raises, each request of the batch is predicted alone, so that
a bad request fails by itself and the others get their outputs.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Queue:
    items: list = field(default_factory=list)  # [(data, future)]
    rows: int = 0
    timer: asyncio.TimerHandle | None = None
    idle_check: bool = False


class Batcher:
    """Stack concurrent requests into one call of ``run(data, what)`` on ``threads`` (``submit(fn, *args)``).

    ``run`` returns ``(tag, [outputs, ...])`` (the tag: the version that computed them; one
    array per output asked for by ``what``, a hashable); each request gets ``(tag, [its rows
    of each output])``.
    """

    def __init__(self, run, threads, max_batch_size: int, max_latency_s: float, metrics=None):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_latency_s < 0:
            raise ValueError(f"max_latency_ms must be 0 or more, got {max_latency_s * 1000}")
        self.run = run
        self.threads = threads
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_s
        self.metrics = metrics
        self._queues: dict = {}
        self._running = 0  # batches on the threads now

    async def submit(self, data, what):
        """The outputs for ``data``, computed in a batch with other requests of its kind."""
        loop = asyncio.get_running_loop()
        rows = len(data)
        if rows >= self.max_batch_size:
            return await self.threads.submit(self.run, data, what)
        key = (structure_key(data), what)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue()
            queue.timer = loop.call_later(self.max_latency_s, self._flush, key)
        elif queue.rows + rows > self.max_batch_size:
            self._flush(key)
            return await self.submit(data, what)
        future = loop.create_future()
        queue.items.append((data, future))
        queue.rows += rows
        if queue.rows >= self.max_batch_size:
            self._flush(key)
        elif not self._running and not queue.idle_check:
            queue.idle_check = True  # next loop turn: requests read in this one still join
            loop.call_soon(self._flush_if_idle, key)
        return await future

    def _flush_if_idle(self, key) -> None:
        if not self._running:
            self._flush(key)
        elif key in self._queues:
            self._queues[key].idle_check = False

    def _flush(self, key) -> None:
        queue = self._queues.pop(key, None)
        if queue is None:
            return
        queue.timer.cancel()
        self._running += 1
        asyncio.get_running_loop().create_task(self._run_batch(queue.items, key[1]))

    async def _run_batch(self, items: list, what) -> None:
        try:
            await self._predict_batch(items, what)
        finally:
            self._running -= 1
            if not self._running and self._queues:  # idle again: the oldest waiting batch goes now
                self._flush(next(iter(self._queues)))

    async def _predict_batch(self, items: list, what) -> None:
        rows = sum(len(d) for d, _ in items)
        if self.metrics is not None:
            self.metrics.observe_batch(rows)
        if len(items) == 1:
            data, future = items[0]
            await _settle(future, self.threads.submit(self.run, data, what))
            return
        try:
            tag, outputs = await self.threads.submit(self.run, concatenate([d for d, _ in items]), what)
            if any(len(output) != rows for output in outputs):
                raise ValueError("the pipeline returned a different number of rows than it was given")
        except Exception:  # one bad request must not fail the others: predict each alone
            await asyncio.gather(*(_settle(f, self.threads.submit(self.run, d, what))
                                   for d, f in items))
            return
        start = 0
        for data, future in items:  # each request's rows as views of the batch's outputs
            stop = start + len(data)
            if not future.done():
                future.set_result((tag, [output[start:stop] for output in outputs]))
            start = stop


async def _settle(future: asyncio.Future, awaitable) -> None:
    try:
        result = await awaitable
    except Exception as error:
        if not future.done():
            future.set_exception(error)
    else:
        if not future.done():
            future.set_result(result)


def structure_key(data) -> tuple:
    """What must match for two inputs to be stacked: dtype and row shape, or columns and dtypes."""
    if isinstance(data, np.ndarray):
        return ("array", data.dtype.str, data.shape[1:])
    columns = getattr(data, "columns", None)
    if columns is not None:
        return ("frame", tuple(columns), tuple(str(t) for t in data.dtypes))
    return ("other", id(data))  # never stacked with anything else


def concatenate(parts: list):
    """Stack arrays or DataFrames row-wise (a DataFrame gets a fresh index)."""
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    import pandas
    return pandas.concat(parts, ignore_index=True)
