"""scipy-backed distributions under Neuraxle's names (``neuraxle.hyperparams.scipy_distributions``).

Every one is a :class:`~stepline.hyperparams.scipy_distribution.ScipyDistribution`, so it
samples reproducibly and fits in a ``HyperparameterSpace``; every other scipy method
(``logpdf``, ``ppf``, ``sf``, ``moment``, ``entropy``, ``interval``, ``support``, …) is
forwarded to the frozen scipy distribution. ``null_default_value`` is the value the
hyperparameter takes when its step is disabled.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from stepline.hyperparams.distribution_base import HyperparameterDistribution
from stepline.hyperparams.scipy_distribution import ScipyDistribution

_FORWARDED = {"logpdf", "logpmf", "logcdf", "sf", "logsf", "ppf", "isf", "moment", "stats", "entropy",
              "median", "var", "expect", "interval", "support"}


class _ScipyWrapper(ScipyDistribution):
    """A frozen scipy distribution, scipy's methods forwarded, JSON from the constructor arguments."""

    def _init(self, frozen, null_default_value, params: dict) -> None:
        super().__init__(frozen)
        self.null_default_value = null_default_value
        self._ctor = dict(params)

    def __getattr__(self, item):
        if item in _FORWARDED and "frozen" in self.__dict__:
            return getattr(self.frozen, item)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {item!r}")

    def rvs(self, random_state=None):
        if random_state is None:  # scipy's own global state, as Neuraxle draws
            value = self.frozen.rvs()
            return value.item() if hasattr(value, "item") else value
        return super().rvs(random_state)

    def _params(self) -> dict:
        return dict(self._ctor)

    def to_json_dict(self) -> dict:
        return HyperparameterDistribution.to_json_dict(self)

    @classmethod
    def _from_json_params(cls, params: dict):
        return cls(**params)

    def __repr__(self) -> str:
        return HyperparameterDistribution.__repr__(self)


class ScipyContinuousDistributionWrapper(_ScipyWrapper):
    """Any continuous scipy distribution: ``ScipyContinuousDistributionWrapper(scipy.stats.gamma, a=2)``."""

    def __init__(self, scipy_distribution, null_default_value=None, **kwargs):
        frozen = scipy_distribution(**kwargs) if kwargs or isinstance(scipy_distribution, stats.rv_continuous) \
            else scipy_distribution
        self._init(frozen, null_default_value, {})


class ScipyDiscreteDistributionWrapper(_ScipyWrapper):
    """Any discrete scipy distribution: ``ScipyDiscreteDistributionWrapper(scipy.stats.randint, low=0, high=5)``."""

    def __init__(self, scipy_distribution, null_default_value=None, **kwargs):
        frozen = scipy_distribution(**kwargs) if kwargs or isinstance(scipy_distribution, stats.rv_discrete) \
            else scipy_distribution
        self._init(frozen, null_default_value, {})

    def pdf(self, x):
        return self.pmf(x)


def _check_bounds(owner: str, low, high) -> None:
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ValueError(f"{owner}: min_included must be finite and below max_included, got {low!r}, {high!r}")


class _StandardNormalOnInterval(stats.rv_continuous):
    """The standard normal density, not renormalised, on ``[a, b]`` (Neuraxle's Gaussian)."""

    def _pdf(self, x):
        return np.exp(-x ** 2 / 2.0) / np.sqrt(2.0 * np.pi)


class Gaussian(_ScipyWrapper):
    """The standard normal density restricted to ``[min_included, max_included]``."""

    def __init__(self, min_included: float, max_included: float, null_default_value=None):
        _check_bounds("Gaussian", min_included, max_included)
        self.min_included, self.max_included = min_included, max_included
        frozen = _StandardNormalOnInterval(a=min_included, b=max_included, name="gaussian")()
        self._init(frozen, null_default_value, dict(min_included=min_included, max_included=max_included,
                                                    null_default_value=null_default_value))


class _PoissonOnInterval(stats.rv_discrete):
    def _pmf(self, k, mu):
        return stats.poisson.pmf(k, mu)


