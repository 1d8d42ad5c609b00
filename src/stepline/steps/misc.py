"""Steps that record or check what flows through a pipeline (Neuraxle's ``steps.misc``).

Mostly for tests and debugging: callbacks on fit/transform (:class:`TapeCallbackFunction`
records them), a step that must never run (:class:`AssertFalseStep`), a delay
(:class:`Sleep`), and a step that logs each call (:class:`TransformOnlyCounterLoggingStep`).
"""
from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable, List, Optional

from stepline.core.composite import MetaStep
from stepline.core.handle_mixins import ForceHandleOnlyMixin, HandleOnlyMixin
from stepline.core.mixins import NonFittableMixin
from stepline.core.step import BaseStep, BaseTransformer
from stepline.hyperparams.space import RecursiveDict

logger = logging.getLogger(__name__)


class TapeCallbackFunction:
    """A callable that records each call's data (``data``) and name (``name_tape``)."""

    def __init__(self):
        self.data: List[Any] = []
        self.name_tape: List[str] = []

    def __call__(self, *args, **kwargs):
        return self.callback(*args, **kwargs)

    def callback(self, data, name: str = "") -> None:
        self.data.append(data)
        self.name_tape.append(name)

    def reset(self) -> "TapeCallbackFunction":
        self.data = []
        self.name_tape = []
        return self

    def get_data(self) -> List:
        return self.data

    def get_name_tape(self) -> List[str]:
        return self.name_tape


class BaseCallbackStep(BaseStep):
    """Calls ``callback_function(data, *more_arguments)`` on its events; data passes through
    (or through ``transform_function`` when given)."""

    def __init__(self, callback_function: Callable = None, more_arguments=tuple(), hyperparams=None,
                 fit_callback_function: Optional[Callable] = None, transform_function: Optional[Callable] = None,
                 name=None):
        super().__init__(hyperparams=hyperparams, name=name)
        self.callback_function = callback_function if callback_function is not None else TapeCallbackFunction()
        self.fit_callback_function = fit_callback_function
        self.transform_function = transform_function
        self.more_arguments = list(more_arguments)

    def _callback(self, data) -> None:
        self.callback_function(data, *self.more_arguments)

    def _output(self, data_inputs):
        return self.transform_function(data_inputs) if self.transform_function is not None else data_inputs

    def transform(self, data_inputs):
        return data_inputs

    def inverse_transform(self, processed_outputs):
        return processed_outputs


class FitCallbackStep(BaseCallbackStep):
    """Calls the callback with ``(data_inputs, expected_outputs)`` on fit."""

    _needs_fit = False  # it records calls; it has nothing to learn before a transform

    def fit(self, data_inputs, expected_outputs=None) -> "FitCallbackStep":
        self._callback((data_inputs, expected_outputs))
        return self


class TransformCallbackStep(NonFittableMixin, BaseCallbackStep):
    """Calls the callback with the data inputs on transform (and inverse_transform)."""

    def transform(self, data_inputs):
        self._callback(data_inputs)
        return self._output(data_inputs)

    def fit_transform(self, data_inputs, expected_outputs=None):
        return self, self.transform(data_inputs)

    def inverse_transform(self, processed_outputs):
        self._callback(processed_outputs)
        return processed_outputs


class FitTransformCallbackStep(BaseStep):
    """Records fits (``(di, eo)``) and transforms (``di``) in two callbacks (tapes by default)."""

    _needs_fit = False  # it records calls; it has nothing to learn before a transform

    def __init__(self, transform_callback_function=None, fit_callback_function=None, more_arguments=tuple(),
                 transform_function=None, hyperparams=None, name=None):
        super().__init__(hyperparams=hyperparams, name=name)
        self.transform_callback_function = transform_callback_function or TapeCallbackFunction()
        self.fit_callback_function = fit_callback_function or TapeCallbackFunction()
        self.transform_function = transform_function
        self.more_arguments = list(more_arguments)

    def fit(self, data_inputs, expected_outputs=None):
        self.fit_callback_function((data_inputs, expected_outputs), *self.more_arguments)
        return self

    def transform(self, data_inputs):
        self.transform_callback_function(data_inputs, *self.more_arguments)
        return self.transform_function(data_inputs) if self.transform_function is not None else data_inputs

    def fit_transform(self, data_inputs, expected_outputs=None):
        self.fit_callback_function((data_inputs, expected_outputs), *self.more_arguments)
        return self, self.transform(data_inputs)

    def inverse_transform(self, processed_outputs):
        return processed_outputs

    def clear_callbacks(self) -> RecursiveDict:
        """Empty both tapes; returns what they held, under this step's name."""
        cleared = RecursiveDict({self.name: {"transform": self.transform_callback_function.data,
                                             "fit": self.fit_callback_function.data}})
        for tape in (self.transform_callback_function, self.fit_callback_function):
            tape.data, tape.name_tape = [], []
        return cleared


