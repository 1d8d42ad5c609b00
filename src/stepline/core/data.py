"""The data container threaded through a pipeline's handler methods."""
from __future__ import annotations


class DataContainer:
    """Holds ``data_inputs``, ``expected_outputs`` and optional ``ids`` for one call.

    Handlers may replace its fields and return it: the container is created once per
    pipeline call, so a step that needs the original values keeps a :meth:`copy`.
    ``ids`` stay ``None`` unless a step sets them (no hashing on the hot path).
    """

    __slots__ = ("data_inputs", "expected_outputs", "ids")

    def __init__(self, data_inputs, expected_outputs=None, ids=None):
        self.data_inputs = data_inputs
        self.expected_outputs = expected_outputs
        self.ids = ids

    def copy(self) -> "DataContainer":
        """A shallow copy: new container, same data objects."""
        return DataContainer(self.data_inputs, self.expected_outputs, self.ids)

    def get_ids(self):
        """The ids, or ``range(len(data_inputs))`` when none were set."""
        if self.ids is not None:
            return self.ids
        return range(len(self.data_inputs)) if self.data_inputs is not None else range(0)

    def __len__(self) -> int:
        return len(self.data_inputs) if self.data_inputs is not None else 0

    def __repr__(self) -> str:
        def describe(x):
            shape = getattr(x, "shape", None)
            return f"{type(x).__name__}{tuple(shape)}" if shape is not None else type(x).__name__
        return (f"DataContainer(data_inputs={describe(self.data_inputs)}, "
                f"expected_outputs={describe(self.expected_outputs)})")
