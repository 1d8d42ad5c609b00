"""Discrete hyperparameter distributions: choices, booleans, integers, quantized values."""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np

from stepline.hyperparams.distribution_base import (  # noqa: F401
    _INV_SQRT_2PI, _LN2, _SQRT2, ContinuousDistribution, DiscreteDistribution, HyperparameterDistribution,
    RandomState, _check_json_safe, _integer, _is_int, _is_real, _number, _plain, _rng, _same,
    distribution_from_json_dict)


# ------------------------------------------------------------------ discrete choices

def _choices(owner: str, choice_list: Any) -> list:
    """``choice_list`` as a non-empty list of plain values."""
    if isinstance(choice_list, (str, bytes)) or not isinstance(choice_list,
                                                              (Sequence, np.ndarray)):
        raise ValueError(f"{owner}: choice_list must be a list, got {choice_list!r}")
    values = [_plain(value) for value in choice_list]
    if not values:
        raise ValueError(f"{owner}: choice_list must not be empty, got {choice_list!r}")
    return values


def _probas(owner: str, probas: Any, n: int) -> Optional[list]:
    """``probas`` checked: ``n`` finite non-negative numbers summing to 1 (or None)."""
    if probas is None:
        return None
    if isinstance(probas, (str, bytes)) or not isinstance(probas, (Sequence, np.ndarray)):
        raise ValueError(f"{owner}: probas must be a list of numbers, got {probas!r}")
    values = [_number(owner, "probas", _plain(p)) for p in probas]
    if len(values) != n:
        raise ValueError(f"{owner}: probas must have one entry per choice ({n}), "
                         f"got {len(values)}: {probas!r}")
    if min(values) < 0:
        raise ValueError(f"{owner}: probas must all be >= 0, got {probas!r}")
    if abs(math.fsum(values) - 1.0) > 1e-6:
        raise ValueError(f"{owner}: probas must sum to 1, got {probas!r} "
                         f"(sum {math.fsum(values)!r})")
    return values


class Choice(DiscreteDistribution):
    """One of ``choice_list``, drawn with ``probas`` (uniform by default)."""

    def __init__(self, choice_list: Sequence, probas: Optional[Sequence[float]] = None):
        owner = type(self).__name__
        self.choice_list = _choices(owner, choice_list)
        self.probas = _probas(owner, probas, len(self.choice_list))
        weights = self.probas or [1.0] * len(self.choice_list)
        self._p = np.asarray(weights) / math.fsum(weights)

    def _sample(self, rng: np.random.Generator, n: int) -> list:
        return [self.choice_list[i] for i in rng.choice(len(self.choice_list), size=n, p=self._p)]

    def __contains__(self, value: Any) -> bool:
        value = _plain(value)
        return any(_same(value, choice) for choice in self.choice_list)

    def pmf(self, value: Any) -> float:
        """Probability of drawing ``value`` (summed over repeated entries)."""
        value = _plain(value)
        return math.fsum(float(p) for c, p in zip(self.choice_list, self._p) if _same(value, c))

    def probabilities(self) -> dict:
        """Each choice mapped to its probability (the choices must be hashable)."""
        out: dict = {}
        for choice, p in zip(self.choice_list, self._p):
            out[choice] = out.get(choice, 0.0) + float(p)
        return out

    def _numbers(self) -> list:
        if not all(isinstance(c, numbers.Real) for c in self.choice_list):
            raise TypeError(f"{self!r}: min/max/mean/std need numeric choices")
        return self.choice_list

    def min(self) -> Any:
        """Smallest choice (numeric choices only)."""
        return min(self._numbers())

    def max(self) -> Any:
        """Largest choice (numeric choices only)."""
        return max(self._numbers())

    def mean(self) -> float:
        """Expected value (numeric choices only)."""
        return math.fsum(float(c) * p for c, p in zip(self._numbers(), self._p))

    def std(self) -> float:
        """Standard deviation (numeric choices only)."""
        mean = self.mean()
        return math.sqrt(math.fsum((float(c) - mean) ** 2 * p
                                   for c, p in zip(self._numbers(), self._p)))

    def _params(self) -> dict:
        probas = None if self.probas is None else list(self.probas)
        return {"choice_list": list(self.choice_list), "probas": probas}


class PriorityChoice(Choice):
    """One of ``choice_list``, earlier entries more probable (weights n, n-1, ..., 1)."""

    def __init__(self, choice_list: Sequence):
        n = len(_choices("PriorityChoice", choice_list))
        total = n * (n + 1) / 2
        super().__init__(choice_list, [(n - i) / total for i in range(n)])

    def _params(self) -> dict:
        return {"choice_list": list(self.choice_list)}


class Boolean(Choice):
    """True with probability ``proba_is_true`` (0.5 by default), else False."""

    def __init__(self, proba_is_true: Optional[float] = None):
        p = 0.5 if proba_is_true is None else _number("Boolean", "proba_is_true", proba_is_true)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Boolean: proba_is_true must be in [0, 1], got {proba_is_true!r}")
        self.proba_is_true = p
        super().__init__([True, False], [p, 1.0 - p])

    def pmf(self, value: Any) -> float:
        """Probability of ``value``; the numbers 1 and 0 count as True and False (as in Neuraxle)."""
        value = _plain(value)
        if isinstance(value, numbers.Real) and value in (0, 1):
            return self.proba_is_true if value == 1 else 1.0 - self.proba_is_true
        return 0.0

    def cdf(self, x: float) -> float:
        """P(value <= x), False counting as 0 and True as 1."""
        x = _plain(x)
        x = _number("Boolean.cdf", "x", int(x) if isinstance(x, bool) else x)
        return 0.0 if x < 0 else (1.0 - self.proba_is_true if x < 1 else 1.0)

    def _params(self) -> dict:
        return {"proba_is_true": self.proba_is_true}


