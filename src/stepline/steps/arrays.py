"""More NumPy steps under Neuraxle's names (importable from :mod:`stepline.steps.numpy`).

Reshaping (:class:`NumpyFlattenDatum`, :class:`NumpyReshape`), encoding
(:class:`OneHotEncoder`), reductions over the last axis (:class:`NumpyMean`, …),
:class:`NumpyFFT` and :class:`ToList`.
"""
from __future__ import annotations

import numpy as np

from stepline.core.mixins import NonFittableMixin
from stepline.core.step import BaseStep


class NumpyFlattenDatum(NonFittableMixin, BaseStep):
    """Each row flattened: shape ``(n, a, b, …)`` becomes ``(n, a*b*…)``."""

    def transform(self, data_inputs):
        data = np.asarray(data_inputs)
        return data.reshape(data.shape[0], -1)


class NumpyReshape(NonFittableMixin, BaseStep):
    """Reshapes the data inputs to ``new_shape``."""

    def __init__(self, new_shape, name=None):
        super().__init__(name=name)
        self.new_shape = tuple(new_shape)

    def transform(self, data_inputs):
        return np.reshape(np.asarray(data_inputs), self.new_shape)


class OneHotEncoder(NonFittableMixin, BaseStep):
    """Integer labels to one-hot vectors of ``nb_columns`` on a new last axis.

    Labels outside ``0…nb_columns-1`` (negative, too large) give all-zero rows.
    """

    def __init__(self, nb_columns: int, name=None):
        super().__init__(name=name)
        if isinstance(nb_columns, bool) or not isinstance(nb_columns, (int, np.integer)) or nb_columns < 1:
            raise ValueError(f"OneHotEncoder: nb_columns must be an int >= 1, got {nb_columns!r}")
        self.nb_columns = int(nb_columns)

    def transform(self, data_inputs):
        labels = np.asarray(data_inputs)
        valid = (labels >= 0) & (labels < self.nb_columns)
        safe = np.where(valid, labels, 0).astype(int)
        return (np.eye(self.nb_columns)[safe] * valid[..., None]).astype(float)


class NumpyFFT(NonFittableMixin, BaseStep):
    """The absolute value of the real FFT on ``axis`` (default: the last before the features)."""

    def __init__(self, axis: int = -2, name=None):
        super().__init__(name=name)
        self.axis = axis

    def transform(self, data_inputs):
        return np.abs(np.fft.rfft(np.asarray(data_inputs), axis=self.axis))


class ToList(NonFittableMixin, BaseStep):
    """Arrays (and DataFrames) to nested Python lists."""

    def transform(self, data_inputs):
        if hasattr(data_inputs, "values") and hasattr(data_inputs, "iloc"):
            data_inputs = data_inputs.values
        return data_inputs.tolist() if isinstance(data_inputs, np.ndarray) else list(data_inputs)


class _Reduce(NonFittableMixin, BaseStep):
    _fn = None

    def __init__(self, axis: int = -1, name=None):
        super().__init__(name=name)
        self.axis = axis

    def transform(self, data_inputs):
        return type(self)._fn(np.asarray(data_inputs), axis=self.axis)


class NumpyMean(_Reduce):
    """Mean over ``axis`` (default: last)."""
    _fn = staticmethod(np.mean)


class NumpyMedian(_Reduce):
    """Median over ``axis`` (default: last)."""
    _fn = staticmethod(np.median)


class NumpyMin(_Reduce):
    """Minimum over ``axis`` (default: last)."""
    _fn = staticmethod(np.min)


class NumpyMax(_Reduce):
    """Maximum over ``axis`` (default: last)."""
    _fn = staticmethod(np.max)


class NumpyArgMax(_Reduce):
    """Index of the maximum over ``axis`` (default: last)."""
    _fn = staticmethod(np.argmax)


class NumpyAbs(NonFittableMixin, BaseStep):
    """Absolute values."""

    def transform(self, data_inputs):
        return np.abs(np.asarray(data_inputs))


__all__ = ["NumpyFlattenDatum", "NumpyReshape", "OneHotEncoder", "NumpyFFT", "ToList", "NumpyMean",
           "NumpyMedian", "NumpyMin", "NumpyMax", "NumpyArgMax", "NumpyAbs"]
