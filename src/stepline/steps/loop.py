"""Run a step on each row of the data (Neuraxle's ``steps.loop``).

- :class:`ForEach`: the same step is fitted and applied on each data input in turn.
- :class:`StepClonerForEachDataInput`: one copy of the step per data input.
- :class:`FlattenForEach`: flatten the first two levels of the data, run the step once
  on the flat data, then (by default) restore the nesting.
"""
from __future__ import annotations

import copy

import numpy as np

from stepline.core.composite import MetaStep
from stepline.data_container import DataContainer, as_dact


def _rows(dc):
    dc = as_dact(dc)
    return list(zip(dc.di, dc.eo))


class ForEach(MetaStep):
    """Fit and transform the wrapped step on each data input (and its expected output) in turn."""

    def handle_fit(self, data_container, context):
        context = context.push(self)
        for di, eo in _rows(data_container):
            self.wrapped = self.wrapped.handle_fit(DataContainer(di=di, eo=eo), context)
        return self

    def handle_transform(self, data_container, context):
        context = context.push(self)
        outs = [self.wrapped.handle_transform(DataContainer(di=di, eo=eo), context) for di, eo in _rows(data_container)]
        return _joined(data_container, outs)

    def handle_fit_transform(self, data_container, context):
        context = context.push(self)
        outs = []
        for di, eo in _rows(data_container):
            self.wrapped, out = self.wrapped.handle_fit_transform(DataContainer(di=di, eo=eo), context)
            outs.append(out)
        return self, _joined(data_container, outs)


def _joined(data_container, outs) -> DataContainer:
    return DataContainer(ids=as_dact(data_container)._ids, di=[o.data_inputs for o in outs],
                         eo=[o.expected_outputs for o in outs])


class StepClonerForEachDataInput(MetaStep):
    """Fit one copy of the wrapped step per data input; row ``i`` always goes to copy ``i``.

    ``steps_as_tuple`` lists the copies as ``(name, step)`` pairs, named
    ``"<wrapped name>[i]"``; they are saved and loaded with the wrapper.
    """

    def __init__(self, wrapped, copy_op=copy.deepcopy, name=None, savers=None):
        super().__init__(wrapped, name=name, savers=savers)
        self.copy_op = copy_op
        self.steps_as_tuple = []

    def get_children(self) -> tuple:
        return (self.wrapped,) + tuple(step for _, step in self.steps_as_tuple)

    def _set_children(self, children: list) -> None:
        self.wrapped = children[0]
        self.steps_as_tuple = [(step.name, step) for step in children[1:]]

    def _child_by_name(self, name: str):
        return next((s for s in self.get_children() if s.name == name), None)

    def _copies_for(self, n: int) -> list:
        if len(self.steps_as_tuple) != n:
            copies = []
            for i in range(n):
                clone = self.copy_op(self.wrapped)
                clone.name = f"{self.wrapped.name}[{i}]"
                copies.append((clone.name, clone))
            self.steps_as_tuple = copies
        return [step for _, step in self.steps_as_tuple]

    def handle_fit(self, data_container, context):
        self.handle_fit_transform(data_container, context)
        return self

    def handle_fit_transform(self, data_container, context):
        context = context.push(self)
        rows = _rows(data_container)
        self.steps_as_tuple = []
        fitted, outs = [], []
        for step, (di, eo) in zip(self._copies_for(len(rows)), rows):
            step, out = step.handle_fit_transform(DataContainer(di=di, eo=eo), context)
            fitted.append((step.name, step))
            outs.append(out)
        self.steps_as_tuple = fitted
        return self, _joined(data_container, outs)

    def handle_transform(self, data_container, context):
        context = context.push(self)
        rows = _rows(data_container)
        outs = [step.handle_transform(DataContainer(di=di, eo=eo), context)
                for step, (di, eo) in zip(self._copies_for(len(rows)), rows)]
        return _joined(data_container, outs)

    def inverse_transform(self, processed_outputs):
        steps = self._copies_for(len(processed_outputs))
        return [step.inverse_transform(row) for step, row in zip(steps, processed_outputs)]

    def __getitem__(self, item):
        return self.steps_as_tuple[item][1] if isinstance(item, int) else dict(self.steps_as_tuple)[item]

    def __len__(self) -> int:
        return len(self.steps_as_tuple)

    def __iter__(self):
        return iter(self.keys())

    def keys(self) -> list:
        return [name for name, _ in self.steps_as_tuple]

    def values(self) -> list:
        return [step for _, step in self.steps_as_tuple]

    def items(self) -> list:
        return list(self.steps_as_tuple)


class FlattenForEach(MetaStep):
    """Flatten the first two levels of the data inputs (and expected outputs), run the step once.

    With ``then_unflatten=True`` (default) the outputs get the original nesting back;
    arrays and ragged lists both work.
    """

    def __init__(self, wrapped, then_unflatten: bool = True, name=None, savers=None):
        super().__init__(wrapped, name=name, savers=savers)
        self.then_unflatten = then_unflatten

    def _flat(self, data_container):
        dc = as_dact(data_container)
        di, lengths = _flatten(dc.data_inputs)
        eo, _ = _flatten(dc.expected_outputs)
        return DataContainer(di=di, eo=eo), lengths

    def _restored(self, data_container, out, lengths):
        if not self.then_unflatten:
            return DataContainer(ids=as_dact(data_container)._ids, di=out.data_inputs, eo=out.expected_outputs)
        return DataContainer(ids=as_dact(data_container)._ids, di=_unflatten(out.data_inputs, lengths),
                             eo=_unflatten(out.expected_outputs, lengths))

    def handle_fit(self, data_container, context):
        flat, _ = self._flat(data_container)
        self.wrapped = self.wrapped.handle_fit(flat, context.push(self))
        return self

    def handle_transform(self, data_container, context):
        flat, lengths = self._flat(data_container)
        return self._restored(data_container, self.wrapped.handle_transform(flat, context.push(self)), lengths)

    def handle_fit_transform(self, data_container, context):
        flat, lengths = self._flat(data_container)
        self.wrapped, out = self.wrapped.handle_fit_transform(flat, context.push(self))
        return self, self._restored(data_container, out, lengths)


def _flatten(data):
    if data is None:
        return None, None
    if isinstance(data, np.ndarray) and data.ndim >= 2:
        return data.reshape((-1,) + data.shape[2:]), ("array", data.shape[:2])
    rows = list(data)
    lengths = [len(row) for row in rows]
    return [item for row in rows for item in row], ("list", lengths)


def _unflatten(data, lengths):
    if data is None or lengths is None:
        return data
    kind, spec = lengths
    if kind == "array":
        return np.asarray(data).reshape(tuple(spec) + np.asarray(data).shape[1:])
    out, start = [], 0
    for n in spec:
        out.append(list(data[start:start + n]))
        start += n
    return out


__all__ = ["ForEach", "StepClonerForEachDataInput", "FlattenForEach"]
