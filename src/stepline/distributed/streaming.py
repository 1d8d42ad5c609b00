"""Streaming pipelines: stages run in worker processes (or threads) joined by bounded queues.

``SequentialQueuedPipeline([...], batch_size=...)`` cuts its inputs into minibatches
and streams them through its stages, each stage in its own workers; the outputs come
back in input order. ``ParallelQueuedFeatureUnion`` sends every minibatch to every
branch at once and joins the branches' outputs as features (last axis).

Stages are given as ``step``, ``(name, step)``, ``(n_workers, step)`` or
``(name, n_workers, step)``. Workers start in :meth:`setup` (lazily before the first
call) and stop in :meth:`teardown`; ``with pipeline.setup():`` stops them on exit.
See ``docs/parallel.md`` for threads or processes, what is pickled and what is
dumped, how fitting works and what happens when a worker fails.
"""
from __future__ import annotations

import logging
import multiprocessing
import numbers
import threading
import warnings

import numpy as np

from stepline.core.composite import TruncableSteps
from stepline.core.context import ExecutionContext
from stepline.core.mode import current_call_mode, own_is_train
from stepline.core.step import BaseTransformer
from stepline.data_container import StripAbsentValues, _rows
from stepline.distributed.minibatches import Progress, cut as _cut, join as _join, joined as _joined
from stepline.distributed.runtime import WorkerRuntime, finalize_with
from stepline.distributed.workers import StreamingSetupError, StreamingTimeoutError, StreamingWorkerError
from stepline.saving.savers import BaseSaver

log = logging.getLogger(__name__)

_RUNTIME_ATTRS = ("_runtime", "_stale", "_abandoned", "_calls_lock")
_CALLS_LOCK_GUARD = threading.Lock()


def _calls_lock(step) -> threading.RLock:
    """The lock that runs ``step``'s streaming calls one at a time, from choosing the workers to
    handling their failure (made on first use: never pickled, copied or saved)."""
    lock = step.__dict__.get("_calls_lock")
    if lock is None:
        with _CALLS_LOCK_GUARD:
            lock = step.__dict__.setdefault("_calls_lock", threading.RLock())
    return lock


class _ProducerConsumerMixin:
    """A step that produces minibatches for consumer workers through queues.

    ``input_queue`` is the queue minibatches enter by (a tuple of queues for a
    feature union) and ``consumers`` the running workers (processes or threads);
    both are empty while the step is not set up. None of it is saved or pickled:
    :class:`_ProducerConsumerStepSaver` strips it from dumps and ``__getstate__``
    from pickles, and ``setup`` starts fresh workers.
    """

    input_queue = None
    consumers = ()
    _runtime = None
    _stale = frozenset()
    _abandoned = {}  # stage name -> worker threads left running in its step after a timeout

    def __getstate__(self):
        state = super().__getstate__()
        for key in _RUNTIME_ATTRS:
            state.pop(key, None)
        state["input_queue"], state["consumers"] = None, []
        return state


class _ProducerConsumerStepSaver(BaseSaver):
    """Saver for :class:`_ProducerConsumerMixin`: strips queues and worker handles.

    Makes sure that the non-picklable queues and workers are left out of a dump;
    a loaded step starts new workers when it is set up.
    """

    def save_step(self, step, context):
        step.input_queue = None
        step.consumers = []
        step._runtime = None
        step.__dict__.pop("_abandoned", None)
        step.__dict__.pop("_calls_lock", None)
        return step

    def can_load(self, step, context) -> bool:
        return True

    def load_step(self, step, context):
        step.input_queue = None
        step.consumers = []
        step._runtime = None
        step._stale = frozenset()
        step.__dict__.pop("_abandoned", None)
        return step