class Poisson(_ScipyWrapper):
    """The Poisson mass of mean ``mu`` restricted to the integers of ``[min_included, max_included]``."""

    def __init__(self, min_included: float, max_included: float, null_default_value=None, mu: float = 0.6):
        _check_bounds("Poisson", min_included, max_included)
        self.min_included, self.max_included, self.mu = min_included, max_included, mu
        frozen = _PoissonOnInterval(a=int(math.ceil(min_included)), b=int(math.floor(max_included)),
                                    name="poisson")(mu)
        self._init(frozen, null_default_value, dict(min_included=min_included, max_included=max_included,
                                                    null_default_value=null_default_value, mu=mu))

    def pdf(self, x):
        return self.pmf(x)

    def probabilities(self) -> dict:
        """Every integer of the support mapped to its probability."""
        low, high = self.frozen.support()
        return {int(k): float(self.pmf(k)) for k in range(int(low), int(high) + 1)}


class Histogram(_ScipyWrapper):
    """The distribution of a histogram, as ``np.histogram(data, bins)`` returns it."""

    def __init__(self, histogram, null_default_value=None, **kwargs):
        counts, edges = (np.asarray(part, dtype=float) for part in histogram)
        frozen = stats.rv_histogram((counts, edges), **kwargs).freeze()
        self._init(frozen, null_default_value, dict(histogram=[counts.tolist(), edges.tolist()],
                                                    null_default_value=null_default_value))


class ScipyLogUniform(_ScipyWrapper):
    """Log-uniform on ``[min_included, max_included]`` (both > 0)."""

    def __init__(self, min_included: float, max_included: float, null_default_value=None):
        _check_bounds("ScipyLogUniform", min_included, max_included)
        if min_included <= 0:
            raise ValueError(f"ScipyLogUniform: min_included must be > 0, got {min_included!r}")
        self.min_included, self.max_included = min_included, max_included
        self._init(stats.loguniform(min_included, max_included), null_default_value,
                   dict(min_included=min_included, max_included=max_included, null_default_value=null_default_value))


class StdMeanLogNormal(_ScipyWrapper):
    """Log-normal given by the mean and std of ``log2(x)``, optionally clipped to hard bounds."""

    def __init__(self, log2_space_mean: float, log2_space_std: float, hard_clip_min=None, hard_clip_max=None,
                 null_default_value=None):
        if not log2_space_std > 0:
            raise ValueError(f"StdMeanLogNormal: log2_space_std must be > 0, got {log2_space_std!r}")
        self.log2_space_mean, self.log2_space_std = log2_space_mean, log2_space_std
        self.hard_clip_min, self.hard_clip_max = hard_clip_min, hard_clip_max
        sigma = log2_space_std * math.log(2)
        scale = 2 ** log2_space_mean
        base = stats.lognorm(s=sigma, scale=scale)
        low = 0 if hard_clip_min is None else max(hard_clip_min, 0)
        high = math.inf if hard_clip_max is None else hard_clip_max
        if low > 0 or high < math.inf:
            frozen = _truncated(base, low, high)
        else:
            frozen = base
        self._init(frozen, null_default_value, dict(log2_space_mean=log2_space_mean, log2_space_std=log2_space_std,
                                                    hard_clip_min=hard_clip_min, hard_clip_max=hard_clip_max,
                                                    null_default_value=null_default_value))


class _Truncated(stats.rv_continuous):
    """A frozen distribution restricted to ``[a, b]`` and renormalised (picklable)."""

    def __init__(self, base=None, **kwargs):
        super().__init__(**kwargs)
        self.base = base

    def _updated_ctor_param(self):  # scipy rebuilds the class from these (freezing, unpickling)
        params = super()._updated_ctor_param()
        params["base"] = self.base
        return params

    def _mass(self):
        low = self.base.cdf(self.a)
        return low, self.base.cdf(self.b) - low

    def _pdf(self, x):
        return self.base.pdf(x) / self._mass()[1]

    def _cdf(self, x):
        low, mass = self._mass()
        return (self.base.cdf(x) - low) / mass

    def _ppf(self, q):  # scipy samples by inverting the cdf: keep it closed-form
        low, mass = self._mass()
        return self.base.ppf(low + q * mass)


def _truncated(base, low, high):
    return _Truncated(base, a=low, b=high, name="truncated")()


__all__ = ["ScipyContinuousDistributionWrapper", "ScipyDiscreteDistributionWrapper", "Gaussian", "Poisson",
           "Histogram", "ScipyLogUniform", "StdMeanLogNormal"]
