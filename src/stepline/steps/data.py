"""Steps that reorder, repeat or split the data they pass on.

- :class:`DataShuffler`: shuffles data inputs and expected outputs together.
- :class:`EpochRepeater`: fits the wrapped step for several epochs.
- :class:`MiniBatchSequentialPipeline`: a pipeline run on minibatches.
"""
from __future__ import annotations

import itertools

import numpy as np

from stepline.core.composite import MetaStep
from stepline.core.data import DataContainer
from stepline.core.mixins import HandlerMixin
from stepline.core.step import BaseStep
from stepline.pipeline import Pipeline


# ------------------------------------------------------------------ helpers
def _take(values, indices):
    """``values`` at ``indices`` (an integer array): arrays, lists, tuples, pandas objects (index kept)."""
    if values is None:
        return None
    if _is_pandas(values):
        return values.iloc[indices]
    if isinstance(values, np.ndarray):
        return values[indices]
    if isinstance(values, (list, tuple, range)):
        return [values[i] for i in indices]
    if hasattr(values, "take"):  # pandas extension arrays (an index's values), xarray…
        return values.take(indices)
    raise TypeError(f"cannot index data of type {type(values).__name__}; give arrays or lists")


def _is_pandas(values) -> bool:
    return hasattr(values, "iloc") and hasattr(values, "index")


def _slice(values, start: int, stop: int):
    if values is None:
        return None
    return values.iloc[start:stop] if _is_pandas(values) else values[start:stop]


def _concat(parts: list):
    """Join minibatch results: arrays with ``np.concatenate``, lists by concatenation."""
    first = parts[0]
    if first is None:
        return None
    if len(parts) == 1:
        return first
    if _is_pandas(first):
        import pandas as pd
        return pd.concat(parts)
    if isinstance(first, np.ndarray):
        return np.concatenate(parts)
    if isinstance(first, (list, tuple)):
        return list(itertools.chain.from_iterable(parts))
    return np.concatenate(parts)


def _check_positive_int(owner: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}: {name} must be an int >= 1, got {value!r}")
    return int(value)


# ------------------------------------------------------------------ shuffling
class DataShuffler(HandlerMixin, BaseStep):
    """Shuffles data inputs, expected outputs (and ids, when set) with one permutation.

    It shuffles while fitting (``fit_transform``), that is, training data; ``transform``
    passes data through, so predictions keep the order of their inputs. With a ``seed``
    the order is reproducible; with ``increment_seed_after_each_fit`` the seed grows by
    one after each shuffle, so each epoch gets another (still reproducible) order.
    ``seed=None`` draws a fresh order every time.
    """

    def __init__(self, seed=None, increment_seed_after_each_fit: bool = True, name=None):
        super().__init__(name=name)
        self.seed = seed
        self.increment_seed_after_each_fit = increment_seed_after_each_fit

    def handle_fit(self, data_container, context):
        return self

    def handle_transform(self, data_container, context):
        return data_container

    def handle_fit_transform(self, data_container, context):
        return self, self._shuffle(data_container)

    def _shuffle(self, data_container):
        n = len(data_container)
        expected = data_container.expected_outputs
        if expected is not None and len(expected) != n:
            raise ValueError(f"{self.name}: {n} data inputs but {len(expected)} expected outputs; "
                             "they must pair up to be shuffled together")
        indices = np.random.default_rng(self.seed).permutation(n)
        data_container.data_inputs = _take(data_container.data_inputs, indices)
        data_container.expected_outputs = _take(expected, indices)
        data_container.ids = _take(data_container.ids, indices)
        if self.seed is not None and self.increment_seed_after_each_fit:
            self.seed += 1
            self._invalidated = True
        return data_container


