"""Hyperparameter distributions: the values a hyperparameter may take, and how to draw them.

Every distribution draws values (``rvs`` / ``rvs_many``, reproducible from an int seed or a
``numpy.random.Generator``), answers ``value in dist``, compares equal by type and constructor
arguments, and round-trips through JSON (``to_json_dict`` / :func:`distribution_from_json_dict`).
Continuous distributions add ``pdf``/``cdf``/``min``/``max``/``mean``/``std``; discrete ones
add ``pmf``/``probabilities`` and, where the values are numbers, ``min``/``max``/``mean``/``std``.

The math is plain Python: scipy is only needed by :class:`ScipyDistribution`, which lives in
``stepline.hyperparams.scipy_distribution`` and is loaded on first use.
"""
from __future__ import annotations

import inspect
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np

__all__ = [
    "RandomState", "HyperparameterDistribution", "ContinuousDistribution",
    "DiscreteDistribution", "FixedHyperparameter", "Boolean", "Choice", "PriorityChoice",
    "RandInt", "Quantized", "Uniform", "LogUniform", "Normal", "LogNormal",
    "ScipyDistribution", "distribution_from_json_dict",
]

RandomState = Union[None, int, np.random.Generator]

_REGISTRY: dict[str, type] = {}
_JSON_SCALARS = (type(None), bool, int, float, str)
_LN2 = math.log(2.0)
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# --------------------------------------------------------------------------- helpers

def _rng(random_state: RandomState) -> np.random.Generator:
    """A Generator from None (fresh entropy), an int seed, or a Generator (used as is)."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or _is_int(random_state):
        return np.random.default_rng(None if random_state is None else int(random_state))
    raise TypeError("random_state must be None, an int seed or a numpy.random.Generator, "
                    f"got {random_state!r}")


def _plain(value: Any) -> Any:
    """The Python value of a numpy scalar; anything else unchanged."""
    return value.item() if isinstance(value, np.generic) else value


def _is_real(value: Any) -> bool:
    """True for a real number that is neither a bool nor NaN."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and not math.isnan(value))


