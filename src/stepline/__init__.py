"""ML pipelines whose steps have an explicit lifecycle and are saved and loaded whole.

A step is constructed cheaply, gets its hyperparameters, is ``setup`` before its first call,
is fitted and transforms, is saved through its list of savers, and is torn down::

    from stepline import CX, Pipeline
    pipeline = Pipeline([...]).set_name("model")
    pipeline, outputs = pipeline.fit_transform(X, y)
    pipeline.save(CX("cache_folder"), full_dump=True)   # cache_folder/model/, one folder per step
    loaded = CX("cache_folder").load("model")           # in any process, without the code that built it

The everyday names are here; the others live where Neuraxle users expect them
(``stepline.base``, ``stepline.pipeline``, ``stepline.steps.*``, ``stepline.hyperparams.*``,
``stepline.distributed.streaming``), with ``stepline.automl`` (tuning with Optuna),
``stepline.serving`` (HTTP), ``stepline.torch`` and ``stepline.trust``. The ``stepline``
command runs the demo and inspects, verifies, trusts, serves and scores dumps
(``stepline --help``). The concepts are in the repository's ``docs/`` folder.
"""
from stepline.base import (CX, BaseSaver, BaseStep, BaseTransformer, DataContainer, ExecutionContext,
                           ExecutionPhase, Identity, JoblibStepSaver, MetaStep, NonFittableMixin,
                           NonTransformableMixin, NotFittedError, TruncableSteps)
from stepline.hyperparams.space import HyperparameterSamples, HyperparameterSpace
from stepline.pipeline import Pipeline

__version__ = "0.1.0"

__all__ = [
    "Pipeline", "BaseStep", "BaseTransformer", "BaseSaver", "JoblibStepSaver", "ExecutionContext",
    "CX", "ExecutionPhase", "DataContainer", "Identity", "NonFittableMixin", "NonTransformableMixin",
    "MetaStep", "TruncableSteps", "NotFittedError", "HyperparameterSamples", "HyperparameterSpace",
    "__version__",
]

_INTERNAL_MODULES = {"core", "estimator_api", "cli"}  # imported for the names above, not an API


def __dir__() -> list[str]:
    """The public names and the public submodules imported so far (not the internal ones)."""
    import types
    modules = [name for name, value in globals().items()
               if isinstance(value, types.ModuleType) and not name.startswith("_") and name not in _INTERNAL_MODULES]
    return sorted({*__all__, *modules})
