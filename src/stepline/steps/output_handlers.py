"""Wrappers that let an ordinary step work on the expected outputs.

- :class:`OutputTransformerWrapper`: the wrapped step fits on and transforms the
  expected outputs; the data inputs pass through.
- :class:`InputAndOutputTransformerWrapper`: the wrapped step receives
  ``(data_inputs, expected_outputs)`` and returns such a pair.
"""
from __future__ import annotations

from stepline.core.composite import MetaStep
from stepline.core.data import DataContainer


class OutputTransformerWrapper(MetaStep):
    """Applies the wrapped step to the expected outputs instead of the data inputs.

    In fit and fit_transform the step is fitted on the expected outputs and transforms
    them; the data inputs are unchanged. In transform the expected outputs are
    transformed when there are any; with none (inference) the data passes through.
    ``OutputTransformerWrapper(NumpyRavel())`` ravels the labels.
    """

    def _outputs_container(self, data_container) -> DataContainer:
        return DataContainer(data_container.expected_outputs, None, data_container.ids)

    def handle_fit(self, data_container, context):
        if data_container.expected_outputs is None:
            return self
        return super().handle_fit(self._outputs_container(data_container), context)

    def handle_transform(self, data_container, context):
        if data_container.expected_outputs is None:
            return data_container
        outputs = super().handle_transform(self._outputs_container(data_container), context)
        data_container.expected_outputs = outputs.data_inputs
        return data_container

    def handle_fit_transform(self, data_container, context):
        if data_container.expected_outputs is None:
            return self, data_container
        step, outputs = super().handle_fit_transform(self._outputs_container(data_container), context)
        data_container.expected_outputs = outputs.data_inputs
        return step, data_container


class InputAndOutputTransformerWrapper(MetaStep):
    """The wrapped step receives ``(data_inputs, expected_outputs)`` and returns such a pair.

    Use it for steps that change both together (resampling, filtering rows, augmenting).
    The wrapped step's ``fit`` gets the pair as data inputs and the expected outputs as
    expected outputs; its ``transform`` must return a ``(data_inputs, expected_outputs)``
    tuple. ``expected_outputs`` is ``None`` in inference.
    """

    def _pair_container(self, data_container) -> DataContainer:
        pair = (data_container.data_inputs, data_container.expected_outputs)
        return DataContainer(pair, data_container.expected_outputs, data_container.ids)

    def _unpack(self, pair_container, data_container) -> DataContainer:
        pair = pair_container.data_inputs
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"{type(self).__name__} {self.name!r}: step {self.wrapped.name!r} must return "
                            f"a (data_inputs, expected_outputs) tuple, got {type(pair).__name__}")
        data_container.data_inputs, data_container.expected_outputs = pair
        return data_container

    def handle_fit(self, data_container, context):
        return super().handle_fit(self._pair_container(data_container), context)

    def handle_transform(self, data_container, context):
        pair = super().handle_transform(self._pair_container(data_container), context)
        return self._unpack(pair, data_container)

    def handle_fit_transform(self, data_container, context):
        step, pair = super().handle_fit_transform(self._pair_container(data_container), context)
        return step, self._unpack(pair, data_container)


__all__ = ["OutputTransformerWrapper", "InputAndOutputTransformerWrapper"]


# Neuraxle's handlers of (ids, inputs, outputs) live in stepline.steps.ids_handlers.
from stepline.steps.ids_handlers import (IdsAndInputAndOutputTransformerMixin,  # noqa: E402
                                         IdsInputAndOutputTransformerWrapper)
