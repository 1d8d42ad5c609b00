"""Neuraxle's data container API (``neuraxle.data_container``) over stepline's container.

``DataContainer`` (alias ``DACT``) takes Neuraxle's argument order
``(data_inputs, ids, expected_outputs, sub_data_containers, *, di, eo)`` and adds the
short names ``di``/``eo``, default ``ids`` (a DataFrame's index, else ``0…n-1``),
iteration over ``(id, di, eo)`` triples, :meth:`~DataContainer.minibatches`, named
sub-containers and the list conversions. It *is* a stepline container, so every step's
handlers take it.
"""
from __future__ import annotations

import copy as _copy
from typing import Any, Callable, Iterable, Iterator, List, TypeVar

import numpy as np

from stepline.core.data import DataContainer as _CoreDataContainer

IDT = TypeVar("IDT")
DIT = TypeVar("DIT")
EOT = TypeVar("EOT")
ARG_X_INPUTTED = DIT
ARG_Y_EXPECTED = EOT
ARG_Y_PREDICTD = DIT


class StripAbsentValues:
    """Give it as a minibatch default value: the last, incomplete batch is not padded."""


def _has_len(value) -> bool:
    return hasattr(value, "__len__")


def _is_frame(value) -> bool:
    return hasattr(value, "index") and hasattr(getattr(value, "index"), "values") and hasattr(value, "iloc")


def _rows(values, start: int, stop: int):
    """``values[start:stop]`` by position (``iloc`` for pandas objects)."""
    if values is None:
        return None
    if _is_frame(values):
        return values.iloc[start:stop]
    return values[start:stop]