class _QueuedSteps(_ProducerConsumerMixin, TruncableSteps):
    """Common base of the streaming steps: stage syntax, workers' lifecycle, minibatches."""

    _sequential = True
    keep_incomplete_batch = True  # a class default: dumps saved before the argument existed load

    def __init__(self, steps, batch_size, n_workers_per_step=1, max_queued_minibatches=None,
                 use_processes=True, use_savers=False, *, start_method=None, show_progress=False,
                 timeout_s=None, setup_timeout_s=None, keep_incomplete_batch=True, default_value_data_inputs=None,
                 default_value_expected_outputs=None, hyperparams=None, hyperparams_space=None, name=None, savers=None):
        self.n_workers_per_step = _positive_int(n_workers_per_step, "n_workers_per_step")
        items, counts = _parse_stages(steps, self.n_workers_per_step, type(self).__name__)
        super().__init__(items, hyperparams=hyperparams, hyperparams_space=hyperparams_space,
                         name=name, savers=savers)
        self._workers_by_name = {s.name: n for s, n in zip(self.steps_as_tuple, counts)}
        self.batch_size = _positive_int(batch_size, "batch_size")
        if max_queued_minibatches is None and _stage_queue_sizes(steps):
            # one capacity for every queue: the smallest a stage asked for keeps every bound
            max_queued_minibatches = min(_stage_queue_sizes(steps))
        self.max_queued_minibatches = (None if max_queued_minibatches is None
                                       else _positive_int(max_queued_minibatches, "max_queued_minibatches"))
        self.use_processes = bool(use_processes)
        self.use_savers = bool(use_savers)
        if start_method is not None and start_method not in multiprocessing.get_all_start_methods():
            raise ValueError(f"start_method must be one of {multiprocessing.get_all_start_methods()}, "
                             f"got {start_method!r}")
        self.start_method = start_method
        self.show_progress = show_progress
        self.timeout_s = _timeout(timeout_s)
        self.setup_timeout_s = _timeout(setup_timeout_s, "setup_timeout_s")
        self.keep_incomplete_batch = bool(keep_incomplete_batch)
        _no_padding(default_value_data_inputs, "default_value_data_inputs", type(self).__name__)
        _no_padding(default_value_expected_outputs, "default_value_expected_outputs", type(self).__name__)
        self.input_queue = None
        self.consumers = []

    def _default_savers(self) -> list:
        return super()._default_savers() + [_ProducerConsumerStepSaver()]

    @property
    def workers_per_stage(self) -> dict:
        """``{stage name: number of workers}``, in stage order."""
        return {s.name: self._workers_by_name.get(s.name, self.n_workers_per_step) for s in self.steps_as_tuple}

    def append(self, step) -> "_QueuedSteps":
        """Add a stage at the end (any stage syntax); returns self."""
        items, counts = _parse_stages([step], self.n_workers_per_step, type(self).__name__)
        super().append(items[0])
        self._workers_by_name = {**self._workers_by_name, self.steps_as_tuple[-1].name: counts[0]}
        return self

    # ------------------------------------------------------------- lifecycle
    def setup(self, context=None):
        """Start the workers (each sets up its own copy of its stage's step).

        With threads, the steps are shared with the workers and set up here.
        """
        if not self.use_processes:
            super().setup(context)
        try:
            self._start_runtime(context)
        except BaseException:
            self._teardown_children()
            raise
        return self

    def teardown(self):
        """Stop the workers (each tears its copy down), then tear down the steps held here."""
        try:
            self._stop_runtime()
        finally:
            self._teardown_children()
        return self

    def _teardown_children(self) -> None:
        """Tear the stages' steps down, except those an abandoned worker thread is still in:
        their teardown would wait for that call (see ``timeout_s``)."""
        busy = set()
        for name, threads in self._abandoned.items():
            if name in self and any(t.is_alive() for t in threads):
                log.warning("%r: step %r is not torn down: an abandoned worker thread (after a timeout) is still "
                            "inside it", self.name, name)
                busy.update(self[name].apply(lambda s, cx: id(s)).values())
        self._abandoned = {name: threads for name, threads in self._abandoned.items() if name in self
                           and any(t.is_alive() for t in threads)}
        for step in reversed(list(self.apply(lambda s, cx: s, include_self=False).values())):
            if id(step) not in busy:
                step.teardown()

    def _start_runtime(self, context) -> WorkerRuntime | None:
        self._stop_runtime(abort=True)
        steps = self.steps_as_tuple
        if not steps:
            return None
        counts = self.workers_per_stage
        runtime = WorkerRuntime(self.name, steps, [counts[s.name] for s in steps], self._sequential,
                                self.use_processes, self.use_savers, self.start_method,
                                self.max_queued_minibatches, ExecutionContext.of(context).push(self),
                                timeout_s=self.__dict__.get("timeout_s"),  # dumps from before them have none
                                setup_timeout_s=self.__dict__.get("setup_timeout_s"))
        runtime.start()
        finalize_with(self, runtime)
        for stage in runtime.stages:
            stage.fingerprint = _fingerprint(stage.step)
        self._runtime = runtime
        self._stale = frozenset()
        self._sync_handles()
        return runtime

    def _stop_runtime(self, abort: bool = False) -> None:
        runtime, self._runtime = self._runtime, None
        self._sync_handles()
        if runtime is not None:
            runtime.abort() if abort else runtime.stop()

    def _sync_handles(self) -> None:
        runtime = self._runtime
        if runtime is None or runtime.closed:
            self.input_queue, self.consumers = None, []
            return
        queues = tuple(stage.in_q for stage in runtime.stages)
        self.input_queue = queues[0] if self._sequential else queues
        self.consumers = runtime.workers

    def _runtime_for(self, context, used) -> WorkerRuntime:
        """The running workers, restarting the stages in ``used`` whose step changed since."""
        if not self.is_initialized:
            self.setup(context)
        runtime = self._runtime
        if runtime is None or runtime.closed or [s.name for s in runtime.stages] != self.keys():
            return self._start_runtime(context)
        dead = runtime.dead_workers()
        if dead:  # between two calls: no minibatch was lost, start afresh
            name, worker = dead[0]
            warnings.warn(f"{self.name!r}: a worker of step {name!r} stopped between calls "
                          f"(exit code {getattr(worker, 'exitcode', None)}); starting fresh workers",
                          RuntimeWarning, stacklevel=4)
            return self._start_runtime(context)
        for k in used:
            step = self.steps_as_tuple[k]
            stage = runtime.stages[k]
            fingerprint = _fingerprint(step)
            if stage.step is not step or step.name in self._stale or stage.fingerprint != fingerprint:
                runtime.restart_stage(k, step)
                stage.fingerprint = fingerprint
                self._stale = self._stale - {step.name}
        self._sync_handles()
        return runtime

    # ------------------------------------------------------------- streaming
    def _whole_batches(self, data_container):
        """The container, without its last, incomplete batch when ``keep_incomplete_batch`` is false."""
        n = len(data_container)
        kept = n - n % self.batch_size
        if self.keep_incomplete_batch or kept == n:
            return data_container
        data_container.data_inputs = _rows(data_container.data_inputs, 0, kept)
        data_container.expected_outputs = _rows(data_container.expected_outputs, 0, kept)
        if data_container.ids is not None:
            data_container.ids = _rows(data_container.ids, 0, kept)
        return data_container

    def _stream(self, data_container, context, targets, stop_after, fit_mode, used) -> list:
        """Stream the minibatches through the workers, one call at a time: a call that waited
        while another failed gets fresh workers (not that call's aborted ones), and no call
        stops the workers another call has just started."""
        batches = _cut(data_container, self.batch_size, self.name)
        with _calls_lock(self):
            return self._stream_batches(batches, context, targets, stop_after, fit_mode, used)

    def _stream_batches(self, batches, context, targets, stop_after, fit_mode, used) -> list:
        runtime = self._runtime_for(context, used)
        progress = Progress(self.show_progress, len(batches), self.name) if self.show_progress else None
        try:
            out = runtime.run(batches, targets, stop_after, fit_mode, progress, current_call_mode())
            if not self._sequential and len(targets) == 1:  # the runtime gives one branch's (di, eo) bare
                out = [[batch] for batch in out]
            return out
        finally:
            if runtime.closed:  # a worker failed, or KeyboardInterrupt: start afresh next time
                self._stop_runtime(abort=True)
                if runtime.abandoned:
                    self._abandoned = {**self._abandoned, **runtime.abandoned}

    def _replace(self, k: int, fitted) -> None:
        """Keep the step fitted in this process; its workers restart before they are used again."""
        old = self.steps_as_tuple[k]
        if fitted is not old:
            fitted.name = old.name
            steps = list(self.steps_as_tuple)
            steps[k] = fitted
            self._set_steps(steps)
        self._stale = self._stale | {old.name}


