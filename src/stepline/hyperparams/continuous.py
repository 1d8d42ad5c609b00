"""Continuous hyperparameter distributions: uniform, log-uniform, (truncated) normal and log-normal."""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from stepline.hyperparams.distribution_base import (  # noqa: F401
    _INV_SQRT_2PI, _LN2, _SQRT2, ContinuousDistribution, DiscreteDistribution, HyperparameterDistribution,
    RandomState, _check_json_safe, _integer, _is_int, _is_real, _number, _plain, _rng, _same,
    distribution_from_json_dict)


# -------------------------------------------------------------- continuous: uniform

class Uniform(ContinuousDistribution):
    """Uniform over [``low``, ``high``] (Neuraxle's ``min_included``/``max_included`` accepted too)."""

    def __init__(self, low: float = None, high: float = None, *, min_included: float = None,
                 max_included: float = None):
        low = min_included if low is None else low
        high = max_included if high is None else high
        if low is None or high is None:
            raise TypeError("Uniform() needs low and high (or min_included and max_included)")
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
