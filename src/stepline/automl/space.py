"""A pipeline's declared hyperparameter space, sampled through an Optuna trial.

Each stepline distribution becomes one Optuna suggestion named by its flat key
(``"LogisticRegression__C"``):

============================================  =============================================
stepline                                       Optuna
============================================  =============================================
``FixedHyperparameter``                        nothing (the value is set, not searched)
``Choice`` / ``Boolean`` with equal weights    ``suggest_categorical`` (of the values when
                                               they are ``None``/bool/int/float/str, else of
                                               their indices)
``RandInt``                                    ``suggest_int``
``Uniform`` / ``LogUniform``                   ``suggest_float`` (``log=True`` for the latter)
``Quantized(Uniform)`` / ``Quantized(LogUniform)``  ``suggest_int`` (step 1; ``log=True``)
anything else: ``Normal``, ``LogNormal``,      ``suggest_float(key, 0, 1)``: a uniform ``u``
weighted ``Choice``, ``PriorityChoice``,       mapped through the distribution's inverse CDF
``ScipyDistribution``, mixtures, other         (``ppf`` when the distribution has one, else
``Quantized``                                  bisection of its ``cdf``; for discrete ones,
                                               the cumulative probabilities)
============================================  =============================================

The inverse-CDF way keeps the distribution's prior (a draw of ``u`` from the random sampler
is a draw of the distribution) and lets TPE model ``u``, a monotone image of the value.
Optuna records ``u``; :meth:`SearchSpace.suggest` returns the value, and the search keeps
the values too (trial user attribute ``stepline_params``).

Conditional spaces: the parameters under a ``ChooseOneStepOf`` child are suggested only
when its ``choice`` names that child, those under an ``OptionalStep`` only when its
``enabled`` is true. Parameters are suggested in the space's order, each condition first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stepline.hyperparams.distributions import (Choice, FixedHyperparameter,
                                                HyperparameterDistribution, LogUniform, Quantized,
                                                RandInt, Uniform)
from stepline.hyperparams.space import SEPARATOR

__all__ = ["SearchSpace", "suggest", "inverse_cdf"]

_CATEGORICAL_TYPES = (type(None), bool, int, float, str)
_BISECTION_STEPS = 200


@dataclass(frozen=True)
class _Condition:
    """The parameters under ``prefix`` are active when ``key`` has the value ``value``."""
    prefix: str
    key: str
    value: Any


@dataclass
class SearchSpace:
    """The flat space of a pipeline plus the conditions of its branching steps."""

    distributions: dict
    conditions: list = field(default_factory=list)

    @classmethod
    def of(cls, pipeline) -> "SearchSpace":
        """The space ``pipeline.get_hyperparams_space()`` declares, with its conditions."""
        flat = pipeline.get_hyperparams_space().to_flat_dict()
        return cls(flat, _conditions_of(pipeline))

    def suggest(self, trial) -> dict:
        """Flat values of the active parameters, suggested on ``trial`` (an Optuna trial)."""
        values: dict = {}
        inactive: set = set()
        for key in self.distributions:
            self._decide(trial, key, values, inactive)
        return values

    def _decide(self, trial, key: str, values: dict, inactive: set) -> None:
        if key in values or key in inactive:
            return
        for condition in self.conditions:
            if not key.startswith(condition.prefix):
                continue
            if condition.key in self.distributions:
                self._decide(trial, condition.key, values, inactive)
            if condition.key not in values or values[condition.key] != condition.value:
                inactive.add(key)
                return
        try:
            values[key] = suggest(trial, key, self.distributions[key])
        except ValueError as error:  # Optuna refuses a distribution unlike the study's earlier one
            raise ValueError(f"hyperparameter {key!r} ({self.distributions[key]!r}): {error}") from error


def _conditions_of(pipeline) -> list:
    """Conditions of every ``ChooseOneStepOf`` and ``OptionalStep`` in the tree."""
    from stepline.steps.flow import ChooseOneStepOf, OptionalStep
    conditions = []
    for path, step in pipeline.apply(lambda s, cx: s).items():
        prefix = path + SEPARATOR if path else ""
        if isinstance(step, ChooseOneStepOf):
            for child in step.keys():
                conditions.append(_Condition(f"{prefix}{child}{SEPARATOR}", f"{prefix}choice", child))
        elif isinstance(step, OptionalStep):
            conditions.append(_Condition(f"{prefix}{step.wrapped.name}{SEPARATOR}", f"{prefix}enabled", True))
    return conditions


# ------------------------------------------------------------------ one distribution

def suggest(trial, name: str, dist: HyperparameterDistribution) -> Any:
    """One value of ``dist`` suggested on ``trial`` under ``name`` (see the module's table)."""
    if isinstance(dist, FixedHyperparameter):
        return dist.value
    if isinstance(dist, Choice) and _equal_weights(dist):
        return _suggest_choice(trial, name, dist.choice_list)
    if type(dist) is RandInt:
        return trial.suggest_int(name, dist.min_included, dist.max_included)
    if type(dist) is Uniform:
        return trial.suggest_float(name, dist.low, dist.high)
    if type(dist) is LogUniform:
        return trial.suggest_float(name, dist.min_included, dist.max_included, log=True)
    if type(dist) is Quantized and type(dist.hd) in (Uniform, LogUniform):
        low, high = int(dist.min()), int(dist.max())
        log = type(dist.hd) is LogUniform and low >= 1
        return trial.suggest_int(name, low, high, log=log)
    return _from_uniform(dist, trial.suggest_float(name, 0.0, 1.0), name)


def _equal_weights(dist: Choice) -> bool:
    return dist.probas is None or max(dist.probas) - min(dist.probas) < 1e-12


def _suggest_choice(trial, name: str, choices: list) -> Any:
    plain = all(type(c) in _CATEGORICAL_TYPES for c in choices) and _distinct(choices)
    if plain:
        return trial.suggest_categorical(name, list(choices))
    return choices[trial.suggest_categorical(name, list(range(len(choices))))]


def _distinct(choices: list) -> bool:
    seen = [(type(c), c) for c in choices]
    return len(set(seen)) == len(seen)


def _from_uniform(dist: HyperparameterDistribution, u: float, name: str) -> Any:
    """The value of ``dist`` at quantile ``u``."""
    if isinstance(dist, Quantized):
        return int(np.rint(_from_uniform(dist.hd, u, name)))
    if isinstance(dist, Choice):
        index = int(np.searchsorted(np.cumsum(dist._p), u, side="right"))
        return dist.choice_list[min(index, len(dist.choice_list) - 1)]
    if dist.is_continuous:
        return inverse_cdf(dist, u)
    if _ppf_of(dist) is not None:  # a discrete scipy distribution
        return int(inverse_cdf(dist, u))
    probabilities = _probabilities(dist, name)
    values = list(probabilities)
    index = int(np.searchsorted(np.cumsum(list(probabilities.values())), u, side="right"))
    return values[min(index, len(values) - 1)]


def _ppf_of(dist):
    ppf = getattr(dist, "ppf", None) or getattr(getattr(dist, "frozen", None), "ppf", None)
    return ppf if callable(ppf) else None


def _probabilities(dist, name: str) -> dict:
    try:
        return dist.probabilities()
    except (AttributeError, TypeError, ValueError, NotImplementedError) as error:
        raise TypeError(f"hyperparameter {name!r}: {dist!r} cannot be searched with Optuna: it is "
                        f"discrete and its probabilities() fails ({error})") from error


def inverse_cdf(dist, u: float) -> float:
    """The ``u`` quantile of a continuous distribution: its ``ppf`` if it has one, else the
    bisection of its ``cdf`` between ``min()`` and ``max()`` (widened from the mean by
    doubling multiples of the std where the support is unbounded)."""
    u = min(max(float(u), 1e-12), 1.0 - 1e-12)
    ppf = _ppf_of(dist)
    if ppf is not None:
        return float(ppf(u))
    low, high = _bracket(dist, u)
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        low, high = (middle, high) if dist.cdf(middle) < u else (low, middle)
    return min(max(0.5 * (low + high), dist.min()), dist.max())


def _bracket(dist, u: float) -> tuple:
    """Finite ``low < high`` with ``cdf(low) <= u <= cdf(high)``."""
    low, high = float(dist.min()), float(dist.max())
    center, scale = _center_scale(dist)
    width = scale
    while math.isinf(low) and width < 1e300:
        low = center - width if dist.cdf(center - width) <= u else -math.inf
        width *= 2
    width = scale
    while math.isinf(high) and width < 1e300:
        high = center + width if dist.cdf(center + width) >= u else math.inf
        width *= 2
    return low, high


def _center_scale(dist) -> tuple:
    try:
        center, scale = float(dist.mean()), float(dist.std())
    except (ArithmeticError, ValueError, TypeError, NotImplementedError):
        center, scale = 0.0, 1.0
    if not math.isfinite(center):
        center = 0.0
    if not math.isfinite(scale) or scale <= 0:
        scale = 1.0
    return center, scale