class DataContainer(_CoreDataContainer):
    """Ids, data inputs (``di``) and expected outputs (``eo``) that travel together.

    ``DACT(di=X, eo=y)``; ``ids`` default to the DataFrame index or ``range(len(di))``,
    ``eo`` to ``[None] * len(di)`` when not given.
    """

    __slots__ = ("_ids", "sub_data_containers", "__dict__")

    def __init__(self, data_inputs=None, ids=None, expected_outputs=None, sub_data_containers=None,
                 *, di=None, eo=None):
        self._ids = ids
        self.data_inputs = data_inputs if di is None else di
        self.expected_outputs = expected_outputs if eo is None else eo
        self.sub_data_containers = list(sub_data_containers or [])

    # ------------------------------------------------------------ fields
    @property
    def ids(self):
        """The ids given, else the DataFrame's index, else ``[0, …, n-1]``."""
        if self._ids is not None:
            return self._ids
        if _is_frame(self.data_inputs):
            return self.data_inputs.index.values
        if _has_len(self.data_inputs):
            return list(range(len(self.data_inputs)))
        if _has_len(self.expected_outputs):
            return list(range(len(self.expected_outputs)))
        return None

    @ids.setter
    def ids(self, ids):
        self._ids = ids

    @property
    def di(self):
        return self.data_inputs

    @di.setter
    def di(self, value):
        self.data_inputs = value

    @property
    def eo(self):
        """The expected outputs, or ``[None] * len(di)`` when there are none."""
        if self.expected_outputs is None and _has_len(self.data_inputs):
            return [None] * len(self.data_inputs)
        return self.expected_outputs

    @eo.setter
    def eo(self, value):
        self.expected_outputs = value

    @property
    def sdact(self) -> list:
        return self.sub_data_containers

    def get_ids(self):
        return self.ids

    # ------------------------------------------------------------ builders
    @staticmethod
    def from_di(data_inputs) -> "DataContainer":
        return DataContainer(data_inputs=data_inputs)

    @staticmethod
    def from_eo(expected_outputs) -> "DataContainer":
        return DataContainer(expected_outputs=expected_outputs)

    def without_di(self) -> "DataContainer":
        return DataContainer(ids=self._ids, eo=self.expected_outputs, sub_data_containers=self.sub_data_containers)

    def without_eo(self) -> "DataContainer":
        return DataContainer(ids=self._ids, di=self.data_inputs, sub_data_containers=self.sub_data_containers)

    def with_di(self, di) -> "DataContainer":
        return DataContainer(ids=self._ids, di=di, eo=self.expected_outputs,
                             sub_data_containers=self.sub_data_containers)

    def with_eo(self, eo) -> "DataContainer":
        return DataContainer(ids=self._ids, di=self.data_inputs, eo=eo, sub_data_containers=self.sub_data_containers)

    def with_ids(self, ids) -> "DataContainer":
        return DataContainer(ids=ids, di=self.data_inputs, eo=self.expected_outputs,
                             sub_data_containers=self.sub_data_containers)

    def set_ids(self, ids) -> "DataContainer":
        self._ids = ids
        return self

    def set_data_inputs(self, data_inputs) -> "DataContainer":
        self.data_inputs = data_inputs
        return self

    def set_expected_outputs(self, expected_outputs) -> "DataContainer":
        self.expected_outputs = expected_outputs
        return self

    def get_ids_summary(self) -> str:
        """One id standing for all of this container's ids."""
        return ",".join(str(i) for i in (self.ids if self.ids is not None else []))

    # ------------------------------------------------------------ sub-containers
    def add_sub_data_container(self, name: str, data_container: "DataContainer") -> "DataContainer":
        self.sub_data_containers.append((name, data_container))
        return self

    def get_sub_data_container_names(self) -> List[str]:
        return [name for name, _ in self.sub_data_containers]

    def set_sub_data_containers(self, sub_data_containers) -> "DataContainer":
        self.sub_data_containers = list(sub_data_containers)
        return self

    # ------------------------------------------------------------ batches
    def minibatches(self, batch_size: int, keep_incomplete_batch: bool = True,
                    default_value_data_inputs=None, default_value_expected_outputs=None
                    ) -> Iterable["DataContainer"]:
        """Yield consecutive batches of ``batch_size`` rows (slices: lazy collections stay lazy).

        The last, incomplete batch is dropped when ``keep_incomplete_batch`` is false;
        otherwise it is padded with the default values, or left short when they are
        :class:`StripAbsentValues` (or ``None`` for both).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"minibatches: batch_size must be an int >= 1, got {batch_size!r}")
        n = len(self)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            batch = DataContainer(ids=_rows(self.ids, start, stop), di=_rows(self.data_inputs, start, stop),
                                  eo=_rows(self.expected_outputs, start, stop),
                                  sub_data_containers=self.sub_data_containers)
            if stop - start < batch_size:
                if not keep_incomplete_batch:
                    return
                batch = _pad(batch, batch_size, default_value_data_inputs, default_value_expected_outputs)
            yield batch

    def get_n_batches(self, batch_size: int, keep_incomplete_batch: bool = True) -> int:
        full, rest = divmod(len(self), batch_size)
        return full + (1 if rest and keep_incomplete_batch else 0)

    # ------------------------------------------------------------ container protocol
    def copy(self) -> "DataContainer":
        """A shallow copy (same data objects; sub-containers copied)."""
        new = _copy.copy(self)
        new.sub_data_containers = [(name, dc.copy()) for name, dc in self.sub_data_containers]
        return new

    def __contains__(self, item) -> bool:
        if isinstance(item, str):
            return item in self.get_sub_data_container_names()
        return item in list(self.ids)

    def __getitem__(self, item):
        """A sub-container by name, or the ``(id, di, eo)`` triple at a position."""
        if isinstance(item, str):
            for name, dc in self.sub_data_containers:
                if name == item:
                    return dc
            raise KeyError(f"no sub data container named {item!r}; there are {self.get_sub_data_container_names()}")
        ids = self.ids
        return (None if ids is None else ids[item]), self.data_inputs[item], self.eo[item]

    def __iter__(self) -> Iterator[tuple]:
        if self.data_inputs is None:
            return iter(())
        return zip(self.ids, self.di, self.eo)

    def __len__(self) -> int:
        if self.data_inputs is not None:
            return len(self.data_inputs)
        return len(self.expected_outputs) if _has_len(self.expected_outputs) else 0

    def unpack(self) -> tuple:
        return self.ids, self.di, self.eo

    # ------------------------------------------------------------ conversions
    def apply_conversion_func(self, conversion_function: Callable[[Any], Any]) -> "DataContainer":
        """Convert ids, data inputs and expected outputs in place (``None`` stays ``None``)."""
        if self._ids is not None:
            self._ids = conversion_function(self._ids)
        if self.data_inputs is not None:
            self.data_inputs = conversion_function(self.data_inputs)
        if self.expected_outputs is not None:
            self.expected_outputs = conversion_function(self.expected_outputs)
        return self

    def tolist(self) -> "DataContainer":
        def to_list(value):
            if hasattr(value, "values") and hasattr(value, "iloc"):
                value = value.values
            return value.tolist() if isinstance(value, np.ndarray) else value
        return self.apply_conversion_func(to_list)

    def tolistshallow(self) -> "DataContainer":
        return self.apply_conversion_func(list)

    def to_numpy(self) -> "DataContainer":
        return self.apply_conversion_func(np.array)

    def __eq__(self, other) -> bool:
        if not isinstance(other, _CoreDataContainer):
            return NotImplemented
        return all(_same(a, b) for a, b in ((self.ids, _ids_of(other)), (self.data_inputs, other.data_inputs),
                                             (self.expected_outputs, other.expected_outputs)))

    __hash__ = None

    def __repr__(self) -> str:
        def short(x):
            shape = getattr(x, "shape", None)
            if shape is not None:
                return f"{type(x).__name__}{tuple(shape)}"
            text = repr(x)
            return text if len(text) < 80 else text[:77] + "..."
        return (f"{type(self).__name__}(ids={short(self.ids)}, di={short(self.data_inputs)}, "
                f"eo={short(self.expected_outputs)})")


DACT = DataContainer
TrainDACT = DataContainer
PredsDACT = DataContainer


def _ids_of(container):
    return container.ids if isinstance(container, DataContainer) else container.get_ids()


def _same(a, b) -> bool:
    try:
        return bool(np.array_equal(np.asarray(a, dtype=object), np.asarray(b, dtype=object)))
    except Exception:  # noqa: BLE001 - ragged or exotic data: fall back to ==
        return a == b


def as_dact(container) -> DataContainer:
    """``container`` as a Neuraxle-style :class:`DataContainer` (same data objects)."""
    if isinstance(container, DataContainer):
        return container
    return DataContainer(ids=container.ids, di=container.data_inputs, eo=container.expected_outputs)


def _pad(batch: DataContainer, size: int, default_di, default_eo) -> DataContainer:
    strip_di = isinstance(default_di, StripAbsentValues)
    strip_eo = isinstance(default_eo, StripAbsentValues)
    if strip_di and strip_eo:
        return batch
    pad_di, pad_eo = not strip_di, not strip_eo

    def padded(values, default):
        if values is None:
            return None
        out = list(values)
        out.extend(_copy.copy(default) for _ in range(size - len(out)))
        return out
    return DataContainer(ids=padded(batch.ids, None) if pad_di and pad_eo else batch.ids,
                         di=padded(batch.data_inputs, default_di) if pad_di else batch.data_inputs,
                         eo=padded(batch.expected_outputs, default_eo) if pad_eo else batch.expected_outputs)


class ExpandedDataContainer(DataContainer):
    """A container of one row that holds a whole container (``shape`` → ``[1, *shape]``)."""

    @staticmethod
    def create_from(data_container: DataContainer) -> "ExpandedDataContainer":
        dc = as_dact(data_container)
        expanded = ExpandedDataContainer(
            ids=[dc.get_ids_summary()],
            di=[dc.data_inputs] if dc.data_inputs is not None else None,
            eo=[dc.expected_outputs] if dc.expected_outputs is not None else None)
        expanded._old_ids = dc._ids
        return expanded

    def reduce_dim(self) -> DataContainer:
        if self.data_inputs is None or len(self.data_inputs) != 1:
            raise ValueError("reduce_dim needs a container of exactly one row, made by "
                             "ExpandedDataContainer.create_from")
        return DataContainer(ids=getattr(self, "_old_ids", None), di=self.data_inputs[0],
                             eo=self.expected_outputs[0] if self.expected_outputs is not None else None,
                             sub_data_containers=self.sub_data_containers)


class ZipDataContainer(DataContainer):
    """Data inputs of several containers zipped row by row (expected outputs of the first)."""

    @staticmethod
    def create_from(data_container, *other_data_containers, zip_expected_outputs: bool = False
                    ) -> "ZipDataContainer":
        containers = [as_dact(c) for c in (data_container, *other_data_containers)]
        first = containers[0]
        too_short = [i for i, c in enumerate(containers) if len(c) < len(first)]
        if too_short:
            raise ValueError(f"ZipDataContainer: containers {too_short} are shorter than the first ({len(first)} rows)")
        data_inputs = tuple(zip(*(c.di for c in containers)))
        expected = tuple(zip(*(c.eo for c in containers))) if zip_expected_outputs else first.expected_outputs
        return ZipDataContainer(ids=first._ids, di=data_inputs, eo=expected,
                                sub_data_containers=first.sub_data_containers)

    def concatenate_inner_features(self) -> "ZipDataContainer":
        """Join each row's arrays along their last axis (broadcasting lower-rank ones)."""
        self.data_inputs = [concatenate_broadcast(list(row)) for row in self.data_inputs]
        return self


