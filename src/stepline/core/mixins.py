"""Mixins that change what a step does, and the simplest steps built from them.

Write mixins first, as the seed does: ``class NumpyRavel(NonFittableMixin, BaseStep)``.
No ``__init__`` of your own is needed.
"""
from __future__ import annotations

from stepline.core.context import ExecutionContext
from stepline.core.data import DataContainer
from stepline.core.lifecycle import SETUP_CONTEXT, trivial_fit
from stepline.core.step import BaseStep, BaseTransformer


class NonFittableMixin:
    """The step learns nothing: ``fit`` returns it unchanged, no fitting is needed."""

    _needs_fit = False

    @trivial_fit
    def fit(self, data_inputs, expected_outputs=None):
        """Nothing to learn: returns the step unchanged."""
        return self

    @trivial_fit
    def fit_transform(self, data_inputs, expected_outputs=None):
        """Nothing to learn: ``(self, self.transform(data_inputs))``."""
        return self, self.transform(data_inputs)


class NonTransformableMixin:
    """The step passes its inputs through unchanged."""

    def transform(self, data_inputs):
        """The inputs, unchanged."""
        return data_inputs

    def inverse_transform(self, processed_outputs):
        """The outputs, unchanged."""
        return processed_outputs


class HandlerMixin:
    """For steps that work on the data container: plain calls go through the handlers.

    Subclasses override ``handle_fit``, ``handle_transform`` and
    ``handle_fit_transform``; ``fit``/``transform``/``fit_transform`` wrap their
    inputs in a :class:`DataContainer` and call them under the context given to
    ``setup`` (or a fresh one).
    """

    def fit(self, data_inputs, expected_outputs=None):
        """``handle_fit`` on the inputs wrapped in a :class:`DataContainer`; returns the fitted step."""
        return self.handle_fit(DataContainer(data_inputs, expected_outputs), self._plain_call_context())

    def transform(self, data_inputs):
        """``handle_transform`` on the inputs wrapped in a :class:`DataContainer`; returns the outputs."""
        return self.handle_transform(DataContainer(data_inputs), self._plain_call_context()).data_inputs

    def fit_transform(self, data_inputs, expected_outputs=None):
        """``handle_fit_transform`` on the wrapped inputs; returns ``(fitted step, outputs)``."""
        step, dc = self.handle_fit_transform(DataContainer(data_inputs, expected_outputs),
                                             self._plain_call_context())
        return step, dc.data_inputs

    def _plain_call_context(self) -> ExecutionContext:
        """The context given to ``setup`` (a fresh one if none was)."""
        context = self.__dict__.get(SETUP_CONTEXT)
        return context if context is not None else ExecutionContext()


class Identity(NonTransformableMixin, NonFittableMixin, BaseStep):
    """Passes data through unchanged."""


__all__ = ["NonFittableMixin", "NonTransformableMixin", "HandlerMixin", "Identity",
           "BaseStep", "BaseTransformer"]