class CallbackWrapper(MetaStep):
    """Wraps a step and calls callbacks before each of its fits, transforms and inverse transforms."""

    def __init__(self, wrapped, transform_callback_function, fit_callback_function,
                 inverse_transform_callback_function=None, more_arguments=tuple(), hyperparams=None, name=None):
        super().__init__(wrapped, hyperparams=hyperparams, name=name)
        self.transform_callback_function = transform_callback_function
        self.fit_callback_function = fit_callback_function
        self.inverse_transform_callback_function = inverse_transform_callback_function
        self.more_arguments = list(more_arguments)

    def handle_fit(self, data_container, context):
        self.fit_callback_function((data_container.data_inputs, data_container.expected_outputs), *self.more_arguments)
        return super().handle_fit(data_container, context)

    def handle_fit_transform(self, data_container, context):
        self.fit_callback_function((data_container.data_inputs, data_container.expected_outputs), *self.more_arguments)
        self.transform_callback_function(data_container.data_inputs, *self.more_arguments)
        return super().handle_fit_transform(data_container, context)

    def handle_transform(self, data_container, context):
        self.transform_callback_function(data_container.data_inputs, *self.more_arguments)
        return super().handle_transform(data_container, context)

    def handle_inverse_transform(self, data_container, context):
        if self.inverse_transform_callback_function is not None:
            self.inverse_transform_callback_function(data_container.data_inputs, *self.more_arguments)
        return self.wrapped.handle_inverse_transform(data_container, context.push(self))

    def inverse_transform(self, processed_outputs):
        if self.inverse_transform_callback_function is not None:
            self.inverse_transform_callback_function(processed_outputs, *self.more_arguments)
        return self.wrapped.inverse_transform(processed_outputs)


class HandleCallbackStep(ForceHandleOnlyMixin, BaseStep):
    """Calls a callback with ``(data_container, context)`` in each handler; data passes through."""

    def __init__(self, handle_fit_callback, handle_transform_callback, handle_fit_transform_callback, name=None):
        BaseStep.__init__(self, name=name)
        ForceHandleOnlyMixin.__init__(self)
        self.handle_fit_callback = handle_fit_callback
        self.handle_transform_callback = handle_transform_callback
        self.handle_fit_transform_callback = handle_fit_transform_callback

    def _fit_data_container(self, data_container, context):
        self.handle_fit_callback((data_container, context))
        return self

    def _transform_data_container(self, data_container, context):
        self.handle_transform_callback((data_container, context))
        return data_container

    def _fit_transform_data_container(self, data_container, context):
        self.handle_fit_transform_callback((data_container, context))
        return self, data_container


class AssertFalseStep(HandleOnlyMixin, BaseStep):
    """Raises ``AssertionError(message)`` if it is ever fitted or transformed."""

    def __init__(self, message: str = "This step should not fit nor transform.", name=None):
        BaseStep.__init__(self, name=name)
        self.message = message

    def _fit_data_container(self, data_container, context):
        raise AssertionError(self.message)

    def _transform_data_container(self, data_container, context):
        raise AssertionError(self.message)

    def _fit_transform_data_container(self, data_container, context):
        raise AssertionError(self.message)


class Sleep(NonFittableMixin, BaseTransformer):
    """Waits ``sleep_time`` seconds (plus up to ``add_random_quantity``) and passes data through."""

    def __init__(self, sleep_time: float = 0.1, add_random_quantity: float = 0.0, name=None):
        super().__init__(name=name)
        self.sleep_time = sleep_time
        self.add_random_quantity = add_random_quantity

    def transform(self, data_inputs):
        time.sleep(self.sleep_time + random.random() * self.add_random_quantity)
        return data_inputs


class FitTransformCounterLoggingStep(HandleOnlyMixin, BaseStep):
    """Logs each fit/transform call with a running count; data passes through."""

    def __init__(self, name=None):
        BaseStep.__init__(self, name=name)
        self.logging_call_counter = 0

    def _log(self, what: str, context=None) -> None:
        """Through ``context.logger`` (kept in the history, as Neuraxle's), else the module's logger."""
        log = logger if context is None else context.logger
        log.info("%s - %s call - logging call #%d", self.name, what, self.logging_call_counter)
        self.logging_call_counter += 1

    def _fit_data_container(self, data_container, context):
        self._log("fit", context)
        return self

    def _transform_data_container(self, data_container, context):
        self._log("transform", context)
        return data_container

    def _fit_transform_data_container(self, data_container, context):
        self._log("fit_transform", context)
        return self, data_container


class TransformOnlyCounterLoggingStep(FitTransformCounterLoggingStep):
    """Logs each transform call (fitting logs nothing)."""

    def _fit_data_container(self, data_container, context):
        return self

    def _fit_transform_data_container(self, data_container, context):
        return self, self._transform_data_container(data_container, context)


__all__ = ["TapeCallbackFunction", "BaseCallbackStep", "FitCallbackStep", "TransformCallbackStep",
           "FitTransformCallbackStep", "CallbackWrapper", "HandleCallbackStep", "AssertFalseStep", "Sleep",
           "FitTransformCounterLoggingStep", "TransformOnlyCounterLoggingStep"]
