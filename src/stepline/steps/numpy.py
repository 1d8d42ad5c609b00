"""Small NumPy steps, and any function as a step.

None of these steps copies data it does not have to: ``np.asarray`` leaves arrays as
they are, ravel and transpose return views where NumPy can.
"""
from __future__ import annotations

import logging

import numpy as np

from stepline.core.mixins import HandlerMixin, NonFittableMixin
from stepline.core.step import BaseStep

logger = logging.getLogger(__name__)


class NumpyRavel(NonFittableMixin, BaseStep):
    """Flattens the data inputs to one dimension (``None`` passes through)."""

    def transform(self, data_inputs):
        if data_inputs is None:
            return data_inputs
        return np.ravel(data_inputs)


def concatenate_inner_features(arrays) -> np.ndarray:
    """Join arrays of one row each per sample along their last axis.

    A 1-D array counts as one feature per sample (a column). Every array must have
    the same shape except on the last axis.
    """
    arrays = list(arrays)
    if not arrays:
        raise ValueError("nothing to concatenate: no arrays given")
    if all(hasattr(a, "iloc") and hasattr(a, "index") for a in arrays):
        return _concatenate_frames(arrays)
    arrays = [np.asarray(a) for a in arrays]
    arrays = [a.reshape(-1, 1) if a.ndim == 1 else a for a in arrays]
    leading = {a.shape[:-1] for a in arrays}
    if len(leading) > 1:
        raise ValueError("cannot concatenate features of arrays whose shapes differ before the last "
                         f"axis: {[a.shape for a in arrays]}")
    return np.concatenate(arrays, axis=-1)


def _concatenate_frames(frames: list):
    """DataFrames/Series side by side: the index of the first is kept, columns are made unique."""
    import pandas as pd
    frames = [f.to_frame() if isinstance(f, pd.Series) else f for f in frames]
    index = frames[0].index
    if any(len(f) != len(index) for f in frames):
        raise ValueError(f"cannot put side by side DataFrames of {[len(f) for f in frames]} rows")
    joined = pd.concat([f.set_axis(index, axis=0) for f in frames], axis=1)
    if joined.columns.has_duplicates:
        seen: dict = {}
        columns = []
        for c in joined.columns:
            seen[c] = seen.get(c, -1) + 1
            columns.append(c if seen[c] == 0 else f"{c}_{seen[c]}")
        joined.columns = columns
    return joined


class NumpyConcatenateInnerFeatures(NonFittableMixin, BaseStep):
    """Takes a list of arrays and joins them along the last axis (1-D arrays as columns)."""

    def transform(self, data_inputs):
        return concatenate_inner_features(data_inputs)


class NumpyTranspose(NonFittableMixin, BaseStep):
    """Reverses the axes of the data inputs (``x.T``); its own inverse."""

    def transform(self, data_inputs):
        return np.transpose(np.asarray(data_inputs))

    def inverse_transform(self, processed_outputs):
        return np.transpose(np.asarray(processed_outputs))


class NumpyShapePrinter(NonFittableMixin, BaseStep):
    """Logs the shape of the data inputs (logger ``stepline.steps.numpy``, level INFO); passes them on."""

    def __init__(self, custom_message: str = "", name=None):
        super().__init__(name=name)
        self.custom_message = custom_message

    def transform(self, data_inputs):
        if logger.isEnabledFor(logging.INFO):
            shape = getattr(data_inputs, "shape", None)
            if shape is None:
                shape = np.shape(data_inputs)
            logger.info("%s %s shape: %s", self.name, self.custom_message, tuple(shape))
        return data_inputs


class MultiplyByN(NonFittableMixin, BaseStep):
    """Multiplies the data inputs by the hyperparameter ``multiply_by``; ``inverse_transform`` divides."""

    def __init__(self, multiply_by=1, hyperparams_space=None, name=None):
        super().__init__(hyperparams={"multiply_by": multiply_by}, hyperparams_space=hyperparams_space,
                         name=name)

    def transform(self, data_inputs):
        return np.asarray(data_inputs) * self.hyperparams["multiply_by"]

    def inverse_transform(self, processed_outputs):
        return np.asarray(processed_outputs) / self.hyperparams["multiply_by"]


class AddN(NonFittableMixin, BaseStep):
    """Adds the hyperparameter ``add`` to the data inputs; ``inverse_transform`` subtracts it."""

    def __init__(self, add=1, hyperparams_space=None, name=None):
        super().__init__(hyperparams={"add": add}, hyperparams_space=hyperparams_space, name=name)

    def transform(self, data_inputs):
        return np.asarray(data_inputs) + self.hyperparams["add"]

    def inverse_transform(self, processed_outputs):
        return np.asarray(processed_outputs) - self.hyperparams["add"]


class ToNumpy(NonFittableMixin, HandlerMixin, BaseStep):
    """Converts the data inputs to an array of ``dtype`` (and expected outputs to an array).

    Arrays that already have the dtype are passed on as they are (no copy).
    """

    def __init__(self, dtype=None, name=None):
        super().__init__(name=name)
        self.dtype = dtype

    def handle_fit(self, data_container, context):
        return self

    def handle_transform(self, data_container, context):
        data_container.data_inputs = np.asarray(data_container.data_inputs, dtype=self.dtype)
        if data_container.expected_outputs is not None:
            data_container.expected_outputs = np.asarray(data_container.expected_outputs)
        return data_container

    def handle_fit_transform(self, data_container, context):
        return self, self.handle_transform(data_container, context)


class FunctionStep(BaseStep):
    """Any function as a step.

    ``FunctionStep(fn)`` returns ``fn(data_inputs)`` and learns nothing. With
    ``fit_fn``, fitting stores ``state = fit_fn(data_inputs, expected_outputs)`` and
    ``transform`` returns ``fn(data_inputs, state)`` (so the step must be fitted first).
    The functions are saved with the step; one defined in ``__main__`` (a script, a
    notebook) or a lambda travels by value and loads without its source.
    """

    def __init__(self, fn, fit_fn=None, name=None):
        if not callable(fn) or (fit_fn is not None and not callable(fit_fn)):
            raise TypeError(f"FunctionStep takes functions, got fn={fn!r}, fit_fn={fit_fn!r}")
        super().__init__(name=name)
        self.fn = fn
        self.fit_fn = fit_fn
        self.state = None
        self._needs_fit = fit_fn is not None

    def fit(self, data_inputs, expected_outputs=None):
        if self.fit_fn is not None:
            self.state = self.fit_fn(data_inputs, expected_outputs)
        return self

    def transform(self, data_inputs):
        if self.fit_fn is None:
            return self.fn(data_inputs)
        return self.fn(data_inputs, self.state)


__all__ = ["NumpyRavel", "NumpyConcatenateInnerFeatures", "NumpyTranspose", "NumpyShapePrinter",
           "MultiplyByN", "AddN", "ToNumpy", "FunctionStep", "concatenate_inner_features"]


# Neuraxle's other NumPy steps live in stepline.steps.arrays; importable from here too.
from stepline.steps.arrays import (NumpyAbs, NumpyArgMax, NumpyFFT, NumpyFlattenDatum, NumpyMax,  # noqa: E402
                                   NumpyMean, NumpyMedian, NumpyMin, NumpyReshape, OneHotEncoder, ToList)
