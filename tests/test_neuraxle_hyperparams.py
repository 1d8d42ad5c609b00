"""Neuraxle's hyperparameter names: scipy distributions, var/pdf, mixtures, separators."""
import json
import pickle

import numpy as np
import pytest

from stepline.base import _RecursiveArguments
from stepline.hyperparams.distributions import (Boolean, DistributionMixture, Normal, RandInt, Uniform,
                                                distribution_from_json_dict, get_index_in_list_with_bool)
from stepline.hyperparams.space import HyperparameterSamples, HyperparameterSpace, RecursiveDict

scipy_distributions = pytest.importorskip("stepline.hyperparams.scipy_distributions")


def test_scipy_wrappers_sample_and_forward_scipy_methods():
    g = scipy_distributions.Gaussian(min_included=0, max_included=10, null_default_value=0)
    assert g.support() == (0, 10) and np.isclose(g.logpdf(5), -13.418938533204672)
    assert 0 <= g.rvs() <= 10 and g.rvs(random_state=3) == g.rvs(random_state=3)
    assert np.isclose(g.var(), g.std() ** 2) and g.null_default_value == 0
    p = scipy_distributions.Poisson(0.0, 10.0, null_default_value=0.0, mu=5.0)
    assert p.pdf(3) == p.pmf(3) == p.probabilities()[3] and 0 <= p.rvs(random_state=0) <= 10
    h = scipy_distributions.Histogram(np.histogram(np.random.default_rng(0).normal(size=200), bins=10))
    assert h.min() <= h.rvs(random_state=1) <= h.max()
    log_uniform = scipy_distributions.ScipyLogUniform(min_included=0.001, max_included=10)
    assert 0.001 <= log_uniform.rvs(random_state=0) <= 10
    clipped = scipy_distributions.StdMeanLogNormal(log2_space_mean=0.0, log2_space_std=1.0, hard_clip_min=0.5,
                                                   hard_clip_max=4)
    assert 0.5 <= clipped.rvs(random_state=0) <= 4
    assert pickle.loads(pickle.dumps(clipped)).rvs(random_state=0) == clipped.rvs(random_state=0)


def test_scipy_wrappers_round_trip_through_json_and_spaces():
    space = HyperparameterSpace({"a": scipy_distributions.Gaussian(-1, 1), "b": RandInt(1, 3)})
    assert HyperparameterSpace.from_json(space.to_json()) == space
    assert -1 <= space.rvs(random_state=0)["a"] <= 1
    wrapper = scipy_distributions.ScipyContinuousDistributionWrapper(__import__("scipy").stats.gamma, a=2.0)
    assert wrapper.rvs(random_state=0) > 0


def test_var_on_every_distribution_and_pdf_on_discrete_ones():
    assert np.isclose(Uniform(0, 1).var(), 1 / 12) and np.isclose(RandInt(1, 3).var(), 2 / 3)
    assert RandInt(1, 3).pdf(2) == RandInt(1, 3).pmf(2) and Boolean().pdf(True) == 0.5


def test_neuraxle_constructor_keywords():
    assert Uniform(min_included=0, max_included=2) == Uniform(0, 2)
    assert RandInt(1, 3, null_default_value=0).null_default_value == 0
    with pytest.raises(TypeError, match="needs low and high"):
        Uniform(min_included=0)
    assert Uniform(0, 1).rvs_many(size=4, random_state=0).shape == (4,)


def test_distribution_mixture():
    hd = DistributionMixture.build_gaussian_mixture([1, 1, 1], [-2, 0, 2], [1, 1, 1])
    assert np.isclose(hd.mean(), 0.0) and np.isclose(hd.var(), 11 / 3) and np.isclose(hd.cdf(0.0), 0.5)
    assert hd.min() == -np.inf and np.isclose(hd.pdf(-2.0), 0.1510223590467952)
    samples = hd.rvs_many(4000, random_state=0)
    assert abs(np.var(samples) - 11 / 3) < 0.3
    assert distribution_from_json_dict(json.loads(json.dumps(hd.to_json_dict()))) == hd
    with pytest.raises(ValueError, match="as many amplitudes"):
        DistributionMixture([Normal(0, 1)], [1, 2])


def test_recursive_dict_separator_and_root_level():
    rd = RecursiveDict(separator=".", hp=1, stepa={"hp": 2, "stepb": {"hp": 3}})
    assert rd.to_flat_dict() == {"hp": 1, "stepa.hp": 2, "stepa.stepb.hp": 3}
    assert rd["stepa"]["stepb"]["hp"] == 3 and rd[None] == {"hp": 1}
    assert rd.to_nested_dict() == {"hp": 1, "stepa": {"hp": 2, "stepb": {"hp": 3}}}
    assert pickle.loads(pickle.dumps(rd)).separator == "."
    assert dict(HyperparameterSamples({"a__b": 1}).iter_flat()) == {"a__b": 1}


def test_helpers():
    assert get_index_in_list_with_bool([1, True, 0], True) == 1 and get_index_in_list_with_bool([True, 1], 1) == 1
    ra = _RecursiveArguments(kwargs={"hyperparams": HyperparameterSamples({"hp": 0, "a__hp": 1, "a__b__hp": 2})})
    assert ra[None].kwargs["hyperparams"] == {"hp": 0}
    assert ra["a"].kwargs["hyperparams"] == {"hp": 1, "b__hp": 2}
