"""Mixins that change what a step does, and the simplest steps built from them.

Write mixins first, as the seed does: ``class NumpyRavel(NonFittableMixin, BaseStep)``.
No ``__init__`` of your own is needed.
"""
from __future__ import annotations

from stepline.core.context import ExecutionContext
from stepline.core.data import DataContainer
from stepline.core.lifecycle import trivial_fit
from stepline.core.step import BaseStep, BaseTransformer


class NonFittableMixin:
    """The step learns nothing: ``fit`` returns it unchanged, no fitting is needed."""

    _needs_fit = False

    @trivial_fit
    def fit(self, data_inputs, expected_outputs=None):
        return self

    @trivial_fit
    def fit_transform(self, data_inputs, expected_outputs=None):
        return self, self.transform(data_inputs)


class NonTransformableMixin:
    """The step passes its inputs through unchanged."""

    def transform(self, data_inputs):
        return data_inputs


class HandlerMixin:
    """For steps that work on the data container: plain calls go through the handlers.

    Subclasses override ``handle_fit``, ``handle_transform`` and
    ``handle_fit_transform``; ``fit``/``transform``/``fit_transform`` wrap their
    inputs in a :class:`DataContainer` and call them.
    """

    def fit(self, data_inputs, expected_outputs=None):
        return self.handle_fit(DataContainer(data_inputs, expected_outputs), ExecutionContext())

    def transform(self, data_inputs):
        return self.handle_transform(DataContainer(data_inputs), ExecutionContext()).data_inputs

    def fit_transform(self, data_inputs, expected_outputs=None):
        step, dc = self.handle_fit_transform(DataContainer(data_inputs, expected_outputs), ExecutionContext())
        return step, dc.data_inputs


class Identity(NonTransformableMixin, NonFittableMixin, BaseStep):
    """Passes data through unchanged."""


__all__ = ["NonFittableMixin", "NonTransformableMixin", "HandlerMixin", "Identity",
           "BaseStep", "BaseTransformer"]