class SequentialQueuedPipeline(_QueuedSteps):
    """A pipeline whose stages run in parallel workers, minibatch after minibatch.

    ``SequentialQueuedPipeline(steps, batch_size, n_workers_per_step=1,
    max_queued_minibatches=None, use_processes=True, use_savers=False)``.

    - ``steps``: stages, each ``step``, ``(name, step)``, ``(n_workers, step)`` or
      ``(name, n_workers, step)``.
    - ``batch_size``: rows per minibatch; the last, incomplete one is processed too (never
      padded), or dropped with its rows with ``keep_incomplete_batch=False``. Neuraxle's
      ``default_value_data_inputs``/``default_value_expected_outputs`` take only ``None`` or
      ``StripAbsentValues()``: stepline does not pad.
    - ``max_queued_minibatches``: capacity of each queue between stages (default:
      ``max(4, 2 * workers of the stage it feeds)``).
    - ``use_processes``: worker processes (default) or threads.
    - ``use_savers``: send steps to worker processes as stepline dumps even when they
      could be pickled (a step that cannot be pickled always travels as a dump).
    - ``start_method``: ``"spawn"`` (default), ``"forkserver"`` or ``"fork"``.
    - ``show_progress``: ``True`` for a progress bar on stderr, or ``callable(done, total)``.
    - ``timeout_s``: off (``None``) by default; the most seconds a step may spend on one
      minibatch (a worker's setup is not timed by it: imports and models can take long). Past it the call
      raises :class:`StreamingTimeoutError` naming the step and the minibatch, and every worker
      process is stopped (a thread worker cannot be: it is abandoned, see docs/parallel.md).
    - ``setup_timeout_s``: off (``None``) by default; the most seconds a worker may spend loading
      and setting up its step, checked while a call waits on it. Past it the call raises
      :class:`StreamingTimeoutError` (``phase="setup"``) naming the step, and the workers are stopped.

    ``transform`` streams every stage. ``fit``/``fit_transform`` stream the stages
    that learn nothing and fit each learning stage here, on all its inputs at once;
    the fitted step then goes to fresh workers.
    """

    def handle_transform(self, data_container, context):
        data_container = self._whole_batches(data_container)
        n = len(self.steps_as_tuple)
        if n == 0:
            return data_container
        out = self._stream(data_container, context, [0], n - 1, False, range(n))
        return _joined(data_container, out)

    def handle_fit_transform(self, data_container, context):
        data_container = self._whole_batches(data_container)
        return self, self._fit_transform_range(data_container, context, len(self.steps_as_tuple))

    def handle_fit(self, data_container, context):
        data_container = self._whole_batches(data_container)
        learners = [k for k, s in enumerate(self.steps_as_tuple) if _learns(s)]
        if learners:
            last = learners[-1]
            data_container = self._fit_transform_range(data_container, context, last)
            self._replace(last, self.steps_as_tuple[last].handle_fit(data_container, context.push(self)))
        return self

    def _fit_transform_range(self, data_container, context, stop: int):
        """Fit-transform stages ``[0, stop)``: runs of non-learning stages stream, learners fit here."""
        k = 0
        while k < stop:
            step = self.steps_as_tuple[k]
            if _learns(step):
                fitted, data_container = step.handle_fit_transform(data_container, context.push(self))
                self._replace(k, fitted)
                k += 1
                continue
            j = k
            while j + 1 < stop and not _learns(self.steps_as_tuple[j + 1]):
                j += 1
            out = self._stream(data_container, context, [k], j, True, range(k, j + 1))
            data_container = _joined(data_container, out)
            k = j + 1
        return data_container


