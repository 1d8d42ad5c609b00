"""Dynamic batching (opt-in): requests that arrive close together share one ``predict``.

Requests whose data have the same structure (an array's dtype and row shape, or a
DataFrame's columns and dtypes) and ask for the same output are queued; the queue is
flushed into one call of at most ``max_batch_size`` rows when it is full, when no batch is
running (an idle pipeline starts at once, and the requests that arrive meanwhile form the
next batch, flushed as soon as it is idle again), or at the latest ``max_latency_s`` after
its first request arrived. The prediction thread stacks the inputs, predicts once and
splits the outputs back by row counts (views, no copies); the loop then settles every
request of the batch in one callback. When a batched call raises, each request of the
batch is predicted alone, so that a bad request fails by itself and the others get their
outputs.
"""
from __future__ import annotations

import asyncio
import functools

import numpy as np


class _Queue:
    """Requests of one kind waiting for their batch."""

    __slots__ = ("items", "rows", "timer", "idle_check")

    def __init__(self):
        self.items: list = []  # [(data, future)]
        self.rows = 0
        self.timer: asyncio.TimerHandle | None = None
        self.idle_check = False


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
        if self.metrics is not None:
            self.metrics.observe_batch(queue.rows)
        items = queue.items
        batch = self.threads.submit(self._predict_batch, [data for data, _ in items], key[1])
        batch.add_done_callback(functools.partial(self._answer, items, key[1]))

    def _predict_batch(self, parts: list, what) -> list:
        """On a prediction thread: one ``run`` for the stacked parts, its outputs split back per part (views)."""
        if len(parts) == 1:
            return [self.run(parts[0], what)]
        tag, outputs = self.run(concatenate(parts), what)
        rows = sum(len(part) for part in parts)
        if any(len(output) != rows for output in outputs):
            raise ValueError("the pipeline returned a different number of rows than it was given")
        answers, start = [], 0
        for part in parts:
            stop = start + len(part)
            answers.append((tag, [output[start:stop] for output in outputs]))
            start = stop
        return answers

    def _answer(self, items: list, what, batch: asyncio.Future) -> None:
        """On the loop: settle each request of a finished batch; start the next batch if one waits."""
        self._running -= 1
        error = batch.exception() if not batch.cancelled() else asyncio.CancelledError()
        if error is None:
            for (_, future), answer in zip(items, batch.result()):
                if not future.done():
                    future.set_result(answer)
        elif len(items) == 1:
            _settle(items[0][1], error)
        else:  # one bad request must not fail the others: predict each alone
            for data, future in items:
                self.threads.submit(self.run, data, what).add_done_callback(
                    functools.partial(_copy_outcome, future))
        if not self._running and self._queues:  # idle again: the oldest waiting batch goes now
            self._flush(next(iter(self._queues)))


def _copy_outcome(target: asyncio.Future, source: asyncio.Future) -> None:
    if source.cancelled():
        _settle(target, asyncio.CancelledError())
    elif source.exception() is not None:
        _settle(target, source.exception())
    elif not target.done():
        target.set_result(source.result())


def _settle(future: asyncio.Future, error: BaseException) -> None:
    if future.done():
        return
    if isinstance(error, asyncio.CancelledError):
        future.cancel()
    else:
        future.set_exception(error)


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
