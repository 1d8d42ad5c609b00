"""The public names of stepline's step model (the seed's ``neuraxle.base``)."""
from typing import List, Tuple, Union

from stepline.core.composite import CompositeStep, MetaStep, TruncableSteps
from stepline.core.context import CX, ExecutionContext, ExecutionMode, ExecutionPhase
from stepline.core.data import DataContainer
from stepline.core.errors import (DuplicateStepNameError, HyperparameterError, InvalidStepNameError,
                                  NotFittedError, SteplineError)
from stepline.core.handle_mixins import (AssertExpectedOutputIsNone, AssertExpectedOutputIsNoneMixin,
                                         AssertExpectedOutputIsNoneStep, AssertExpectedOutputIsNotNone,
                                         AssertExpectedOutputIsNotNoneMixin, ForceHandleIdentity,
                                         ForceHandleMixin, ForceHandleOnlyMixin, HandleOnlyMixin,
                                         IdentityHandlerMethodsMixin, TransformHandlerOnlyMixin)
from stepline.core.mixins import HandlerMixin, Identity, NonFittableMixin, NonTransformableMixin
from stepline.core.neuraxle_api import _RecursiveArguments
from stepline.core.step import BaseStep, BaseTransformer
from stepline.core.with_context import StepWithContext
from stepline.saving.savers import BaseSaver, ChildrenSaver, JoblibStepSaver

# Neuraxle's names for the same concepts (ported code imports them from here).
BaseService = BaseTransformer
_FittableStep = BaseStep
_HasChildrenMixin = CompositeStep
MetaStepMixin = MetaStep
TruncableJoblibStepSaver = ChildrenSaver
NamedStepsList = List[Union[Tuple[str, BaseTransformer], BaseTransformer]]

__all__ = [
    "BaseStep", "BaseTransformer", "BaseSaver", "JoblibStepSaver", "ChildrenSaver",
    "ExecutionContext", "CX", "ExecutionPhase", "ExecutionMode", "DataContainer", "Identity",
    "NonFittableMixin", "NonTransformableMixin", "HandlerMixin", "MetaStep", "TruncableSteps",
    "CompositeStep", "NotFittedError", "SteplineError", "InvalidStepNameError",
    "DuplicateStepNameError", "HyperparameterError", "StepWithContext", "ForceHandleMixin",
    "HandleOnlyMixin", "ForceHandleOnlyMixin", "TransformHandlerOnlyMixin", "IdentityHandlerMethodsMixin",
    "ForceHandleIdentity", "AssertExpectedOutputIsNone", "AssertExpectedOutputIsNotNone",
    "AssertExpectedOutputIsNoneMixin", "AssertExpectedOutputIsNotNoneMixin", "AssertExpectedOutputIsNoneStep",
    "BaseService", "NamedStepsList", "TruncableJoblibStepSaver",
]
