"""``Pipeline``: steps run in order, each fitted on what the previous ones output."""
from __future__ import annotations

from stepline.core.composite import StepT, TruncableSteps
from stepline.core.context import ExecutionContext
from stepline.estimator_api import EstimatorAPIMixin, wrap_foreign_steps


class Pipeline(EstimatorAPIMixin, TruncableSteps[StepT]):
    """Run steps in sequence.

    ``Pipeline([step, ("name", step), …], cache_folder=None)``. ``fit`` fits each
    step on the outputs of the ones before it; ``transform`` chains the
    transforms. ``cache_folder`` is the default root for :meth:`save`.
    """

    def __init__(self, steps=(), cache_folder=None, hyperparams=None, hyperparams_space=None,
                 name=None, savers=None):
        super().__init__(wrap_foreign_steps(steps), hyperparams=hyperparams, hyperparams_space=hyperparams_space,
                         name=name, savers=savers)
        self.cache_folder = cache_folder

    def handle_transform(self, data_container, context):
        context = context.push(self)
        for step in self.steps_as_tuple:
            data_container = step.handle_transform(data_container, context)
        return data_container

    def handle_fit_transform(self, data_container, context):
        context = context.push(self)
        fitted = []
        for step in self.steps_as_tuple:
            step, data_container = step.handle_fit_transform(data_container, context)
            fitted.append(step)
        self._keep_fitted(fitted)
        return self, data_container

    def handle_fit(self, data_container, context):
        context = context.push(self)
        steps = self.steps_as_tuple
        fitted = []
        for step in steps[:-1]:
            step, data_container = step.handle_fit_transform(data_container, context)
            fitted.append(step)
        if steps:
            fitted.append(steps[-1].handle_fit(data_container, context))
        self._keep_fitted(fitted)
        return self

    def handle_inverse_transform(self, data_container, context):
        """Undo the steps, last first, each with its ``inverse_transform``."""
        context = context.push(self)
        for step in reversed(self.steps_as_tuple):
            data_container = step.handle_inverse_transform(data_container, context)
        return data_container

    def inverse_transform(self, processed_outputs):
        """The inputs that ``transform`` would map to ``processed_outputs`` (steps undone in reverse)."""
        from stepline.data_container import DataContainer
        return self.handle_inverse_transform(DataContainer(data_inputs=processed_outputs),
                                             ExecutionContext()).data_inputs

    def save(self, context: ExecutionContext | None = None, full_dump: bool = False):
        """Save under ``context`` (default: ``ExecutionContext(cache_folder)``)."""
        if context is None:
            context = ExecutionContext(self.cache_folder)
        return super().save(context, full_dump=full_dump)


def __getattr__(name: str):
    """``MiniBatchSequentialPipeline`` and ``Joiner`` (Neuraxle's names here), loaded on use."""
    if name in ("MiniBatchSequentialPipeline", "Joiner"):
        from stepline.steps import barriers
        return getattr(barriers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
