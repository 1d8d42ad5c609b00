"""Minibatch pipelines with barriers (Neuraxle's ``Joiner``), importable from ``stepline.pipeline``.

``MiniBatchSequentialPipeline([a, b, Joiner(batch_size=10), c, Joiner(batch_size=5)])``:
the steps before each :class:`Joiner` run batch by batch with the joiner's batch size,
then the batches are joined and the next segment starts. With no joiner, the pipeline's
own ``batch_size`` applies. Batches are row slices (``iloc`` for pandas), so a DataFrame
keeps its index and columns; results are joined with ``pandas.concat`` for pandas objects.
"""
from __future__ import annotations

import itertools

import numpy as np

from stepline.core.mixins import NonFittableMixin
from stepline.core.step import BaseStep
from stepline.data_container import DataContainer, StripAbsentValues, as_dact
from stepline.pipeline import Pipeline
from stepline.steps.data import MiniBatchSequentialPipeline as _PlainMiniBatchPipeline


class Joiner(NonFittableMixin, BaseStep):
    """A barrier in a :class:`MiniBatchSequentialPipeline`: the steps before it run on batches of
    ``batch_size`` rows, joined here. The last, incomplete batch is dropped unless
    ``keep_incomplete_batch``; it is padded with the default values unless they are
    :class:`StripAbsentValues` (a DataFrame is never padded)."""

    def __init__(self, batch_size: int, keep_incomplete_batch: bool = True, default_value_data_inputs=None,
                 default_value_expected_outputs=None, name=None):
        super().__init__(name=name)
        self.batch_size = batch_size
        self.keep_incomplete_batch = keep_incomplete_batch
        self.default_value_data_inputs = default_value_data_inputs
        self.default_value_expected_outputs = default_value_expected_outputs

    def transform(self, data_inputs):
        return data_inputs


def join_values(parts: list):
    """Join batch results: pandas with ``concat``, arrays with ``np.concatenate``, lists by chaining."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    first = parts[0]
    if hasattr(first, "iloc"):
        import pandas as pd
        return pd.concat(parts)
    if isinstance(first, np.ndarray):
        return np.concatenate(parts)
    return list(itertools.chain.from_iterable(parts))


def _first(values, n: int):
    """The first ``n`` rows: the padding of a last batch is not data, it never comes out."""
    if values is None or len(values) <= n:
        return values
    return values.iloc[:n] if hasattr(values, "iloc") else values[:n]


class MiniBatchSequentialPipeline(_PlainMiniBatchPipeline):
    """A pipeline run on minibatches; :class:`Joiner` steps split it into segments (see the module)."""

    def __init__(self, steps=(), batch_size=None, keep_incomplete_batch: bool = True,
                 default_value_data_inputs=None, default_value_expected_outputs=None, cache_folder=None,
                 hyperparams=None, hyperparams_space=None, name=None, savers=None):
        super().__init__(steps, batch_size=batch_size or 32, keep_incomplete_batch=keep_incomplete_batch,
                         cache_folder=cache_folder, hyperparams=hyperparams, hyperparams_space=hyperparams_space,
                         name=name, savers=savers)
        if batch_size is None and not any(isinstance(s, Joiner) for s in self.steps_as_tuple):
            raise ValueError("MiniBatchSequentialPipeline needs a batch_size or at least one Joiner step")
        self.default_value_data_inputs = default_value_data_inputs
        self.default_value_expected_outputs = default_value_expected_outputs
        self.batch_size_given = batch_size is not None

    def set_batch_size(self, batch_size: int) -> "MiniBatchSequentialPipeline":
        """Change the batch size (of the pipeline and of every :class:`Joiner`); returns self."""
        self.hyperparams["batch_size"] = batch_size
        for step in self.steps_as_tuple:
            if isinstance(step, Joiner):
                step.batch_size = batch_size
        self._invalidated = True
        return self

    def _segments(self):
        segment = []
        for step in self.steps_as_tuple:
            if isinstance(step, Joiner):
                yield segment, step
                segment = []
            else:
                segment.append(step)
        if segment:
            yield segment, None

    def _batches_for(self, data_container, joiner):
        if joiner is None and not self.__dict__.get("batch_size_given", True):
            return [as_dact(data_container)]  # steps after the last Joiner see all the rows at once
        if joiner is None:
            size = self.hyperparams["batch_size"]
            keep, d_di, d_eo = self.keep_incomplete_batch, self.default_value_data_inputs, \
                self.default_value_expected_outputs
        else:
            size, keep = joiner.batch_size, joiner.keep_incomplete_batch
            d_di, d_eo = joiner.default_value_data_inputs, joiner.default_value_expected_outputs
        if hasattr(as_dact(data_container).data_inputs, "iloc"):
            d_di = d_eo = StripAbsentValues()  # a DataFrame's last batch stays short: no rows invented
        return as_dact(data_container).minibatches(size, keep, d_di, d_eo)

    def _run(self, data_container, context, fit: bool):
        context = context.push(self)
        dc = as_dact(data_container)
        fitted = {}
        for segment, joiner in self._segments():
            outs = []
            for batch in self._batches_for(dc, joiner):
                for step in segment:
                    if fit:
                        new, batch = step.handle_fit_transform(batch, context)
                        fitted[id(step)] = new
                    else:
                        batch = step.handle_transform(batch, context)
                outs.append(batch)
            n = len(dc)
            dc = DataContainer(ids=_first(join_values([o._ids if isinstance(o, DataContainer) else o.ids
                                                       for o in outs]), n),
                               di=_first(join_values([o.data_inputs for o in outs]), n),
                               eo=_first(join_values([o.expected_outputs for o in outs]), n))
        if fit:
            self._keep_fitted([fitted.get(id(s), s) for s in self.steps_as_tuple])
        return dc

    def handle_fit(self, data_container, context):
        self._run(data_container, context, fit=True)
        return self

    def handle_transform(self, data_container, context):
        return self._run(data_container, context, fit=False)

    def handle_fit_transform(self, data_container, context):
        return self, self._run(data_container, context, fit=True)


__all__ = ["Joiner", "MiniBatchSequentialPipeline", "Pipeline"]
