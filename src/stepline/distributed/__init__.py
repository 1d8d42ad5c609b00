"""Parallel and distributed execution.

:mod:`stepline.distributed.streaming` holds the streaming steps that run on one
machine: ``SequentialQueuedPipeline`` and ``ParallelQueuedFeatureUnion``, whose
stages run in worker processes or threads joined by bounded queues. The parent side
of that machinery lives in :mod:`stepline.distributed.runtime`, the worker side in
:mod:`stepline.distributed.workers`, the queues, result pipe and busy board between them
in :mod:`stepline.distributed.channels`. See ``docs/parallel.md``.
:mod:`stepline.distributed.dask` runs a step on a Dask cluster (``docs/dask.md``).
"""
