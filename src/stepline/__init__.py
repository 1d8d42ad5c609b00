"""stepline: ML pipelines whose steps have an explicit lifecycle and are saved and loaded whole."""
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
