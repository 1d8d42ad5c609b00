"""Select columns, and run a different step on each group of columns.

- :class:`ColumnSelector2D`: keep some columns (an int, a list, a ``range`` or a
  ``slice`` of positions; for a pandas DataFrame, column names too). The index and
  the column names of a DataFrame are kept.
- :class:`ColumnsSelectorND`: the same on the last axis of N-dimensional arrays.
- :class:`ColumnTransformer`: ``ColumnTransformer([(columns, step), …])`` runs each step on
  its columns and joins the outputs side by side (Neuraxle's and scikit-learn's idea).
"""
from __future__ import annotations

import numpy as np

from stepline.core.mixins import NonFittableMixin
from stepline.core.step import BaseStep
from stepline.pipeline import Pipeline
from stepline.steps.numpy import NumpyConcatenateInnerFeatures
from stepline.steps.union import FeatureUnion


def _is_frame(data) -> bool:
    return hasattr(data, "iloc") and hasattr(data, "columns")


def _positions(columns):
    """Columns as what indexing wants: a list for int/range/list, the slice itself for a slice."""
    if isinstance(columns, slice):
        return columns
    if isinstance(columns, (int, np.integer, str)):
        return [columns]
    return list(columns)


class ColumnsSelectorND(NonFittableMixin, BaseStep):
    """Keeps ``columns`` of the last axis (an int keeps its axis: shape ``(n, 1)``)."""

    def __init__(self, columns_selection, n_dimension: int = 2, name=None):
        super().__init__(name=name)
        self.columns_selection = columns_selection
        self.n_dimension = n_dimension

    def transform(self, data_inputs):
        selection = _positions(self.columns_selection)
        if _is_frame(data_inputs):
            return _select_frame(data_inputs, selection, self.name)
        data = np.asarray(data_inputs)
        if data.ndim < 2:
            raise ValueError(f"{self.name}: column selection needs data of 2 or more dimensions, got shape {data.shape}")
        try:
            return data[..., selection]
        except IndexError as e:
            raise IndexError(f"{self.name}: columns {self.columns_selection!r} are out of range for data "
                             f"of shape {data.shape}") from e


def _select_frame(frame, selection, owner: str):
    if isinstance(selection, slice):
        return frame.iloc[:, selection]
    by_name = [c for c in selection if c in frame.columns]
    if len(by_name) == len(selection):
        return frame.loc[:, selection]
    if all(isinstance(c, (int, np.integer)) for c in selection):
        return frame.iloc[:, selection]
    missing = [c for c in selection if c not in frame.columns]
    raise KeyError(f"{owner}: no column named {missing} in the DataFrame; its columns are {list(frame.columns)}")


class ColumnSelector2D(ColumnsSelectorND):
    """Keeps ``columns`` of 2-D data: positions, or names for a DataFrame."""

    def __init__(self, columns_selection, name=None):
        super().__init__(columns_selection, n_dimension=2, name=name)


NumpyColumnSelector2D = ColumnSelector2D
SelectColumns = ColumnSelector2D


class ColumnTransformer(FeatureUnion):
    """Runs each ``step`` on its ``columns`` and joins the outputs on the last axis.

    ``ColumnTransformer([(1, StepA()), ([2, 3], StepB()), (slice(4, None), StepC())])``;
    each branch is named ``"<columns>_<step name>"``. Steps are fitted on their columns
    and the full expected outputs.
    """

    def __init__(self, column_chooser_steps_as_tuple, n_dimension: int = 2, n_jobs=None, joiner=None,
                 name=None, savers=None):
        branches = []
        for columns, step in column_chooser_steps_as_tuple:
            branch_name = f"{columns}_{step.name}"
            branches.append((branch_name, Pipeline([ColumnsSelectorND(columns, n_dimension=n_dimension), step])))
        super().__init__(branches, joiner=joiner if joiner is not None else NumpyConcatenateInnerFeatures(),
                         n_jobs=n_jobs, name=name, savers=savers)
        self.n_dimension = n_dimension


__all__ = ["ColumnSelector2D", "NumpyColumnSelector2D", "ColumnsSelectorND", "ColumnTransformer", "SelectColumns"]