class FixedHyperparameter(Choice):
    """Always ``value``: a hyperparameter that is no longer searched."""

    def __init__(self, value: Any):
        super().__init__([value])
        self.value = self.choice_list[0]

    def _params(self) -> dict:
        return {"value": self.value}


class RandInt(DiscreteDistribution):
    """An integer drawn uniformly from ``min_included`` to ``max_included``, both included."""

    def __init__(self, min_included: int, max_included: int):
        self.min_included = _integer("RandInt", "min_included", min_included)
        self.max_included = _integer("RandInt", "max_included", max_included)
        if self.min_included > self.max_included:
            raise ValueError(f"RandInt: min_included must be <= max_included, got "
                             f"min_included={min_included!r}, max_included={max_included!r}")

    def _count(self) -> int:
        return self.max_included - self.min_included + 1

    def _sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(self.min_included, self.max_included, size=n, endpoint=True)

    def __contains__(self, value: Any) -> bool:
        value = _plain(value)
        return _is_int(value) and self.min_included <= value <= self.max_included

    def pmf(self, value: Any) -> float:
        """Probability of drawing ``value``."""
        return 1.0 / self._count() if value in self else 0.0

    def cdf(self, x: float) -> float:
        """Probability of a draw <= ``x``."""
        below = math.floor(x) - self.min_included + 1
        return min(max(below / self._count(), 0.0), 1.0)

    def probabilities(self) -> dict:
        """Each integer of the range mapped to its probability."""
        return {k: 1.0 / self._count() for k in range(self.min_included, self.max_included + 1)}

    def min(self) -> int:
        """``min_included``."""
        return self.min_included

    def max(self) -> int:
        """``max_included``."""
        return self.max_included

    def mean(self) -> float:
        """Expected value."""
        return (self.min_included + self.max_included) / 2

    def std(self) -> float:
        """Standard deviation."""
        return math.sqrt((self._count() ** 2 - 1) / 12)

    def _params(self) -> dict:
        return {"min_included": self.min_included, "max_included": self.max_included}


class Quantized(DiscreteDistribution):
    """Draws of the continuous distribution ``hd`` rounded to the nearest integer."""

    #: Widest integer range whose moments are summed exactly; wider ones use Sheppard's correction.
    MAX_EXACT_SPAN = 10_000

    def __init__(self, hd: HyperparameterDistribution):
        if not isinstance(hd, HyperparameterDistribution) or not hd.is_continuous:
            raise ValueError("Quantized: hd must be a continuous distribution such as "
                             f"Uniform(0, 10), got {hd!r}")
        self.hd = hd

    def _sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.rint(self.hd.rvs_many(n, rng)).astype(np.int64)

    def __contains__(self, value: Any) -> bool:
        value = _plain(value)
        return _is_int(value) and self.min() <= value <= self.max()

    def pmf(self, value: Any) -> float:
        """Probability that a draw of ``hd`` rounds to ``value``."""
        value = _plain(value)
        if not _is_int(value):
            return 0.0
        return max(self.hd.cdf(value + 0.5) - self.hd.cdf(value - 0.5), 0.0)

    def cdf(self, x: float) -> float:
        """Probability of a draw <= ``x``."""
        return self.hd.cdf(math.floor(x) + 0.5)

    def probabilities(self) -> dict:
        """Each integer of the (bounded) support mapped to its probability."""
        low, high = self.min(), self.max()
        if math.isinf(low) or math.isinf(high):
            raise ValueError(f"{self!r}: probabilities() needs a bounded support; use pmf()")
        return {k: self.pmf(k) for k in range(low, high + 1)}

    def min(self) -> Union[int, float]:
        """Smallest integer with probability > 0 (``-inf`` if unbounded)."""
        low = self.hd.min()
        return low if math.isinf(low) else math.floor(low - 0.5) + 1

    def max(self) -> Union[int, float]:
        """Largest integer with probability > 0 (``inf`` if unbounded)."""
        high = self.hd.max()
        return high if math.isinf(high) else math.ceil(high + 0.5) - 1

    def mean(self) -> float:
        """Expected value."""
        return self._moments()[0]

    def std(self) -> float:
        """Standard deviation."""
        return self._moments()[1]

    def _moments(self) -> tuple:
        """Mean and std summed over the support (cut at mean +- 40 std when unbounded)."""
        mean, std = self.hd.mean(), self.hd.std()
        low = max(self.min(), math.floor(mean - 40 * std))
        high = min(self.max(), math.ceil(mean + 40 * std))
        if high - low > self.MAX_EXACT_SPAN:
            return mean, math.sqrt(std * std + 1 / 12)
        ks = range(low, high + 1)
        ps = [self.pmf(k) for k in ks]
        total = math.fsum(ps)
        mean = math.fsum(k * p for k, p in zip(ks, ps)) / total
        var = math.fsum((k - mean) ** 2 * p for k, p in zip(ks, ps)) / total
        return mean, math.sqrt(var)

    def _params(self) -> dict:
        return {"hd": self.hd}

    @classmethod
    def _from_json_params(cls, params: dict) -> Quantized:
        return cls(**{**params, "hd": distribution_from_json_dict(params["hd"])})
