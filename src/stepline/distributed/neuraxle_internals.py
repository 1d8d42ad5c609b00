"""Names of Neuraxle's streaming internals, kept so that ported modules import.

stepline's streaming runtime (:mod:`stepline.distributed.runtime`) is built differently:
workers receive their step as a saved dump and talk through bounded queues it owns. Code
that drove Neuraxle's workers by hand (``ParallelWorkersWrapper``, ``WorkersJoiner``,
``QueuedMinibatchTask``) has no equivalent; these classes say so when used.
"""
from __future__ import annotations


class _NotInStepline:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(
            f"{type(self).__name__} is an internal of Neuraxle's streaming runtime; stepline's "
            f"SequentialQueuedPipeline/ParallelQueuedFeatureUnion run their workers themselves "
            f"(see docs/neuraxle.md)")


class ParallelWorkersWrapper(_NotInStepline):
    """Not in stepline (see the module)."""


class WorkersJoiner(_NotInStepline):
    """Not in stepline (see the module)."""


class QueuedMinibatchTask(_NotInStepline):
    """Not in stepline (see the module)."""
