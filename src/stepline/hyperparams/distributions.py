"""Hyperparameter distributions: the values a hyperparameter may take, and how to draw them.

Every distribution draws values (``rvs`` / ``rvs_many``, reproducible from an int seed, a
``numpy.random.Generator`` or a ``numpy.random.RandomState``), answers ``value in dist``, compares equal by type and constructor
arguments, and round-trips through JSON (``to_json_dict`` / :func:`distribution_from_json_dict`).
Continuous distributions add ``pdf``/``cdf``/``min``/``max``/``mean``/``std``; discrete ones
add ``pmf``/``probabilities`` and, where the values are numbers, ``min``/``max``/``mean``/``std``.

The math is plain Python: scipy is only needed by :class:`ScipyDistribution`, which lives in
``stepline.hyperparams.scipy_distribution`` and is loaded on first use.
"""
from __future__ import annotations

from typing import Any

from stepline.hyperparams.continuous import LogNormal, LogUniform, Normal, Uniform
from stepline.hyperparams.discrete import Boolean, Choice, FixedHyperparameter, PriorityChoice, Quantized, RandInt
from stepline.hyperparams.distribution_base import (ContinuousDistribution, DiscreteDistribution,
                                                    HyperparameterDistribution, RandomState,
                                                    distribution_from_json_dict)
from stepline.hyperparams.mixture import DistributionMixture

__all__ = [
    "RandomState", "HyperparameterDistribution", "ContinuousDistribution",
    "DiscreteDistribution", "FixedHyperparameter", "Boolean", "Choice", "PriorityChoice",
    "RandInt", "Quantized", "Uniform", "LogUniform", "Normal", "LogNormal",
    "ScipyDistribution", "distribution_from_json_dict", "DistributionMixture", "get_index_in_list_with_bool",
]



def get_index_in_list_with_bool(choice_list: list, value: Any) -> int:
    """The index of ``value`` in ``choice_list``, where ``True`` is not ``1`` (Neuraxle's helper)."""
    for i, choice in enumerate(choice_list):
        if choice == value and isinstance(choice, bool) == isinstance(value, bool):
            return i
    raise ValueError(f"{value!r} is not in {choice_list!r}")


def __getattr__(name: str) -> Any:
    """Load :class:`ScipyDistribution` (and with it, on use, scipy) only when asked for."""
    if name == "ScipyDistribution":
        from stepline.hyperparams.scipy_distribution import ScipyDistribution
        return ScipyDistribution
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