def _is_int(value: Any) -> bool:
    """True for an integer that is not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _number(owner: str, name: str, value: Any) -> float:
    """``value`` as a float; ValueError naming ``owner`` and ``name`` unless finite and real."""
    if not _is_real(value) or math.isinf(value):
        raise ValueError(f"{owner}: {name} must be a finite number, got {value!r}")
    return float(value)


def _integer(owner: str, name: str, value: Any) -> int:
    """``value`` as an int; ValueError naming ``owner`` and ``name`` unless an integer."""
    if not _is_int(value):
        raise ValueError(f"{owner}: {name} must be an int, got {value!r}")
    return int(value)


def _same(a: Any, b: Any) -> bool:
    """Equality that never raises and never takes a bool for a number."""
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - exotic __eq__ (arrays, broken objects) means "not equal"
        return False


def _check_json_safe(owner: str, name: str, value: Any) -> None:
    """ValueError unless ``value`` survives ``json.dumps``/``json.loads`` unchanged."""
    if isinstance(value, list):
        for item in value:
            _check_json_safe(owner, name, item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if type(key) is not str:
                raise ValueError(f"{owner}: {name} has the non-str key {key!r}, which JSON "
                                 "cannot carry")
            _check_json_safe(owner, name, item)
    elif type(value) not in _JSON_SCALARS:
        raise ValueError(f"{owner}: {name} holds {value!r}, which JSON cannot carry; JSON needs "
                         "None, bool, int, float, str, and lists and str-keyed dicts of those")


# ---------------------------------------------------------------------- base classes

class HyperparameterDistribution(ABC):
    """Base of all distributions: sampling, support, equality, repr and JSON."""

    #: Whether the distribution has a density (``pdf``) rather than a mass function (``pmf``).
    is_continuous: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            _REGISTRY.setdefault(cls.__name__, cls)

    def rvs(self, random_state: RandomState = None) -> Any:
        """Draw one value, as a plain Python value."""
        return _plain(self.rvs_many(1, random_state)[0])

    def rvs_many(self, n: int, random_state: RandomState = None) -> Union[np.ndarray, list]:
        """Draw ``n`` values: a numpy array for numbers, a list for arbitrary choices."""
        if not _is_int(n) or n < 0:
            raise ValueError(f"{type(self).__name__}.rvs_many: n must be an int >= 0, got {n!r}")
        return self._sample(_rng(random_state), int(n))

    @abstractmethod
    def _sample(self, rng: np.random.Generator, n: int) -> Union[np.ndarray, list]:
        """Draw ``n`` values with ``rng``."""

    @abstractmethod
    def __contains__(self, value: Any) -> bool:
        """Whether ``value`` is in the support; False, never an error, for a wrong type."""

    @abstractmethod
    def _params(self) -> dict:
        """The constructor arguments, by keyword, in signature order."""

    def to_json_dict(self) -> dict:
        """A JSON-safe dict: ``{"type": <class name>, <constructor argument>: <value>, ...}``."""
        out: dict = {"type": type(self).__name__}
        for key, value in self._params().items():
            if isinstance(value, HyperparameterDistribution):
                value = value.to_json_dict()
            else:
                _check_json_safe(type(self).__name__, key, value)
            out[key] = value
        return out

    @classmethod
    def _from_json_params(cls, params: dict) -> HyperparameterDistribution:
        """Build from the parameters of :meth:`to_json_dict` (without ``"type"``)."""
        return cls(**params)

    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        return self._params() == other._params()

    def __hash__(self) -> int:
        return hash(type(self).__name__)

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self._params().items())
        return f"{type(self).__name__}({args})"


class ContinuousDistribution(HyperparameterDistribution):
    """A distribution with a density over an interval of the real line."""

    is_continuous = True

    @abstractmethod
    def pdf(self, x: float) -> float:
        """Probability density at ``x``."""

    @abstractmethod
    def cdf(self, x: float) -> float:
        """Probability of a draw <= ``x``."""

    @abstractmethod
    def min(self) -> float:
        """Lower bound of the support (may be ``-inf``)."""

    @abstractmethod
    def max(self) -> float:
        """Upper bound of the support (may be ``inf``)."""

    @abstractmethod
    def mean(self) -> float:
        """Expected value."""

    @abstractmethod
    def std(self) -> float:
        """Standard deviation."""

    def __contains__(self, value: Any) -> bool:
        return _is_real(value) and math.isfinite(value) and self.min() <= value <= self.max()


class DiscreteDistribution(HyperparameterDistribution):
    """A distribution over countably many values."""

    @abstractmethod
    def pmf(self, value: Any) -> float:
        """Probability of drawing ``value``; 0.0 outside the support."""

    @abstractmethod
    def probabilities(self) -> dict:
        """Every value of the support mapped to its probability."""


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


# -------------------------------------------------------------- continuous: uniform

class Uniform(ContinuousDistribution):
    """Uniform over [``low``, ``high``]."""

    def __init__(self, low: float, high: float):
        self.low = _number("Uniform", "low", low)
        self.high = _number("Uniform", "high", high)
        if not self.low < self.high:
            raise ValueError(f"Uniform: low must be < high, got low={low!r}, high={high!r}")

    def _sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, size=n)

    def pdf(self, x: float) -> float:
        return 1.0 / (self.high - self.low) if self.low <= x <= self.high else 0.0

    def cdf(self, x: float) -> float:
        return min(max((x - self.low) / (self.high - self.low), 0.0), 1.0)

    def min(self) -> float:
        return self.low

    def max(self) -> float:
        return self.high

    def mean(self) -> float:
        return (self.low + self.high) / 2

    def std(self) -> float:
        return (self.high - self.low) / math.sqrt(12)

    def _params(self) -> dict:
        return {"low": self.low, "high": self.high}


class LogUniform(ContinuousDistribution):
    """Log-uniform (reciprocal) over [``min_included``, ``max_included``], both > 0."""

    def __init__(self, min_included: float, max_included: float):
        self.min_included = _number("LogUniform", "min_included", min_included)
        self.max_included = _number("LogUniform", "max_included", max_included)
        if not self.min_included > 0:
            raise ValueError(f"LogUniform: min_included must be > 0, got {min_included!r}")
        if not self.min_included < self.max_included:
            raise ValueError("LogUniform: min_included must be < max_included, got "
                             f"min_included={min_included!r}, max_included={max_included!r}")
        self._log_span = math.log(self.max_included / self.min_included)

    def _sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        logs = rng.uniform(math.log(self.min_included), math.log(self.max_included), size=n)
        return np.clip(np.exp(logs), self.min_included, self.max_included)

    def pdf(self, x: float) -> float:
        inside = self.min_included <= x <= self.max_included
        return 1.0 / (x * self._log_span) if inside else 0.0

    def cdf(self, x: float) -> float:
        if x <= self.min_included:
            return 0.0
        return min(math.log(x / self.min_included) / self._log_span, 1.0)

    def min(self) -> float:
        return self.min_included

    def max(self) -> float:
        return self.max_included

    def mean(self) -> float:
        return (self.max_included - self.min_included) / self._log_span

    def std(self) -> float:
        second = (self.max_included ** 2 - self.min_included ** 2) / (2 * self._log_span)
        return math.sqrt(max(second - self.mean() ** 2, 0.0))

    def _params(self) -> dict:
        return {"min_included": self.min_included, "max_included": self.max_included}


# ----------------------------------------------------- continuous: (truncated) normal

def _phi(z: float) -> float:
    """Standard normal density."""
    return _INV_SQRT_2PI * math.exp(-0.5 * z * z)


def _big_phi(z: float) -> float:
    """Standard normal cdf, accurate in the lower tail."""
    return 0.5 * math.erfc(-z / _SQRT2)


def _mass(a: float, b: float) -> float:
    """P(a <= Z <= b) for a standard normal Z, accurate in both tails."""
    return _big_phi(-a) - _big_phi(-b) if a > 0 else _big_phi(b) - _big_phi(a)


_ACKLAM_A = [-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
             1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00]
_ACKLAM_B = [-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
             6.680131188771972e+01, -1.328068155288572e+01, 1.0]
_ACKLAM_C = [-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
             -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00]
_ACKLAM_D = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
             3.754408661907416e+00, 1.0]


def _norm_ppf(p: np.ndarray) -> np.ndarray:
    """Inverse standard normal cdf (Acklam's approximation, relative error < 1.2e-9)."""
    p = np.clip(np.asarray(p, dtype=float), 1e-300, 1.0 - 1e-16)
    tail_p = np.minimum(p, 1.0 - p)
    out = np.empty_like(p)
    central = tail_p > 0.02425
    r = p[central] - 0.5
    out[central] = r * np.polyval(_ACKLAM_A, r * r) / np.polyval(_ACKLAM_B, r * r)
    q = np.sqrt(-2.0 * np.log(tail_p[~central]))
    lower = np.polyval(_ACKLAM_C, q) / np.polyval(_ACKLAM_D, q)
    out[~central] = np.where(p[~central] < 0.5, lower, -lower)
    return out


class _TruncatedNormalMath:
    """pdf, cdf, moments and sampling of a normal(mu, sigma) truncated to [low, high]."""

    def __init__(self, owner: str, mu: float, sigma: float, low: float, high: float):
        self.mu, self.sigma, self.low, self.high = mu, sigma, low, high
        self.a, self.b = (low - mu) / sigma, (high - mu) / sigma
        self.z = _mass(self.a, self.b)
        if not self.z > 0:
            raise ValueError(f"{owner}: [hard_clip_min, hard_clip_max] holds no probability "
                             f"mass of the normal, got [{low!r}, {high!r}]")

    def pdf(self, x: float) -> float:
        t = (x - self.mu) / self.sigma
        return _phi(t) / (self.sigma * self.z) if self.a <= t <= self.b else 0.0

    def cdf(self, x: float) -> float:
        t = (x - self.mu) / self.sigma
        return 0.0 if t <= self.a else 1.0 if t >= self.b else min(_mass(self.a, t) / self.z, 1.0)

    def mean(self) -> float:
        return self.mu + self.sigma * (_phi(self.a) - _phi(self.b)) / self.z

    def std(self) -> float:
        def t_phi(t: float) -> float:
            return 0.0 if math.isinf(t) else t * _phi(t)
        shift = (_phi(self.a) - _phi(self.b)) / self.z
        var = 1.0 + (t_phi(self.a) - t_phi(self.b)) / self.z - shift * shift
        return self.sigma * math.sqrt(max(var, 0.0))

    def mgf(self, t: float) -> float:
        """E[exp(t X)]."""
        st = self.sigma * t
        return (math.exp(self.mu * t + st * st / 2)
                * _mass(self.a - st, self.b - st) / self.z)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if math.isinf(self.a) and math.isinf(self.b):
            return rng.normal(self.mu, self.sigma, size=n)
        u = rng.uniform(size=n)
        if self.a > 0:  # upper tail: invert the mirrored (lower-tail) problem for precision
            t = -_norm_ppf(_big_phi(-self.b) + u * self.z)
        else:
            t = _norm_ppf(_big_phi(self.a) + u * self.z)
        return np.clip(self.mu + self.sigma * t, self.low, self.high)


def _hard_clips(owner: str, hard_clip_min: Optional[float], hard_clip_max: Optional[float],
                lowest: float) -> tuple:
    """The clip bounds as floats or None, checked: each >= ``lowest`` and min < max."""
    clips = {"hard_clip_min": hard_clip_min, "hard_clip_max": hard_clip_max}
    for name, value in clips.items():
        if value is not None:
            clips[name] = _number(owner, name, value)
            if clips[name] < lowest:
                raise ValueError(f"{owner}: {name} must be >= {lowest}, got {value!r}")
    low, high = clips["hard_clip_min"], clips["hard_clip_max"]
    if low is not None and high is not None and not low < high:
        raise ValueError(f"{owner}: hard_clip_min must be < hard_clip_max, got "
                         f"hard_clip_min={hard_clip_min!r}, hard_clip_max={hard_clip_max!r}")
    return low, high


def _positive_std(owner: str, name: str, value: Any) -> float:
    std = _number(owner, name, value)
    if not std > 0:
        raise ValueError(f"{owner}: {name} must be > 0, got {value!r}")
    return std


class Normal(ContinuousDistribution):
    """Normal(``mean``, ``std``), truncated to [``hard_clip_min``, ``hard_clip_max``] if given."""

    def __init__(self, mean: float, std: float, hard_clip_min: Optional[float] = None,
                 hard_clip_max: Optional[float] = None):
        self.loc = _number("Normal", "mean", mean)
        self.scale = _positive_std("Normal", "std", std)
        self.hard_clip_min, self.hard_clip_max = _hard_clips(
            "Normal", hard_clip_min, hard_clip_max, -math.inf)
        self._math = _TruncatedNormalMath("Normal", self.loc, self.scale, self.min(), self.max())

    def _sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self._math.sample(rng, n)

    def pdf(self, x: float) -> float:
        return self._math.pdf(x)

    def cdf(self, x: float) -> float:
        return self._math.cdf(x)

    def min(self) -> float:
        return -math.inf if self.hard_clip_min is None else self.hard_clip_min

    def max(self) -> float:
        return math.inf if self.hard_clip_max is None else self.hard_clip_max

    def mean(self) -> float:
        return self._math.mean()

    def std(self) -> float:
        return self._math.std()

    def _params(self) -> dict:
        return {"mean": self.loc, "std": self.scale,
                "hard_clip_min": self.hard_clip_min, "hard_clip_max": self.hard_clip_max}


class LogNormal(ContinuousDistribution):
    """``2 ** y`` with y ~ Normal(``log2_space_mean``, ``log2_space_std``).

    ``hard_clip_min`` / ``hard_clip_max`` truncate the distribution in value space (not log2).
    """

    def __init__(self, log2_space_mean: float, log2_space_std: float,
                 hard_clip_min: Optional[float] = None, hard_clip_max: Optional[float] = None):
        self.log2_space_mean = _number("LogNormal", "log2_space_mean", log2_space_mean)
        self.log2_space_std = _positive_std("LogNormal", "log2_space_std", log2_space_std)
        self.hard_clip_min, self.hard_clip_max = _hard_clips(
            "LogNormal", hard_clip_min, hard_clip_max, 0.0)
        self._math = _TruncatedNormalMath("LogNormal", self.log2_space_mean, self.log2_space_std,
                                          self._log2(self.min()), self._log2(self.max()))

    @staticmethod
    def _log2(x: float) -> float:
        return -math.inf if x == 0 else math.log2(x)

    def _sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.clip(np.exp2(self._math.sample(rng, n)), self.min(), self.max())

    def __contains__(self, value: Any) -> bool:
        return super().__contains__(value) and value > 0

    def pdf(self, x: float) -> float:
        return self._math.pdf(math.log2(x)) / (x * _LN2) if x > 0 else 0.0

    def cdf(self, x: float) -> float:
        return self._math.cdf(math.log2(x)) if x > 0 else 0.0

    def min(self) -> float:
        return 0.0 if self.hard_clip_min is None else self.hard_clip_min

    def max(self) -> float:
        return math.inf if self.hard_clip_max is None else self.hard_clip_max

    def mean(self) -> float:
        return self._math.mgf(_LN2)

    def std(self) -> float:
        return math.sqrt(max(self._math.mgf(2 * _LN2) - self.mean() ** 2, 0.0))

    def _params(self) -> dict:
        return {"log2_space_mean": self.log2_space_mean, "log2_space_std": self.log2_space_std,
                "hard_clip_min": self.hard_clip_min, "hard_clip_max": self.hard_clip_max}


# --------------------------------------------------------------------------- JSON

def distribution_from_json_dict(d: dict) -> HyperparameterDistribution:
    """Rebuild a distribution from the output of its ``to_json_dict()``."""
    if not isinstance(d, dict) or not isinstance(d.get("type"), str):
        raise ValueError("distribution_from_json_dict: expected a dict with a str 'type' key, "
                         f"got {d!r}")
    if d["type"] == "ScipyDistribution":
        import stepline.hyperparams.scipy_distribution  # noqa: F401 - registers the type
    known = {name: cls for name, cls in _REGISTRY.items() if not inspect.isabstract(cls)}
    cls = known.get(d["type"])
    if cls is None:
        raise ValueError(f"distribution_from_json_dict: unknown distribution type {d['type']!r}; "
                         f"known types: {sorted(known)}")
    params = {key: value for key, value in d.items() if key != "type"}
    try:
        return cls._from_json_params(params)
    except (TypeError, KeyError) as error:
        raise ValueError(f"distribution_from_json_dict: cannot build {d['type']} from "
                         f"{params!r}: {error}") from error


def __getattr__(name: str) -> Any:
    """Load :class:`ScipyDistribution` (and with it, on use, scipy) only when asked for."""
    if name == "ScipyDistribution":
        from stepline.hyperparams.scipy_distribution import ScipyDistribution
        return ScipyDistribution
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