# ------------------------------------------------------------------ epochs
class EpochRepeater(MetaStep):
    """Fits the wrapped step ``epochs`` times on the same data (hyperparameter ``epochs``).

    Meant for steps that learn incrementally (a network, ``partial_fit``) and for
    pipelines with a :class:`DataShuffler`, which reshuffles each epoch. ``fit_transform``
    fits ``epochs - 1`` times, then fit-transforms once; ``transform`` runs the step once.
    """

    def __init__(self, wrapped, epochs: int = 1, name=None, savers=None):
        epochs = _check_positive_int("EpochRepeater", "epochs", epochs)
        super().__init__(wrapped, hyperparams={"epochs": epochs}, name=name, savers=savers)

    def _epochs(self) -> int:
        return _check_positive_int(self.name, "epochs", self.hyperparams["epochs"])

    def handle_fit(self, data_container, context):
        context = context.push(self)
        for _ in range(self._epochs()):
            self.wrapped = self.wrapped.handle_fit(data_container.copy(), context)
        return self

    def handle_fit_transform(self, data_container, context):
        context = context.push(self)
        for _ in range(self._epochs() - 1):
            self.wrapped = self.wrapped.handle_fit(data_container.copy(), context)
        self.wrapped, data_container = self.wrapped.handle_fit_transform(data_container, context)
        return self, data_container


# ------------------------------------------------------------------ minibatches
class MiniBatchSequentialPipeline(Pipeline):
    """A pipeline that runs on minibatches of ``batch_size`` rows and joins the results.

    Each batch goes through all the steps in order (fitting them on it when fitting)
    before the next batch starts, so every step is fitted once per batch: use steps that
    learn incrementally. The outputs (and expected outputs) of the batches are joined:
    ``np.concatenate`` for arrays, concatenation for lists. With
    ``keep_incomplete_batch=False`` a last batch smaller than ``batch_size`` is dropped
    (its rows are then missing from the outputs). ``batch_size`` is a hyperparameter.
    """

    def __init__(self, steps=(), batch_size: int = 32, keep_incomplete_batch: bool = True,
                 cache_folder=None, hyperparams=None, hyperparams_space=None, name=None, savers=None):
        batch_size = _check_positive_int("MiniBatchSequentialPipeline", "batch_size", batch_size)
        hyperparams = {**(hyperparams or {}), "batch_size": batch_size}
        super().__init__(steps, cache_folder=cache_folder, hyperparams=hyperparams,
                         hyperparams_space=hyperparams_space, name=name, savers=savers)
        self.keep_incomplete_batch = keep_incomplete_batch

    def _batches(self, data_container):
        size = _check_positive_int(self.name, "batch_size", self.hyperparams["batch_size"])
        n = len(data_container)
        stop = n if self.keep_incomplete_batch else n - n % size
        for start in range(0, stop, size):
            end = min(start + size, n)
            yield DataContainer(_slice(data_container.data_inputs, start, end),
                                _slice(data_container.expected_outputs, start, end),
                                _slice(data_container.ids, start, end))

    def _join(self, containers, data_container):
        if not containers:  # no complete batch: nothing comes out
            empty = _slice(data_container.data_inputs, 0, 0)
            return DataContainer(empty, _slice(data_container.expected_outputs, 0, 0))
        return DataContainer(_concat([c.data_inputs for c in containers]),
                             _concat([c.expected_outputs for c in containers]),
                             _concat([c.ids for c in containers]))

    def handle_fit(self, data_container, context):
        for batch in self._batches(data_container):
            super().handle_fit(batch, context)
        return self

    def handle_transform(self, data_container, context):
        outputs = [super(MiniBatchSequentialPipeline, self).handle_transform(batch, context)
                   for batch in self._batches(data_container)]
        return self._join(outputs, data_container)

    def handle_fit_transform(self, data_container, context):
        outputs = []
        for batch in self._batches(data_container):
            _, batch = super().handle_fit_transform(batch, context)
            outputs.append(batch)
        return self, self._join(outputs, data_container)


__all__ = ["DataShuffler", "EpochRepeater", "MiniBatchSequentialPipeline"]


# Steps that merge sub-containers live in stepline.steps.sub_containers; importable from here too.
from stepline.steps.sub_containers import InnerConcatenateDataContainer, ZipBatchDataContainer  # noqa: E402