class ParallelQueuedFeatureUnion(_QueuedSteps):
    """Every minibatch goes to every branch at once; outputs are joined as features.

    Same arguments as :class:`SequentialQueuedPipeline`; each stage is a branch.
    The branches' outputs are concatenated along the last axis, in branch order
    (1-D outputs count as one feature column). ``expected_outputs`` pass through.
    Branches that learn are fitted here on all the data; the others stream.
    """

    _sequential = False

    def handle_transform(self, data_container, context):
        data_container = self._whole_batches(data_container)
        n = len(self.steps_as_tuple)
        if n == 0:
            return data_container
        targets = list(range(n))
        out = self._stream(data_container, context, targets, -1, False, targets)
        data_container.data_inputs = _join([_join_features([b[0] for b in batch]) for batch in out])
        return data_container

    def handle_fit_transform(self, data_container, context):
        data_container = self._whole_batches(data_container)
        steps = self.steps_as_tuple
        outputs = [None] * len(steps)
        streamed = []
        for k, step in enumerate(steps):
            if _learns(step):
                fitted, dc = step.handle_fit_transform(data_container.copy(), context.push(self))
                self._replace(k, fitted)
                outputs[k] = dc.data_inputs
            else:
                streamed.append(k)
        if streamed:
            out = self._stream(data_container, context, streamed, -1, True, streamed)
            for pos, k in enumerate(streamed):
                outputs[k] = _join([batch[pos][0] for batch in out])
        if outputs:
            data_container.data_inputs = _join_features(outputs)
        return self, data_container

    def handle_fit(self, data_container, context):
        data_container = self._whole_batches(data_container)
        for k, step in enumerate(self.steps_as_tuple):
            if _learns(step):
                self._replace(k, step.handle_fit(data_container.copy(), context.push(self)))
        return self


