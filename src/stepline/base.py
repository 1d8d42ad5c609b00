"""The public names of stepline's step model (the seed's ``neuraxle.base``)."""
from stepline.core.composite import CompositeStep, MetaStep, TruncableSteps
from stepline.core.context import CX, ExecutionContext, ExecutionPhase
from stepline.core.data import DataContainer
from stepline.core.errors import (DuplicateStepNameError, HyperparameterError, InvalidStepNameError,
                                  NotFittedError, SteplineError)
from stepline.core.mixins import HandlerMixin, Identity, NonFittableMixin, NonTransformableMixin
from stepline.core.step import BaseStep, BaseTransformer
from stepline.saving.savers import BaseSaver, ChildrenSaver, JoblibStepSaver

__all__ = [
    "BaseStep", "BaseTransformer", "BaseSaver", "JoblibStepSaver", "ChildrenSaver",
    "ExecutionContext", "CX", "ExecutionPhase", "DataContainer", "Identity",
    "NonFittableMixin", "NonTransformableMixin", "HandlerMixin", "MetaStep", "TruncableSteps",
    "CompositeStep", "NotFittedError", "SteplineError", "InvalidStepNameError",
    "DuplicateStepNameError", "HyperparameterError",
]
