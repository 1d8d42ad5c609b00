"""Parallel and distributed execution.

:mod:`stepline.distributed.streaming` holds the streaming steps that run on one
machine: ``SequentialQueuedPipeline`` and ``ParallelQueuedFeatureUnion``, whose
stages run in worker processes or threads joined by bounded queues. The parent side
of that machinery lives in :mod:`stepline.distributed.runtime`, the worker side in
:mod:`stepline.distributed.workers`. See ``docs/parallel.md``.
"""
