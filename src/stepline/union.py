"""Unions of branches under Neuraxle's module name (``neuraxle.union``).

- :class:`FeatureUnion` (from :mod:`stepline.steps.union`): branches on the same inputs,
  outputs joined.
- :class:`AddFeatures`: the inputs themselves plus the branches' features.
- :class:`ModelStacking`: branches whose joined outputs feed a ``judge`` step, fitted on
  the expected outputs.
- :class:`ZipFeatures`: a joiner that zips the branches' outputs row by row.
"""
from __future__ import annotations

from stepline.core.mixins import Identity, NonFittableMixin
from stepline.core.step import BaseStep, BaseTransformer
from stepline.data_container import DataContainer, ZipDataContainer
from stepline.steps.union import FeatureUnion


class AddFeatures(FeatureUnion):
    """``FeatureUnion([Identity(), *steps])``: the inputs come out with the new features after them."""

    def __init__(self, steps=(), joiner=None, n_jobs=None, hyperparams=None, hyperparams_space=None,
                 name=None, savers=None):
        steps = [Identity()] + (list(steps) if not isinstance(steps, BaseTransformer) else [steps])
        super().__init__(steps, joiner=joiner, n_jobs=n_jobs, hyperparams=hyperparams,
                         hyperparams_space=hyperparams_space, name=name, savers=savers)


class ModelStacking(FeatureUnion):
    """Branches' joined outputs go to ``judge``, which is fitted on them and the expected outputs.

    The judge is a child named ``"judge"`` unless it was named otherwise.
    """

    judge = None

    def __init__(self, steps=(), judge: BaseTransformer = None, joiner=None, n_jobs=None, hyperparams=None,
                 hyperparams_space=None, name=None, savers=None):
        super().__init__(steps, joiner=joiner, n_jobs=n_jobs, hyperparams=hyperparams,
                         hyperparams_space=hyperparams_space, name=name, savers=savers)
        if not isinstance(judge, BaseTransformer):
            raise TypeError(f"ModelStacking: judge must be a step, got {type(judge).__name__}")
        if judge._has_default_name:
            judge.name = "judge"
        self.judge = judge

    def get_children(self) -> tuple:
        return super().get_children() + (self.judge,)

    def _set_children(self, children: list) -> None:
        *rest, self.judge = children
        super()._set_children(rest)

    def _child_by_name(self, name: str):
        if self.judge is not None and self.judge.name == name:
            return self.judge
        return super()._child_by_name(name)

    def handle_fit(self, data_container, context):
        return self.handle_fit_transform(data_container, context)[0]

    def handle_fit_transform(self, data_container, context):
        _, data_container = super().handle_fit_transform(data_container, context)
        self.judge, data_container = self.judge.handle_fit_transform(data_container, context.push(self))
        return self, data_container

    def handle_transform(self, data_container, context):
        data_container = super().handle_transform(data_container, context)
        return self.judge.handle_transform(data_container, context.push(self))


class ZipFeatures(NonFittableMixin, BaseStep):
    """A joiner: zips the branches' outputs row by row (``concatenate_inner_features`` joins each row).

    Its data inputs are the list of the branches' outputs (arrays or data containers).
    """

    def __init__(self, concatenate_inner_features: bool = False, name=None):
        super().__init__(name=name)
        self.concatenate_inner_features = concatenate_inner_features

    def transform(self, data_inputs):
        containers = [d if isinstance(d, DataContainer) else DataContainer(data_inputs=d) for d in data_inputs]
        zipped = ZipDataContainer.create_from(*containers)
        if self.concatenate_inner_features:
            zipped.concatenate_inner_features()
        return zipped.data_inputs


__all__ = ["FeatureUnion", "AddFeatures", "ModelStacking", "ZipFeatures", "Identity"]
