"""Steps made of steps: :class:`MetaStep` wraps one, :class:`TruncableSteps` holds many."""
from __future__ import annotations

import copy
from typing import Generic, TypeVar

from stepline.core.mixins import HandlerMixin
from stepline.core.naming import unique_names, validate_name
from stepline.core.step import BaseStep, BaseTransformer


def _setup_one(step, context):
    step.setup(context)


def _teardown_one(step, context):
    return step


class CompositeStep(HandlerMixin, BaseStep):
    """Common base of steps with children: recursive setup/teardown, children savers."""

    _needs_fit = False

    def _default_savers(self) -> list:
        from stepline.saving.savers import ChildrenSaver
        return [ChildrenSaver()]

    def setup(self, context=None):
        """Set up every descendant (each once), then this step."""
        self.apply(_setup_one, context, include_self=False)
        return self

    def teardown(self):
        """Tear down every descendant, innermost and last ones first."""
        descendants = list(self.apply(_teardown_one, include_self=False).values())
        for step in reversed(descendants):
            step.teardown()
        return self

    def _set_children(self, children: list) -> None:
        """Replace the children (used by savers on a copy, and after fitting)."""
        raise NotImplementedError


StepT = TypeVar("StepT", bound=BaseTransformer)  # ``MetaStep[Identity]``, ``Pipeline[Identity]``: type hints


class MetaStep(CompositeStep, Generic[StepT]):
    """Wraps one step; by default every call is delegated to it.

    ``wrapped`` is the inner step. Its hyperparameters appear under its name.
    """

    def __init__(self, wrapped, hyperparams=None, hyperparams_space=None, name=None, savers=None):
        super().__init__(hyperparams=hyperparams, hyperparams_space=hyperparams_space,
                         name=name, savers=savers)
        if not isinstance(wrapped, BaseTransformer):
            raise TypeError(f"{type(self).__name__} wraps a step, got {type(wrapped).__name__}")
        self.wrapped = wrapped

    def get_children(self) -> tuple:
        return (self.wrapped,)

    def _set_children(self, children: list) -> None:
        (self.wrapped,) = children

    def _child_by_name(self, name: str):
        return self.wrapped if self.wrapped.name == name else None

    def get_step(self):
        """The wrapped step (also ``wrapped``)."""
        return self.wrapped

    def handle_fit(self, data_container, context):
        self.wrapped = self.wrapped.handle_fit(data_container, context.push(self))
        return self

    def handle_transform(self, data_container, context):
        return self.wrapped.handle_transform(data_container, context.push(self))

    def handle_fit_transform(self, data_container, context):
        self.wrapped, data_container = self.wrapped.handle_fit_transform(data_container, context.push(self))
        return self, data_container


class TruncableSteps(CompositeStep, Generic[StepT]):
    """An ordered mapping of unique step names to steps.

    ``steps[name]``, ``steps[0]``, ``steps[1:]`` (a copy holding the same steps),
    ``keys()``, ``values()``, ``items()``, ``len()``, ``name in steps``. Steps are
    given bare or as ``(name, step)``; default names are made unique with ``_1``…
    """

    def __init__(self, steps_as_tuple=(), hyperparams=None, hyperparams_space=None, name=None, savers=None):
        super().__init__(hyperparams=hyperparams, hyperparams_space=hyperparams_space,
                         name=name, savers=savers)
        self._set_steps(_named_steps(steps_as_tuple, type(self).__name__))

    # -- storage
    def _set_steps(self, steps) -> None:
        self.steps_as_tuple = tuple(steps)
        self._by_name = {s.name: s for s in self.steps_as_tuple}

    def get_children(self) -> tuple:
        return self.steps_as_tuple

    def _set_children(self, children: list) -> None:
        self._set_steps(children)

    def _keep_fitted(self, fitted: list) -> None:
        """Keep the steps ``fit`` returned (new objects, maybe) under the names they replace."""
        if any(new is not old for new, old in zip(fitted, self.steps_as_tuple)):
            for new, old in zip(fitted, self.steps_as_tuple):
                new.name = old.name
            self._set_steps(fitted)

    def _child_by_name(self, name: str):
        step = self._by_name.get(name)
        if step is None or step.name != name:  # a child was renamed since
            self._by_name = {s.name: s for s in self.steps_as_tuple}
            step = self._by_name.get(name)
        return step

    # -- mapping API
    def __getitem__(self, key):
        if isinstance(key, str):
            step = self._child_by_name(key)
            if step is None:
                raise KeyError(f"{self.name!r} has no step named {key!r}; its steps are {self.keys()}")
            return step
        if isinstance(key, slice):
            key = self._positional(key)
            sub = copy.copy(self)
            sub.hyperparams = copy.copy(self.hyperparams)
            sub.hyperparams_space = copy.copy(self.hyperparams_space)
            sub.savers = list(self.savers)
            sub._set_steps(self.steps_as_tuple[key])
            return sub
        if isinstance(key, int):
            return self.steps_as_tuple[key]
        raise TypeError(f"steps are indexed by name, position or slice, not {type(key).__name__}")

    def _positional(self, key: slice) -> slice:
        """``p["b":"d"]`` as positions: from step ``"b"`` up to, not including, step ``"d"``."""
        def position(bound):
            if isinstance(bound, str):
                if bound not in self.keys():
                    raise KeyError(f"{self.name!r} has no step named {bound!r}; its steps are {self.keys()}")
                return self.keys().index(bound)
            return bound
        return slice(position(key.start), position(key.stop), key.step)

    def __len__(self) -> int:
        return len(self.steps_as_tuple)

    def __iter__(self):
        return iter(self.keys())

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and self._child_by_name(name) is not None

    def keys(self) -> list[str]:
        """The step names, in order."""
        return [s.name for s in self.steps_as_tuple]

    def values(self) -> list:
        """The steps, in order."""
        return list(self.steps_as_tuple)

    def items(self) -> list[tuple]:
        """``(name, step)`` pairs, in order."""
        return [(s.name, s) for s in self.steps_as_tuple]

    def get_step_by_name(self, name: str):
        """The step called ``name`` (same as ``self[name]``)."""
        return self[name]

    def append(self, step) -> "TruncableSteps":
        """Add a step (bare or ``(name, step)``) at the end; returns self."""
        self._set_steps(_named_steps(list(self.items()) + [step], type(self).__name__))
        self._invalidated = True
        return self


def _named_steps(steps, owner: str) -> list:
    """Name each step from ``(name, step)`` pairs or its own name, uniquely."""
    if isinstance(steps, BaseTransformer):
        steps = [steps]
    pairs = []
    for item in steps:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            name, step = item
            pairs.append((step, validate_name(name), True))
        else:
            step = item
            if not isinstance(step, BaseTransformer):
                raise TypeError(f"{owner} takes steps or (name, step) pairs, got {type(step).__name__} {step!r}")
            pairs.append((step, step.name, not step._has_default_name))
    seen = set()
    for step, _, _ in pairs:
        if id(step) in seen:
            raise ValueError(f"{owner}: the same step object {step.name!r} appears twice; give each place its own step")
        seen.add(id(step))
    for step, name, _ in pairs:
        step.name = name
    names = unique_names([s for s, _, _ in pairs], [e for _, _, e in pairs])
    for (step, _, explicit), name in zip(pairs, names):
        step.name = name
        step._has_default_name = not explicit
    return [s for s, _, _ in pairs]
