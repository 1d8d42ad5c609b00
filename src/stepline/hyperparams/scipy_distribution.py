"""Any frozen ``scipy.stats`` distribution as a hyperparameter distribution.

scipy is imported when a :class:`ScipyDistribution` is built, never at import time, so the rest
of stepline works without it. Import it from ``stepline.hyperparams.distributions``.
"""
from __future__ import annotations

import math
from typing import Any, Union

import numpy as np

from stepline.hyperparams.distribution_base import HyperparameterDistribution, _is_real, _plain

__all__ = ["ScipyDistribution"]


def _stats() -> Any:
    """The ``scipy.stats`` module, with a clear error when scipy is missing."""
    try:
        import scipy.stats
    except ImportError as error:
        raise ImportError("ScipyDistribution needs scipy: pip install scipy") from error
    return scipy.stats


def _json_value(value: Any) -> Any:
    """A numpy scalar or array as its Python value or list; anything else unchanged."""
    return value.tolist() if isinstance(value, np.ndarray) else _plain(value)


class ScipyDistribution(HyperparameterDistribution):
    """A frozen scipy distribution, e.g. ``ScipyDistribution(scipy.stats.gamma(2.0, scale=3.0))``.

    Continuous ones offer ``pdf``, discrete ones ``pmf``; both offer ``cdf``, ``min``, ``max``,
    ``mean`` and ``std``. JSON keeps the scipy name and arguments, so only distributions
    published in ``scipy.stats`` with JSON-safe arguments serialise.
    """

    def __init__(self, frozen_scipy_dist: Any):
        stats = _stats()
        generator = getattr(frozen_scipy_dist, "dist", None)
        if not isinstance(generator, (stats.rv_continuous, stats.rv_discrete)):
            raise ValueError("ScipyDistribution: frozen_scipy_dist must be a frozen scipy.stats "
                             f"distribution such as scipy.stats.gamma(2.0), got "
                             f"{frozen_scipy_dist!r}")
        self.frozen = frozen_scipy_dist
        self.is_continuous = isinstance(generator, stats.rv_continuous)

    @property
    def name(self) -> str:
        """The scipy name of the distribution, e.g. ``"gamma"``."""
        return self.frozen.dist.name

    def _sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.asarray(self.frozen.rvs(size=n, random_state=rng))

    def __contains__(self, value: Any) -> bool:
        value = _plain(value)
        if not _is_real(value) or not math.isfinite(value):
            return False
        in_range = self.min() <= value <= self.max()
        return in_range and (self.is_continuous or float(value).is_integer())

    def pdf(self, x: float) -> float:
        """Probability density at ``x`` (continuous distributions only)."""
        if not self.is_continuous:
            raise TypeError(f"{self!r} is discrete: use pmf()")
        return float(self.frozen.pdf(x))

    def pmf(self, value: Any) -> float:
        """Probability of drawing ``value`` (discrete distributions only)."""
        if self.is_continuous:
            raise TypeError(f"{self!r} is continuous: use pdf()")
        return float(self.frozen.pmf(_plain(value))) if value in self else 0.0

    def cdf(self, x: float) -> float:
        """Probability of a draw <= ``x``."""
        return float(self.frozen.cdf(x))

    def _bound(self, value: Any) -> Union[int, float]:
        value = float(value)
        return value if self.is_continuous or math.isinf(value) else int(value)

    def min(self) -> Union[int, float]:
        """Lower bound of the support (may be ``-inf``)."""
        return self._bound(self.frozen.support()[0])

    def max(self) -> Union[int, float]:
        """Upper bound of the support (may be ``inf``)."""
        return self._bound(self.frozen.support()[1])

    def mean(self) -> float:
        """Expected value."""
        return float(self.frozen.mean())

    def std(self) -> float:
        """Standard deviation."""
        return float(self.frozen.std())

    def _params(self) -> dict:
        return {"name": self.name,
                "args": [_json_value(arg) for arg in self.frozen.args],
                "kwds": {key: _json_value(value) for key, value in self.frozen.kwds.items()}}

    def to_json_dict(self) -> dict:
        """``{"type": "ScipyDistribution", "name": ..., "args": [...], "kwds": {...}}``."""
        published = getattr(_stats(), self.name, None) if isinstance(self.name, str) else None
        if type(published) is not type(self.frozen.dist):
            raise ValueError(f"ScipyDistribution: {self.name!r} is not a distribution of "
                             "scipy.stats, so it cannot be rebuilt from JSON")
        return super().to_json_dict()

    @classmethod
    def _from_json_params(cls, params: dict) -> ScipyDistribution:
        stats = _stats()
        generator = getattr(stats, str(params["name"]), None)
        if not isinstance(generator, (stats.rv_continuous, stats.rv_discrete)):
            raise ValueError(f"ScipyDistribution: name must be a scipy.stats distribution, "
                             f"got {params['name']!r}")
        return cls(generator(*params.get("args", []), **params.get("kwds", {})))

    def __repr__(self) -> str:
        params = self._params()
        args = [repr(arg) for arg in params["args"]]
        args += [f"{key}={value!r}" for key, value in params["kwds"].items()]
        return f"ScipyDistribution(scipy.stats.{self.name}({', '.join(args)}))"
