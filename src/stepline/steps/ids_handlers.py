"""Steps that see ids, inputs and expected outputs together (Neuraxle's ``Ids…`` handlers).

Importable from :mod:`stepline.steps.output_handlers`.

- :class:`IdsAndInputAndOutputTransformerMixin`: the step's ``transform`` receives
  ``(ids, data_inputs, expected_outputs)`` and returns the same triple.
- :class:`IdsInputAndOutputTransformerWrapper`: the wrapped step receives that triple as
  its data inputs; its output triple replaces the container's fields.
"""
from __future__ import annotations

from stepline.core.composite import MetaStep
from stepline.data_container import DataContainer, as_dact


def _triple(data_container):
    dc = as_dact(data_container)
    return dc.ids, dc.data_inputs, dc.expected_outputs


def _unpack(owner, output, data_container) -> DataContainer:
    if not (isinstance(output, (tuple, list)) and len(output) == 3):
        raise ValueError(f"{owner.name}: the step must return (ids, data_inputs, expected_outputs), "
                         f"got {type(output).__name__}")
    ids, di, eo = output
    if di is not None and ids is not None and len(ids) != len(di):
        raise AssertionError(f"{owner.name}: the step returned {len(ids)} ids for {len(di)} data inputs; "
                             f"return as many ids as data inputs")
    return DataContainer(ids=ids, di=di, eo=eo, sub_data_containers=getattr(data_container, "sub_data_containers", []))


class IdsAndInputAndOutputTransformerMixin:
    """``transform((ids, di, eo))`` returns ``(ids, di, eo)``; the handlers unpack it."""

    def handle_transform(self, data_container, context):
        return _unpack(self, self.transform(_triple(data_container)), data_container)

    def handle_fit_transform(self, data_container, context):
        new_self, output = self.fit_transform(_triple(data_container), None)
        return new_self, _unpack(self, output, data_container)

    def handle_fit(self, data_container, context):
        return self.fit(_triple(data_container), None)


class IdsInputAndOutputTransformerWrapper(MetaStep):
    """The wrapped step works on ``(ids, di, eo)`` triples as its data inputs."""

    def _as_input(self, data_container) -> DataContainer:
        return DataContainer(ids=as_dact(data_container)._ids, di=_triple(data_container), eo=None)

    def handle_fit(self, data_container, context):
        self.wrapped = self.wrapped.handle_fit(self._as_input(data_container), context.push(self))
        return self

    def handle_transform(self, data_container, context):
        out = self.wrapped.handle_transform(self._as_input(data_container), context.push(self))
        return _unpack(self, out.data_inputs, data_container)

    def handle_fit_transform(self, data_container, context):
        self.wrapped, out = self.wrapped.handle_fit_transform(self._as_input(data_container), context.push(self))
        return self, _unpack(self, out.data_inputs, data_container)


__all__ = ["IdsAndInputAndOutputTransformerMixin", "IdsInputAndOutputTransformerWrapper"]
