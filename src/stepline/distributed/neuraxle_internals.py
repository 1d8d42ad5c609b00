"""Neuraxle's hand-driven streaming pieces, run by stepline's own workers.

Neuraxle code can drive a stage by hand: a :class:`ParallelWorkersWrapper` around a step
receives :class:`QueuedMinibatchTask` s and a :class:`WorkersJoiner` collects the outputs::

    worker = ParallelWorkersWrapper(step, n_workers=4, use_processes=True)
    joiner = WorkersJoiner(batch_size=10, n_worker_wrappers_to_join=1)
    worker.register_consumer(joiner)
    worker.start(cx)
    for task in tasks:
        worker.put_minibatch_produced(task)
    joiner.set_join_quantities(1, len(tasks))
    out = joiner.join_workers(whole_dact, cx)   # the outputs, in task order, with whole_dact's ids
    worker.join(); worker.teardown()

Here the wrapper holds a one-stage :class:`~stepline.distributed.streaming.SequentialQueuedPipeline`
and the joiner runs the tasks it was given through that pipeline's workers (processes or
threads, started by ``start``, stopped by ``teardown``), so failures, timeouts and the
no-hang guarantees are the pipeline's (docs/parallel.md).
"""
from __future__ import annotations


class QueuedMinibatchTask:
    """One minibatch (a data container) for the stage of ``step_name``."""

    def __init__(self, minibatch_dact, step_name: str = None):
        self.minibatch_dact = minibatch_dact
        self.step_name = step_name

    def __repr__(self) -> str:
        return f"QueuedMinibatchTask(step_name={self.step_name!r}, rows={len(self.minibatch_dact)})"


class ParallelWorkersWrapper:
    """``n_workers`` workers of one step; minibatches are given with :meth:`put_minibatch_produced`."""

    def __init__(self, wrapped, n_workers: int = 1, use_processes: bool = True, use_savers: bool = False):
        from stepline.distributed.streaming import SequentialQueuedPipeline
        self.wrapped = wrapped
        self.name = wrapped.name
        self._pipeline = SequentialQueuedPipeline([(wrapped.name, n_workers, wrapped)], batch_size=1,
                                                  use_processes=use_processes, use_savers=use_savers)
        self._pipeline.set_name(f"{wrapped.name}_workers")
        self._consumers: list = []
        self._tasks: list = []
        self._context = None

    def _setup(self, context=None) -> "ParallelWorkersWrapper":
        self._context = context
        return self

    def register_consumer(self, joiner: "WorkersJoiner") -> None:
        """Send this wrapper's outputs to ``joiner``."""
        self._consumers.append(joiner)
        joiner._workers.append(self)

    def start(self, context=None, *args) -> None:
        """Start the workers (each sets up its copy of the step)."""
        self._context = context if context is not None else self._context
        self._pipeline.setup(self._context)

    def put_minibatch_produced(self, task: QueuedMinibatchTask) -> None:
        """Queue one minibatch; it runs when a joiner joins this wrapper."""
        self._tasks.append(task)

    def _run_tasks(self, context) -> list:
        """The ``(data_inputs, expected_outputs)`` of every queued task, in order (then forgotten)."""
        from stepline.core.mode import current_call_mode
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return []
        runtime = self._pipeline._runtime_for(context or self._context, [0])
        batches = [(t.minibatch_dact.data_inputs, t.minibatch_dact.expected_outputs) for t in tasks]
        return runtime.run(batches, [0], 0, False, None, current_call_mode())

    def join(self) -> None:
        """Nothing runs between calls: the workers wait for the next minibatches."""

    def teardown(self) -> "ParallelWorkersWrapper":
        """Stop the workers."""
        self._pipeline.teardown()
        return self


class WorkersJoiner:
    """Collects, in order, what the registered :class:`ParallelWorkersWrapper` s output."""

    def __init__(self, batch_size: int = None, n_worker_wrappers_to_join: int = None):
        self.batch_size = batch_size
        self.n_worker_wrappers_to_join = n_worker_wrappers_to_join
        self._workers: list = []
        self._expected_batches = None
        self._summaries: dict = {}

    def _setup(self, context=None) -> "WorkersJoiner":
        return self

    def append_terminal_summary(self, name: str, task: QueuedMinibatchTask) -> None:
        """Note the last task ``name`` will produce (kept for Neuraxle code; nothing waits on it)."""
        self._summaries.setdefault(name, []).append(task)

    def set_join_quantities(self, n_workers: int, n_batches: int) -> None:
        """How many minibatches :meth:`join_workers` must get back."""
        self._expected_batches = n_batches

    def join_workers(self, original_dact, sync_context=None):
        """Run the queued minibatches and return their outputs joined, with ``original_dact``'s ids."""
        from stepline.data_container import DataContainer
        from stepline.distributed.minibatches import join
        outputs = [o for worker in self._workers for o in worker._run_tasks(sync_context)]
        if self._expected_batches is not None and len(outputs) != self._expected_batches:
            raise ValueError(f"WorkersJoiner: expected {self._expected_batches} minibatches, got {len(outputs)}")
        if not outputs:
            return DataContainer(ids=original_dact.ids, di=original_dact.data_inputs,
                                 eo=original_dact.expected_outputs)
        data_inputs = join([di for di, _ in outputs])
        eos = [eo for _, eo in outputs]
        expected = original_dact.expected_outputs if any(e is None for e in eos) else join(eos)
        return DataContainer(ids=original_dact.ids, di=data_inputs, eo=expected)

    def teardown(self) -> "WorkersJoiner":
        return self