# ------------------------------------------------------------------ helpers
def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _no_padding(value, what: str, owner: str) -> None:
    """Streamed minibatches are never padded: only ``None`` or ``StripAbsentValues()`` is accepted."""
    if value is not None and not isinstance(value, StripAbsentValues):
        raise ValueError(f"{owner}: {what}={value!r}: stepline does not pad the last minibatch of a streaming "
                         f"step (it goes short, or is dropped with keep_incomplete_batch=False); give None "
                         f"or StripAbsentValues()")


def _timeout(value, what="timeout_s"):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{what} must be a positive number of seconds or None, got {value!r}")
    return float(value)


_STAGE_FORMS = ("step, (name, step), (n_workers, step), (name, n_workers, step) or "
                "(name, n_workers, max_queue_size, step)")


def _stage_queue_sizes(steps) -> list:
    """The max queue sizes given by 4-tuple stages (Neuraxle's form)."""
    if isinstance(steps, BaseTransformer):
        return []
    return [item[2] for item in steps
            if isinstance(item, tuple) and len(item) == 4 and isinstance(item[3], BaseTransformer)]


def _parse_stages(steps, default_workers: int, owner: str):
    """``[(name, step) or step, ...]`` for TruncableSteps, and each stage's worker count."""
    if isinstance(steps, BaseTransformer):
        steps = [steps]
    items, counts = [], []
    for item in steps:
        name, n, step = None, None, item
        if isinstance(item, tuple):
            if len(item) == 4 and isinstance(item[3], BaseTransformer):  # Neuraxle's (name, n, max queue, step)
                name, n, queue_size, step = item
                if not isinstance(queue_size, numbers.Integral) or isinstance(queue_size, bool):
                    raise TypeError(f"{owner}: a stage is {_STAGE_FORMS}; got {item!r}")
                _positive_int(queue_size, f"{owner}: the max queue size of a stage")
            elif len(item) == 3:
                name, n, step = item
            elif len(item) == 2 and isinstance(item[0], str):
                name, step = item
            elif len(item) == 2 and isinstance(item[0], numbers.Integral) and not isinstance(item[0], bool):
                n, step = item
            else:
                raise TypeError(f"{owner}: a stage is {_STAGE_FORMS}; got {item!r}")
            if name is not None and not isinstance(name, str):
                raise TypeError(f"{owner}: a stage name must be a string, got {name!r} in {item!r}")
        if not isinstance(step, BaseTransformer):
            raise TypeError(f"{owner}: a stage is {_STAGE_FORMS}; got {type(step).__name__} {step!r}")
        counts.append(default_workers if n is None else _positive_int(n, f"{owner}: the workers of a stage"))
        items.append(step if name is None else (name, step))
    return items, counts


def _learns(step) -> bool:
    """Whether fitting ``step`` (or a step inside it) learns from the data."""
    return any(step.apply(lambda s, cx: s._needs_fit).values())


def _fingerprint(step) -> str:
    """What workers copied of a step that changes without replacing it: hyperparameters, stored
    train mode (not a call's mode, e.g. ``predict``'s: that travels with each minibatch)."""
    nodes = step.apply(lambda s, cx: (id(s), own_is_train(s)))
    return repr((sorted(nodes.items()), sorted(step.get_hyperparams().items())))


def _join_features(parts: list):
    """Side by side, as FeatureUnion joins: 1-D outputs as columns, DataFrames keep index and columns."""
    from stepline.steps.numpy import concatenate_inner_features
    return concatenate_inner_features(parts)


__all__ = ["SequentialQueuedPipeline", "ParallelQueuedFeatureUnion", "StreamingWorkerError", "StreamingTimeoutError",
           "StreamingSetupError", "_ProducerConsumerMixin", "_ProducerConsumerStepSaver"]


# Neuraxle's names for the same things (and its internals, which stepline does not have).
BaseQueuedPipeline = _QueuedSteps
from stepline.distributed.neuraxle_internals import (ParallelWorkersWrapper, QueuedMinibatchTask,  # noqa: E402
                                                     WorkersJoiner)