def concatenate_broadcast(arrays: list) -> np.ndarray:
    """Concatenate on the last axis; arrays of lower rank get trailing axes and are broadcast."""
    arrays = [np.asarray(a) for a in arrays]
    ndim = max(a.ndim for a in arrays)
    arrays = [a.reshape(a.shape + (1,) * (ndim - a.ndim)) for a in arrays]
    leading = [max(a.shape[d] for a in arrays) for d in range(ndim - 1)]
    arrays = [np.broadcast_to(a, tuple(leading) + (a.shape[-1],)) for a in arrays]
    return np.concatenate(arrays, axis=-1)


class ListDataContainer(DataContainer):
    """A container of lists that grows: :meth:`append`, :meth:`extend`."""

    def __init__(self, data_inputs=None, ids=None, expected_outputs=None, sub_data_containers=None,
                 *, di=None, eo=None):
        super().__init__(data_inputs, ids, expected_outputs, sub_data_containers, di=di, eo=eo)
        self.tolistshallow()

    @staticmethod
    def empty(original_data_container=None) -> "ListDataContainer":
        subs = [] if original_data_container is None else getattr(original_data_container, "sub_data_containers", [])
        return ListDataContainer([], [], [], sub_data_containers=subs)

    def _lists(self) -> None:
        if self._ids is None:
            self._ids = list(self.ids or [])
        if self.expected_outputs is None:
            self.expected_outputs = list(self.eo or [])

    def append(self, _id, data_input, expected_output) -> "ListDataContainer":
        self._lists()
        self._ids.append(_id)
        self.data_inputs.append(data_input)
        self.expected_outputs.append(expected_output)
        return self

    def append_data_container_in_data_inputs(self, other) -> "ListDataContainer":
        if not isinstance(other, _CoreDataContainer):
            raise ValueError(f"expected a DataContainer, got {type(other).__name__}: {other!r}")
        self._lists()
        self.data_inputs.append(other)
        self._ids.append(as_dact(other).get_ids_summary())
        return self

    def append_data_container(self, other) -> "ListDataContainer":
        self._lists()
        other = as_dact(other)
        self._ids.append(other._ids)
        self.data_inputs.append(other.data_inputs)
        self.expected_outputs.append(other.expected_outputs)
        return self

    def extend(self, other) -> "ListDataContainer":
        """Append every row of ``other`` (its ids, data inputs and expected outputs)."""
        other = as_dact(other)
        if self._ids is not None:
            self._ids.extend(list(other.ids))
        if self.data_inputs is not None and other.data_inputs is not None:
            self.data_inputs.extend(list(other.data_inputs))
        if self.expected_outputs is not None and other.expected_outputs is not None:
            self.expected_outputs.extend(list(other.expected_outputs))
        return self


__all__ = ["DataContainer", "DACT", "TrainDACT", "PredsDACT", "ZipDataContainer", "ListDataContainer",
           "ExpandedDataContainer", "StripAbsentValues", "as_dact", "IDT", "DIT", "EOT",
           "ARG_X_INPUTTED", "ARG_Y_EXPECTED", "ARG_Y_PREDICTD"]
