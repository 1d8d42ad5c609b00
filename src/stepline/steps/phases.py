"""Flow steps driven by the execution phase, and steps that reshape the data they pass on.

Importable from :mod:`stepline.steps.flow` (Neuraxle's module):

- :class:`IfExecutionPhaseIsThen`: run a step only in one :class:`ExecutionPhase`.
- :class:`ExecutionPhaseSwitch`: one step per phase (and a default).
- :class:`ChooseOneOrManyStepsOf`: branches each enabled by a hyperparameter, outputs joined.
- :class:`ExpandDim`: the wrapped step sees the whole batch as one row.
"""
from __future__ import annotations

import numpy as np

from stepline.core.composite import MetaStep, TruncableSteps
from stepline.core.context import ExecutionPhase
from stepline.core.mixins import NonFittableMixin
from stepline.core.step import BaseStep
from stepline.data_container import ExpandedDataContainer, as_dact
from stepline.steps.flow import ExecuteIf, OptionalStep
from stepline.steps.union import FeatureUnion


class IfExecutionPhaseIsThen(ExecuteIf):
    """Runs the wrapped step only when the context's phase is ``phase`` (else data passes through).

    An UNSPECIFIED phase raises ``ValueError`` unless ``raise_if_phase_unspecified=False``.
    """

    def __init__(self, phase: ExecutionPhase, wrapped, raise_if_phase_unspecified: bool = True, name=None,
                 savers=None):
        super().__init__(_PhaseIs(phase, raise_if_phase_unspecified), wrapped, name=name, savers=savers)
        self.phase = phase
        self.raise_if_phase_unspecified = raise_if_phase_unspecified


class _PhaseIs:
    """A picklable condition: is the context's phase this one?"""

    def __init__(self, phase, raise_if_unspecified: bool):
        self.phase, self.raise_if_unspecified = phase, raise_if_unspecified

    def __call__(self, step, data_container, context) -> bool:
        if context.execution_phase == self.phase:
            return True
        if self.raise_if_unspecified and context.execution_phase == ExecutionPhase.UNSPECIFIED:
            raise ValueError(f"step {step.name!r} runs only in phase {self.phase.name}, but the execution "
                             f"phase is UNSPECIFIED: give the context an execution_phase")
        return False


class ExecutionPhaseSwitch(TruncableSteps):
    """``ExecutionPhaseSwitch({ExecutionPhase.TRAIN: a, ExecutionPhase.PROD: b}, default=c)``:
    the step of the context's phase runs (the default one for other phases)."""

    def __init__(self, phase_to_callable: dict, default=None, name=None, savers=None):
        phases = list(phase_to_callable)
        steps = list(phase_to_callable.values()) + ([default] if default is not None else [])
        super().__init__(steps, name=name, savers=savers)
        self.phase_to_step_index = {p: i for i, p in enumerate(phases)}
        self.has_default = default is not None

    def _index(self, context) -> int:
        index = self.phase_to_step_index.get(context.execution_phase)
        if index is None:
            if not self.has_default:
                raise KeyError(f"{self.name}: no step for phase {context.execution_phase.name} and no default; "
                               f"phases: {[p.name for p in self.phase_to_step_index]}")
            index = len(self) - 1
        return index

    def _replace(self, index: int, step) -> None:
        steps = list(self.steps_as_tuple)
        steps[index] = step
        self._keep_fitted(steps)

    def handle_fit(self, data_container, context):
        i = self._index(context)
        self._replace(i, self[i].handle_fit(data_container, context.push(self)))
        return self

    def handle_transform(self, data_container, context):
        return self[self._index(context)].handle_transform(data_container, context.push(self))

    def handle_fit_transform(self, data_container, context):
        i = self._index(context)
        step, data_container = self[i].handle_fit_transform(data_container, context.push(self))
        self._replace(i, step)
        return self, data_container


class NumpyConcatenateOnAxisIfNotEmpty(NonFittableMixin, BaseStep):
    """Joins a list of arrays on ``axis``, leaving out the empty ones (disabled branches)."""

    def __init__(self, axis: int = -1, name=None):
        super().__init__(name=name)
        self.axis = axis

    def transform(self, data_inputs):
        parts = [np.asarray(d) for d in data_inputs if len(d) > 0]
        return np.concatenate(parts, axis=self.axis) if parts else []


class ChooseOneOrManyStepsOf(FeatureUnion):
    """Each branch is an :class:`OptionalStep` (hyperparameter ``<branch>__enabled``); the outputs of
    the enabled ones are joined on the last axis."""

    def __init__(self, steps, joiner=None, n_jobs=None, name=None, savers=None):
        steps = [s if isinstance(s, tuple) else (s.name, s) for s in steps]
        optional = [(n, OptionalStep(s, nullified_return_value=[], name=n)) for n, s in steps]
        super().__init__(optional, joiner=joiner if joiner is not None else NumpyConcatenateOnAxisIfNotEmpty(),
                         n_jobs=n_jobs, name=name, savers=savers)


class ExpandDim(MetaStep):
    """The wrapped step gets the whole batch as a single row (``shape`` → ``[1, *shape]``);
    with ``then_unexpand`` (default) its output is unwrapped again."""

    def __init__(self, wrapped, then_unexpand: bool = True, name=None, savers=None):
        super().__init__(wrapped, name=name, savers=savers)
        self.then_unexpand = then_unexpand

    def _out(self, expanded):
        if not self.then_unexpand:
            return expanded
        if not isinstance(expanded, ExpandedDataContainer):
            restored = ExpandedDataContainer(ids=expanded._ids if hasattr(expanded, "_ids") else expanded.ids,
                                             di=expanded.data_inputs, eo=expanded.expected_outputs)
            restored._old_ids = self._old_ids
            expanded = restored
        return expanded.reduce_dim()

    def _expand(self, data_container):
        expanded = ExpandedDataContainer.create_from(as_dact(data_container))
        self._old_ids = expanded._old_ids
        return expanded

    def handle_fit(self, data_container, context):
        self.wrapped = self.wrapped.handle_fit(self._expand(data_container), context.push(self))
        return self

    def handle_transform(self, data_container, context):
        return self._out(self.wrapped.handle_transform(self._expand(data_container), context.push(self)))

    def handle_fit_transform(self, data_container, context):
        self.wrapped, out = self.wrapped.handle_fit_transform(self._expand(data_container), context.push(self))
        return self, self._out(out)


__all__ = ["IfExecutionPhaseIsThen", "ExecutionPhaseSwitch", "ChooseOneOrManyStepsOf", "ExpandDim",
           "NumpyConcatenateOnAxisIfNotEmpty"]
