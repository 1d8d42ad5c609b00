"""``DistributionMixture``: a weighted mixture of continuous distributions."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from stepline.hyperparams.continuous import Normal
from stepline.hyperparams.distribution_base import ContinuousDistribution, HyperparameterDistribution


class DistributionMixture(ContinuousDistribution):
    """``DistributionMixture([d1, d2], [a1, a2])``: draws from ``d_i`` with probability ``a_i / sum(a)``.

    ``pdf``, ``cdf``, ``mean``, ``var``/``std``, ``min`` and ``max`` are those of the mixture.
    """

    def __init__(self, distributions: Sequence[HyperparameterDistribution], distribution_amplitudes: Sequence[float]):
        self.distributions = list(distributions)
        amplitudes = np.asarray(distribution_amplitudes, dtype=float)
        if not self.distributions or len(self.distributions) != len(amplitudes):
            raise ValueError("DistributionMixture: give as many amplitudes as distributions (at least one), got "
                             f"{len(self.distributions)} distributions and {len(amplitudes)} amplitudes")
        if not all(isinstance(d, ContinuousDistribution) for d in self.distributions):
            raise TypeError("DistributionMixture mixes continuous distributions only, got "
                            f"{[type(d).__name__ for d in self.distributions]}")
        if np.any(amplitudes < 0) or not amplitudes.sum() > 0:
            raise ValueError(f"DistributionMixture: amplitudes must be >= 0 with a positive sum, got {list(amplitudes)}")
        self.distribution_amplitudes = (amplitudes / amplitudes.sum()).tolist()

    @staticmethod
    def build_gaussian_mixture(distribution_amplitudes, means, stds, distributions_mins=None, distributions_max=None,
                               use_logs: bool = False, use_quantized_distributions: bool = False
                               ) -> "DistributionMixture":
        """A mixture of :class:`Normal` distributions, each optionally clipped to ``[min, max]``."""
        n = len(means)
        mins = distributions_mins if distributions_mins is not None else [None] * n
        maxs = distributions_max if distributions_max is not None else [None] * n
        normals = [Normal(m, s, hard_clip_min=lo, hard_clip_max=hi) for m, s, lo, hi in zip(means, stds, mins, maxs)]
        return DistributionMixture(normals, distribution_amplitudes)

    def _sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        which = rng.choice(len(self.distributions), size=n, p=self.distribution_amplitudes)
        out = np.empty(n, dtype=float)
        for i, dist in enumerate(self.distributions):
            picked = which == i
            if picked.any():
                out[picked] = dist.rvs_many(int(picked.sum()), rng)
        return out

    def _weighted(self, values) -> float:
        return float(sum(w * v for w, v in zip(self.distribution_amplitudes, values)))

    def pdf(self, x: float) -> float:
        return self._weighted(d.pdf(x) for d in self.distributions)

    def cdf(self, x: float) -> float:
        return self._weighted(d.cdf(x) for d in self.distributions)

    def min(self) -> float:
        return min(d.min() for d in self.distributions)

    def max(self) -> float:
        return max(d.max() for d in self.distributions)

    def mean(self) -> float:
        return self._weighted(d.mean() for d in self.distributions)

    def var(self) -> float:
        second_moment = self._weighted(d.std() ** 2 + d.mean() ** 2 for d in self.distributions)
        return second_moment - self.mean() ** 2

    def std(self) -> float:
        return math.sqrt(self.var())

    def __contains__(self, value: Any) -> bool:
        return any(value in d for d in self.distributions)

    def _params(self) -> dict:
        return {"distributions": self.distributions, "distribution_amplitudes": self.distribution_amplitudes}

    def to_json_dict(self) -> dict:
        return {"type": "DistributionMixture", "distributions": [d.to_json_dict() for d in self.distributions],
                "distribution_amplitudes": self.distribution_amplitudes}

    @classmethod
    def _from_json_params(cls, params: dict) -> "DistributionMixture":
        from stepline.hyperparams.distribution_base import distribution_from_json_dict
        return cls([distribution_from_json_dict(d) for d in params["distributions"]], params["distribution_amplitudes"])
