"""How a step holds, validates and routes its hyperparameters and their spaces.

Keys are paths built from step names (``"inner__b__multiply_by"``), never object
ids. A key is routed down the tree by the longest run of child names it starts
with; what remains is the parameter name on that step (it may contain ``__``,
as a wrapped scikit-learn pipeline's parameters do).
"""
from __future__ import annotations

from collections.abc import Mapping

from stepline.core.errors import HyperparameterError, UnknownHyperparameterError
from stepline.hyperparams.space import SEPARATOR, HyperparameterSamples, HyperparameterSpace, _is_leaf_mapping, flatten


def _as_flat(values) -> dict:
    if isinstance(values, HyperparameterSamples) or isinstance(values, HyperparameterSpace):
        return dict(values.items())
    if not isinstance(values, Mapping):
        raise TypeError(f"hyperparameters must be a mapping, got {type(values).__name__}")
    for v in values.values():
        if isinstance(v, Mapping) and not _is_leaf_mapping(v):
            return flatten(values)
    return values


class HyperparamsMixin:
    """Hyperparameter API shared by every step (see DESIGN §3 and §6).

    Names are checked against what a step declares (its values and its space): a typo
    gets an error listing the valid names. A step that declares no hyperparameter at
    all accepts any name, as in Neuraxle, where steps often read ``self.hyperparams``
    without declaring them; wrappers whose names come from elsewhere set
    ``_declares_no_hyperparams = False`` to keep the check.
    """

    _declares_no_hyperparams = True

    # ---- a step's own values: override these two in wrappers of foreign objects ----
    def _get_own_hyperparams(self) -> dict:
        return self.hyperparams

    def _set_own_hyperparams(self, values: dict) -> None:
        self.hyperparams.update(values)

    def _own_hyperparam_names(self):
        return self.hyperparams.keys() | self.hyperparams_space.keys()

    # ---- reading ----
    def get_hyperparams(self) -> HyperparameterSamples:
        """Every hyperparameter of this step and its descendants, keyed by path."""
        return HyperparameterSamples(self._collect(_own_values))

    def get_hyperparams_space(self) -> HyperparameterSpace:
        """Every hyperparameter space of this step and its descendants, keyed by path."""
        return HyperparameterSpace(self._collect(_own_space))

    def _collect(self, own_mapping) -> dict:
        """``{"path__name": value}`` of ``own_mapping(step, context)`` over the whole tree."""
        flat = {}
        for path, own in self.apply(own_mapping).items():
            prefix = path + SEPARATOR if path else ""
            for key, value in own.items():
                flat[prefix + key] = value
        return flat

    # ---- writing: validate the whole tree first, then apply (all or nothing) ----
    def set_hyperparams(self, hyperparams) -> "HyperparamsMixin":
        """Change the values given, keep the others; routes ``"child__param"`` keys.

        All or nothing: every key and value is checked, over the whole tree, before
        anything changes; a value a wrapped object still refuses puts back what was applied.
        """
        routed = self._route(_as_flat(hyperparams))
        for step, values in routed.items():
            step._validate_values(values)
        _apply_all(routed)
        return self

    def update_hyperparams(self, hyperparams) -> "HyperparamsMixin":
        """The same as :meth:`set_hyperparams` (which subclasses may override)."""
        return self.set_hyperparams(hyperparams)

    def set_hyperparams_space(self, hyperparams_space) -> "HyperparamsMixin":
        """Change the distributions given, keep the others; routes like :meth:`set_hyperparams`.

        All or nothing, as :meth:`set_hyperparams`.
        """
        space = HyperparameterSpace(_as_flat(hyperparams_space))
        routed = self._route(dict(space.items()))
        for step, values in routed.items():
            step._validate_names(values)
        for step, values in routed.items():
            step.hyperparams_space.update(values)
            step._invalidated = True
        return self

    def update_hyperparams_space(self, hyperparams_space) -> "HyperparamsMixin":
        """The same as :meth:`set_hyperparams_space` (which subclasses may override)."""
        return self.set_hyperparams_space(hyperparams_space)

    # ---- scikit-learn's estimator protocol ----
    def get_params(self, deep: bool = True) -> dict:
        """scikit-learn's ``get_params``: every hyperparameter by ``__`` path."""
        if deep:
            return self.get_hyperparams().to_flat_dict()
        return dict(self._get_own_hyperparams())

    def set_params(self, **params) -> "HyperparamsMixin":
        """scikit-learn's ``set_params``: same as :meth:`set_hyperparams`."""
        return self.set_hyperparams(params)

    # ---- routing and validation ----
    def _route(self, flat: Mapping) -> dict:
        """Group flat keys by the step they belong to: ``{step: {param: value}}``."""
        routed: dict = {}
        for key, value in flat.items():
            step, param = self._resolve(key)
            bucket = routed.get(step)
            if bucket is None:
                bucket = routed[step] = {}
            bucket[param] = value
        return routed

    def _resolve(self, key: str):
        step = self
        rest = key
        while SEPARATOR in rest:
            head, tail = rest.split(SEPARATOR, 1)
            child = step._child_by_name(head)
            if child is None:
                break
            step, rest = child, tail
        else:
            if rest == "" or step._child_by_name(rest) is not None:
                raise HyperparameterError(
                    f"hyperparameter key {key!r} names the step {rest!r}, not one of its parameters")
        return step, rest

    def _child_by_name(self, name: str):
        return None

    def _hyperparams_snapshot(self, names) -> object:
        """What :meth:`_restore_hyperparams` needs to undo setting ``names``."""
        return dict(self.hyperparams)

    def _restore_hyperparams(self, snapshot) -> None:
        dict.clear(self.hyperparams)
        dict.update(self.hyperparams, snapshot)

    def _validate_names(self, values: Mapping) -> None:
        known = self._own_hyperparam_names()
        if not known and self._declares_no_hyperparams and not any(SEPARATOR in k for k in values):
            return  # a step that declares none reads its values as it likes (Neuraxle's steps do)
        unknown = [k for k in values if k not in known]
        if unknown:
            children = [c.name for c in self.get_children()]
            where = f" and children {children}" if children else ""
            raise UnknownHyperparameterError(
                f"step {self.name!r} ({type(self).__name__}) has no hyperparameter "
                f"{', '.join(map(repr, unknown))}; its hyperparameters are "
                f"{sorted(known) or '(none)'}{where}")

    def _validate_values(self, values: Mapping) -> None:
        self._validate_names(values)
        space = self.hyperparams_space
        for name, value in values.items():
            dist = dict.get(space, name)
            if dist is not None and not _in_space(value, dist):
                raise HyperparameterError(
                    f"value {value!r} for hyperparameter {name!r} of step {self.name!r} "
                    f"is outside its space {dist!r}")


def _apply_all(routed: dict) -> None:
    """Set each step's validated values; if one still refuses, put the applied ones back."""
    applied = []
    try:
        for step, values in routed.items():
            snapshot = step._hyperparams_snapshot(values.keys())
            applied.append((step, snapshot))
            step._set_own_hyperparams(values)
    except BaseException:
        for step, snapshot in reversed(applied):
            step._restore_hyperparams(snapshot)
        raise
    for step in routed:
        step._invalidated = True


def _in_space(value, dist) -> bool:
    try:
        return value in dist
    except Exception:  # a distribution that cannot judge the value does not block it
        return True


def _own_values(step, context):
    return step._get_own_hyperparams()


def _own_space(step, context):
    return step.hyperparams_space
