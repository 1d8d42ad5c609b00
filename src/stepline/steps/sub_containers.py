"""Steps that merge a container's named sub-containers into it (importable from ``steps.data``).

- :class:`InnerConcatenateDataContainer`: the sub-containers' data inputs (and expected
  outputs, when they all have some) are joined to the main ones on the last axis
  (lower-rank ones are broadcast).
- :class:`ZipBatchDataContainer`: each row becomes the tuple of the main row and the
  sub-containers' rows (data inputs and, when they all have some, expected outputs).
Named sub-containers are removed once merged.
"""
from __future__ import annotations

from stepline.core.mixins import HandlerMixin, NonFittableMixin
from stepline.core.step import BaseStep
from stepline.data_container import DataContainer, ZipDataContainer, as_dact, concatenate_broadcast


class _MergeSubContainers(NonFittableMixin, HandlerMixin, BaseStep):
    def __init__(self, sub_data_container_names=None, name=None):
        super().__init__(name=name)
        self.sub_data_container_names = list(sub_data_container_names or [])

    def _split(self, data_container):
        dc = as_dact(data_container)
        names = self.sub_data_container_names or dc.get_sub_data_container_names()
        missing = [n for n in names if n not in dc.get_sub_data_container_names()]
        if missing:
            raise KeyError(f"{self.name}: no sub data container named {missing}; "
                           f"there are {dc.get_sub_data_container_names()}")
        chosen = [sub for n, sub in dc.sub_data_containers if n in names]
        rest = [(n, sub) for n, sub in dc.sub_data_containers if n not in names]
        return dc, chosen, rest

    def handle_fit(self, data_container, context):
        return self

    def handle_fit_transform(self, data_container, context):
        return self, self.handle_transform(data_container, context)


class InnerConcatenateDataContainer(_MergeSubContainers):
    """Joins the named sub-containers' data inputs to the main ones, on the last axis."""

    def handle_transform(self, data_container, context):
        dc, chosen, rest = self._split(data_container)

        def join(main, subs):
            if main is None or any(sub is None for sub in subs):
                return main
            return _like(main, [concatenate_broadcast([main[i]] + [sub[i] for sub in subs]) for i in range(len(main))])
        return DataContainer(ids=dc._ids, di=join(dc.data_inputs, [s.data_inputs for s in chosen]),
                             eo=join(dc.expected_outputs, [s.expected_outputs for s in chosen]),
                             sub_data_containers=rest)


class ZipBatchDataContainer(_MergeSubContainers):
    """Zips the main data inputs with the named sub-containers' ones, row by row."""

    def handle_transform(self, data_container, context):
        dc, chosen, rest = self._split(data_container)
        zipped = ZipDataContainer.create_from(DataContainer(ids=dc._ids, di=dc.data_inputs, eo=dc.expected_outputs),
                                              *chosen, zip_expected_outputs=self._all_have_eo(dc, chosen))
        return DataContainer(ids=dc._ids, di=zipped.data_inputs, eo=zipped.expected_outputs, sub_data_containers=rest)

    @staticmethod
    def _all_have_eo(dc, chosen) -> bool:
        return dc.expected_outputs is not None and all(sub.expected_outputs is not None for sub in chosen)


def _like(original, rows: list):
    import numpy as np
    return np.stack(rows) if isinstance(original, np.ndarray) else rows


__all__ = ["InnerConcatenateDataContainer", "ZipBatchDataContainer"]
