"""Tests of stepline.hyperparams.distributions, with scipy.stats as the oracle."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.integrate
import scipy.stats as st
from hypothesis import given, settings
from hypothesis import strategies as hs

import stepline.hyperparams.distributions as dists
from stepline.hyperparams.distributions import (
    Boolean, Choice, FixedHyperparameter, HyperparameterDistribution, LogNormal, LogUniform,
    Normal, PriorityChoice, Quantized, RandInt, ScipyDistribution, Uniform,
    distribution_from_json_dict,
)

LN2 = math.log(2.0)
N = 10_000

ALL = [
    FixedHyperparameter(3), FixedHyperparameter("adam"), Boolean(), Boolean(0.2),
    Choice(["l1", "l2"]), Choice([1, 2.5, "x", None], probas=[0.1, 0.2, 0.3, 0.4]),
    PriorityChoice(["a", "b", "c"]), RandInt(20, 200), Uniform(-1.0, 3.0),
    LogUniform(0.01, 10.0), Normal(0.0, 1.0), Normal(1.0, 2.0, hard_clip_min=0.0),
    Normal(1.0, 2.0, hard_clip_min=0.0, hard_clip_max=4.0), LogNormal(0.0, 1.0),
    LogNormal(1.0, 2.0, hard_clip_min=0.5, hard_clip_max=16.0), Quantized(Uniform(0.2, 9.7)),
    Quantized(Normal(5.0, 2.0)), ScipyDistribution(st.gamma(2.0, scale=3.0)),
    ScipyDistribution(st.poisson(4.0)),
]
CONTINUOUS = [d for d in ALL if d.is_continuous]
NON_DEGENERATE = [d for d in ALL if not isinstance(d, FixedHyperparameter)]
PLAIN_TYPES = (float, int, bool, str, type(None))


def ids(d):
    return repr(d)


def grid(d, n=41):
    """Points across (and just outside) the bulk of d's support."""
    low = d.min() if math.isfinite(d.min()) else d.mean() - 5 * d.std()
    high = d.max() if math.isfinite(d.max()) else d.mean() + 5 * d.std()
    pad = 0.1 * (high - low)
    return np.linspace(low - pad, high + pad, n)


# ------------------------------------------------------------------ common contract

@pytest.mark.parametrize("d", ALL, ids=ids)
def test_rvs_gives_plain_values_in_the_support(d):
    draws = [d.rvs(seed) for seed in range(50)]
    assert all(type(v) in PLAIN_TYPES for v in draws), {type(v) for v in draws}
    assert all(v in d for v in draws)


@pytest.mark.parametrize("d", ALL, ids=ids)
def test_rvs_many_gives_n_values_in_the_support(d):
    draws = d.rvs_many(500, random_state=0)
    assert isinstance(draws, (list, np.ndarray)) and len(draws) == 500
    assert all(v in d for v in draws)
    assert len(d.rvs_many(0, random_state=0)) == 0


@pytest.mark.parametrize("d", ALL, ids=ids)
def test_same_int_seed_or_generator_seed_gives_same_draws(d):
    assert list(d.rvs_many(20, 7)) == list(d.rvs_many(20, 7))
    assert d.rvs(7) == d.rvs(7)
    by_generator = d.rvs_many(20, np.random.default_rng(7))
    assert list(by_generator) == list(d.rvs_many(20, np.random.default_rng(7)))


@pytest.mark.parametrize("d", NON_DEGENERATE, ids=ids)
def test_seeds_and_a_shared_generator_vary_the_draws(d):
    assert list(d.rvs_many(30, 1)) != list(d.rvs_many(30, 2))
    rng = np.random.default_rng(3)
    assert list(d.rvs_many(30, rng)) != list(d.rvs_many(30, rng))
    assert len({repr(d.rvs()) for _ in range(30)}) > 1  # unseeded: fresh entropy


@pytest.mark.parametrize("d", ALL, ids=ids)
def test_json_round_trip(d):
    as_dict = d.to_json_dict()
    assert as_dict["type"] == type(d).__name__
    assert distribution_from_json_dict(as_dict) == d
    assert distribution_from_json_dict(json.loads(json.dumps(as_dict))) == d


@pytest.mark.parametrize("d", [d for d in ALL if not isinstance(d, ScipyDistribution)], ids=ids)
def test_repr_evaluates_back_to_an_equal_distribution(d):
    assert eval(repr(d), vars(dists)) == d  # noqa: S307 - our own repr


@pytest.mark.parametrize("d", ALL, ids=ids)
@pytest.mark.parametrize("value", [object(), "not-a-choice", [1, 2], {"a": 1}, float("nan"),
                                   float("inf"), np.array([1.0, 2.0])])
def test_wrong_values_are_not_in_the_support_and_do_not_raise(d, value):
    assert (value in d) is False


@pytest.mark.parametrize("bad", ["seed", 1.5, True])
def test_bad_random_state_is_refused(bad):
    with pytest.raises(TypeError, match="random_state"):
        Uniform(0, 1).rvs(random_state=bad)


@pytest.mark.parametrize("n", [-1, 2.0, "3"])
def test_bad_sample_count_is_refused(n):
    with pytest.raises(ValueError, match=r"Uniform\.rvs_many: n must be an int"):
        Uniform(0, 1).rvs_many(n)


@pytest.mark.parametrize("d, expected", [
    (Uniform(0, 1), {"type": "Uniform", "low": 0.0, "high": 1.0}),
    (Boolean(0.2), {"type": "Boolean", "proba_is_true": 0.2}),
    (Choice(["l1", "l2"]), {"type": "Choice", "choice_list": ["l1", "l2"], "probas": None}),
    (Normal(0, 1, hard_clip_max=2), {"type": "Normal", "mean": 0.0, "std": 1.0,
                                     "hard_clip_min": None, "hard_clip_max": 2.0}),
    (Quantized(Uniform(0, 1)),
     {"type": "Quantized", "hd": {"type": "Uniform", "low": 0.0, "high": 1.0}}),
    (ScipyDistribution(st.gamma(2.0, scale=3.0)),
     {"type": "ScipyDistribution", "name": "gamma", "args": [2.0], "kwds": {"scale": 3.0}}),
])
def test_to_json_dict_content(d, expected):
    assert d.to_json_dict() == expected


def test_equality_is_by_type_and_parameters():
    assert Uniform(0, 1) == Uniform(0.0, 1.0)
    assert Boolean(0.2) != Boolean(0.5) and Boolean(0.2) == Boolean(0.2)
    assert Normal(0, 1) != Normal(0, 1, hard_clip_min=-3)
    assert Choice(["a", "b"]) != Choice(["a", "b"], [0.3, 0.7])
    assert PriorityChoice(["a", "b"]) != PriorityChoice(["b", "a"])
    assert Uniform(0, 1) != Uniform(0, 2)
    assert Uniform(0, 1) != LogUniform(0.5, 1)
    assert Choice([True, False], [0.5, 0.5]) != Boolean()
    assert Quantized(Uniform(0, 3)) == Quantized(Uniform(0, 3))
    assert Quantized(Uniform(0, 3)) != Quantized(Uniform(0, 4))
    assert ScipyDistribution(st.gamma(2)) != ScipyDistribution(st.gamma(3))
    assert len({Uniform(0, 1), Uniform(0.0, 1.0), Uniform(0, 2)}) == 2


def test_repr_is_readable():
    assert repr(Uniform(0, 1)) == "Uniform(low=0.0, high=1.0)"
    assert repr(RandInt(20, 200)) == "RandInt(min_included=20, max_included=200)"
    assert repr(Quantized(Uniform(0, 1))) == "Quantized(hd=Uniform(low=0.0, high=1.0))"
    assert repr(ScipyDistribution(st.gamma(2.0, scale=3.0))) == (
        "ScipyDistribution(scipy.stats.gamma(2.0, scale=3.0))")


def test_seed_document_examples_build_positionally():
    space = {"C": LogUniform(0.01, 10.0), "fit_intercept": Boolean(), "dual": Boolean(),
             "penalty": Choice(["l1", "l2"]), "max_iter": RandInt(20, 200)}
    sample = {k: d.rvs(0) for k, d in space.items()}
    assert 0.01 <= sample["C"] <= 10.0 and isinstance(sample["C"], float)
    assert isinstance(sample["fit_intercept"], bool)
    assert sample["penalty"] in ("l1", "l2")
    assert isinstance(sample["max_iter"], int) and 20 <= sample["max_iter"] <= 200


# ------------------------------------------------------------------- bad arguments

@pytest.mark.parametrize("make, match", [
    (lambda: LogUniform(0, 1), r"LogUniform: min_included must be > 0, got 0"),
    (lambda: LogUniform(-2, 1), r"LogUniform: min_included must be > 0, got -2"),
    (lambda: LogUniform(2, 1), r"LogUniform: min_included must be < max_included.*=2.*=1"),
    (lambda: Uniform(2, 1), r"Uniform: low must be < high, got low=2, high=1"),
    (lambda: Uniform(1, 1), r"Uniform: low must be < high"),
    (lambda: Uniform("a", 1), r"Uniform: low must be a finite number, got 'a'"),
    (lambda: Uniform(0, math.inf), r"Uniform: high must be a finite number, got inf"),
    (lambda: Choice([]), r"Choice: choice_list must not be empty, got \[\]"),
    (lambda: Choice("ab"), r"Choice: choice_list must be a list, got 'ab'"),
    (lambda: Choice([1, 2], probas=[0.5, 0.6]), r"Choice: probas must sum to 1, got \[0.5, 0.6\]"),
    (lambda: Choice([1, 2], probas=[1.0]), r"Choice: probas must have one entry per choice \(2\)"),
    (lambda: Choice([1, 2], probas=[1.5, -0.5]), r"Choice: probas must all be >= 0"),
    (lambda: Choice([1, 2], probas=[0.5, "x"]), r"Choice: probas must be a finite number, got 'x'"),
    (lambda: Choice([1, 2], probas=0.5), r"Choice: probas must be a list of numbers, got 0.5"),
    (lambda: PriorityChoice([]), r"PriorityChoice: choice_list must not be empty"),
    (lambda: RandInt(5, 1), r"RandInt: min_included must be <= max_included.*=5.*=1"),
    (lambda: RandInt(1.5, 3), r"RandInt: min_included must be an int, got 1.5"),
    (lambda: Normal(0, -1), r"Normal: std must be > 0, got -1"),
    (lambda: Normal(0, 0), r"Normal: std must be > 0, got 0"),
    (lambda: Normal(0, 1, hard_clip_min=2, hard_clip_max=1),
     r"Normal: hard_clip_min must be < hard_clip_max, got hard_clip_min=2, hard_clip_max=1"),
    (lambda: Normal(0, 1, hard_clip_min=1, hard_clip_max=1), r"Normal: hard_clip_min must be <"),
    (lambda: Normal(0, 1, hard_clip_min=60), r"Normal: .*holds no probability mass"),
    (lambda: LogNormal(0, -1), r"LogNormal: log2_space_std must be > 0, got -1"),
    (lambda: LogNormal(0, 1, hard_clip_min=-1), r"LogNormal: hard_clip_min must be >= 0.0, got -1"),
    (lambda: LogNormal(0, 1, hard_clip_min=4, hard_clip_max=2),
     r"LogNormal: hard_clip_min must be < hard_clip_max"),
    (lambda: Boolean(1.5), r"Boolean: proba_is_true must be in \[0, 1\], got 1.5"),
    (lambda: Boolean(-0.1), r"Boolean: proba_is_true must be in \[0, 1\], got -0.1"),
    (lambda: Boolean("yes"), r"Boolean: proba_is_true must be a finite number, got 'yes'"),
    (lambda: Quantized(RandInt(0, 3)), r"Quantized: hd must be a continuous distribution"),
    (lambda: Quantized(3.0), r"Quantized: hd must be a continuous distribution.*got 3.0"),
    (lambda: ScipyDistribution(st.gamma), r"ScipyDistribution: frozen_scipy_dist must be"),
    (lambda: ScipyDistribution("gamma"), r"ScipyDistribution: frozen_scipy_dist must be"),
])
def test_bad_arguments_are_refused_with_a_clear_message(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("d", [
    {"type": "NoSuchDistribution", "x": 1}, {"low": 0.0}, "Uniform", None, {"type": 3},
    {"type": "ContinuousDistribution"}, {"type": "HyperparameterDistribution"},
])
def test_unknown_or_malformed_json_is_refused(d):
    with pytest.raises(ValueError, match="distribution_from_json_dict"):
        distribution_from_json_dict(d)


@pytest.mark.parametrize("d", [
    {"type": "Uniform", "low": 0.0}, {"type": "Uniform", "low": 0.0, "high": 1.0, "x": 2},
    {"type": "Quantized"}, {"type": "Quantized", "hd": {"type": "Uniform"}},
])
def test_json_with_wrong_parameters_is_refused(d):
    with pytest.raises(ValueError, match=r"distribution_from_json_dict: cannot build \w+ from"):
        distribution_from_json_dict(d)


def test_json_of_bad_values_inside_json_is_refused_by_the_constructor():
    with pytest.raises(ValueError, match="Uniform: low must be < high"):
        distribution_from_json_dict({"type": "Uniform", "low": 2.0, "high": 1.0})
    with pytest.raises(ValueError, match="ScipyDistribution: name must be a scipy.stats"):
        distribution_from_json_dict({"type": "ScipyDistribution", "name": "os", "args": []})


@pytest.mark.parametrize("d, match", [
    (FixedHyperparameter(object()), r"FixedHyperparameter: value holds <object"),
    (FixedHyperparameter((1, 2)), r"value holds \(1, 2\), which JSON cannot carry"),
    (Choice([1, {2: "a"}]), r"Choice: choice_list has the non-str key 2"),
    (ScipyDistribution(st.norm(np.array([0.0, 1.0]))), None),  # arrays become lists: fine
])
def test_to_json_refuses_what_json_cannot_carry(d, match):
    if match is None:
        assert distribution_from_json_dict(json.loads(json.dumps(d.to_json_dict()))) == d
        return
    with pytest.raises(ValueError, match=match):
        d.to_json_dict()


def test_scipy_distribution_not_in_scipy_stats_cannot_go_to_json():
    class Custom(st.rv_continuous):
        def _pdf(self, x):
            return np.exp(-x)

    d = ScipyDistribution(Custom(a=0.0, name="my_custom")())
    assert 1.0 in d and d.rvs(0) >= 0
    with pytest.raises(ValueError, match="'my_custom' is not a distribution of scipy.stats"):
        d.to_json_dict()


# ---------------------------------------------------- continuous: math against scipy

ORACLES = [
    (Uniform(-1.0, 3.0), st.uniform(-1.0, 4.0)),
    (LogUniform(0.01, 10.0), st.loguniform(0.01, 10.0)),
    (Normal(1.0, 2.0), st.norm(1.0, 2.0)),
    (Normal(1.0, 2.0, hard_clip_min=0.0, hard_clip_max=4.0), st.truncnorm(-0.5, 1.5, 1.0, 2.0)),
    (Normal(1.0, 2.0, hard_clip_min=0.0), st.truncnorm(-0.5, np.inf, 1.0, 2.0)),
    (Normal(1.0, 2.0, hard_clip_max=0.0), st.truncnorm(-np.inf, -0.5, 1.0, 2.0)),
    (Normal(0.0, 1.0, hard_clip_min=5.0, hard_clip_max=7.0), st.truncnorm(5.0, 7.0)),
    (Normal(0.0, 1.0, hard_clip_min=-9.0, hard_clip_max=-8.0), st.truncnorm(-9.0, -8.0)),
    (LogNormal(1.0, 0.5), st.lognorm(s=0.5 * LN2, scale=2.0)),
    (LogNormal(-3.0, 2.0), st.lognorm(s=2.0 * LN2, scale=2.0 ** -3)),
    (ScipyDistribution(st.gamma(2.0, scale=3.0)), st.gamma(2.0, scale=3.0)),
]


@pytest.mark.parametrize("d, oracle", ORACLES, ids=[repr(d) for d, _ in ORACLES])
def test_continuous_math_matches_scipy(d, oracle):
    xs = grid(d)
    assert [d.pdf(x) for x in xs] == pytest.approx(oracle.pdf(xs), rel=1e-7, abs=1e-12)
    assert [d.cdf(x) for x in xs] == pytest.approx(oracle.cdf(xs), rel=1e-7, abs=1e-12)
    assert d.mean() == pytest.approx(oracle.mean(), rel=1e-7)
    assert d.std() == pytest.approx(oracle.std(), rel=1e-6)
    low, high = oracle.support()
    assert (d.min(), d.max()) == pytest.approx((low, high))


TRUNCATED_LOGNORMALS = [
    LogNormal(1.0, 2.0, hard_clip_min=0.5, hard_clip_max=16.0),
    LogNormal(0.0, 1.0, hard_clip_min=1.5),
    LogNormal(3.0, 1.5, hard_clip_max=4.0),
]


@pytest.mark.parametrize("d", TRUNCATED_LOGNORMALS, ids=ids)
def test_truncated_lognormal_matches_transformed_scipy_truncnorm(d):
    mu, sigma = d.log2_space_mean, d.log2_space_std
    low = -np.inf if d.hard_clip_min is None else math.log2(d.hard_clip_min)
    high = np.inf if d.hard_clip_max is None else math.log2(d.hard_clip_max)
    y = st.truncnorm((low - mu) / sigma, (high - mu) / sigma, mu, sigma)
    xs = np.linspace(0.01, 20.0, 60)
    assert [d.pdf(x) for x in xs] == pytest.approx(y.pdf(np.log2(xs)) / (xs * LN2), abs=1e-12)
    assert [d.cdf(x) for x in xs] == pytest.approx(y.cdf(np.log2(xs)), abs=1e-12)
    bounds = {"lb": max(low, mu - 40 * sigma), "ub": min(high, mu + 40 * sigma)}
    mean = y.expect(lambda v: 2.0 ** v, **bounds)
    second = y.expect(lambda v: 4.0 ** v, **bounds)
    assert d.mean() == pytest.approx(mean, rel=1e-7)
    assert d.std() == pytest.approx(math.sqrt(second - mean ** 2), rel=1e-6)
    area, _ = scipy.integrate.quad(d.pdf, d.min(), min(d.max(), 1e4), limit=200)
    assert area == pytest.approx(1.0, abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(mu=hs.floats(-5, 5), sigma=hs.floats(0.1, 5),
       a=hs.floats(-6, 5.5), width=hs.floats(0.05, 6), x=hs.floats(-0.99, 0.99))
def test_truncated_normal_matches_scipy_truncnorm_everywhere(mu, sigma, a, width, x):
    b = a + width
    d = Normal(mu, sigma, hard_clip_min=mu + a * sigma, hard_clip_max=mu + b * sigma)
    oracle = st.truncnorm(a, b, mu, sigma)
    point = mu + (a + (x + 1) / 2 * width) * sigma
    assert d.pdf(point) == pytest.approx(oracle.pdf(point), rel=1e-6)
    assert d.cdf(point) == pytest.approx(oracle.cdf(point), rel=1e-6, abs=1e-12)
    assert d.mean() == pytest.approx(oracle.mean(), rel=1e-6, abs=1e-9 * sigma)
    assert d.std() == pytest.approx(oracle.std(), rel=1e-4)


@pytest.mark.parametrize("d", CONTINUOUS + TRUNCATED_LOGNORMALS, ids=ids)
def test_continuous_draws_follow_the_cdf_and_moments(d):
    draws = d.rvs_many(N, random_state=42)
    assert isinstance(draws, np.ndarray) and draws.shape == (N,)
    assert np.all((draws >= d.min()) & (draws <= d.max()))
    assert st.kstest(draws, np.vectorize(d.cdf)).pvalue > 1e-3
    assert np.mean(draws) == pytest.approx(d.mean(), abs=5 * d.std() / math.sqrt(N))
    assert np.std(draws) == pytest.approx(d.std(), rel=0.1)


def test_far_tail_truncation_samples_inside_the_bounds():
    d = Normal(0.0, 1.0, hard_clip_min=8.0, hard_clip_max=9.0)
    draws = d.rvs_many(N, random_state=0)
    assert draws.min() >= 8.0 and draws.max() <= 9.0
    assert np.mean(draws) == pytest.approx(st.truncnorm(8.0, 9.0).mean(), rel=1e-3)


@pytest.mark.parametrize("d, inside, outside", [
    (Uniform(0, 1), [0, 0.5, 1.0, np.float64(0.3)], [-0.01, 1.01, True]),
    (LogUniform(0.1, 10), [0.1, 3, 10], [0.0, 0.09, -1, 11]),
    (Normal(0, 1), [-1e6, 0, 1e6], [True, "0"]),
    (Normal(0, 1, hard_clip_min=-1, hard_clip_max=2), [-1, 0.0, 2], [-1.01, 2.01]),
    (LogNormal(0, 1), [1e-9, 1, 1e9], [0, 0.0, -1]),
    (LogNormal(0, 1, hard_clip_min=0.5, hard_clip_max=2), [0.5, 1, 2], [0.49, 2.01]),
])
def test_continuous_support(d, inside, outside):
    assert all(v in d for v in inside)
    assert not any(v in d for v in outside)


def test_continuous_pdf_and_cdf_outside_the_support():
    assert Uniform(0, 1).pdf(2) == 0.0 and Uniform(0, 1).cdf(2) == 1.0
    assert LogUniform(1, 2).pdf(0.5) == 0.0 and LogUniform(1, 2).cdf(0.5) == 0.0
    assert LogNormal(0, 1).pdf(-1) == 0.0 and LogNormal(0, 1).cdf(0) == 0.0
    clipped = Normal(0, 1, hard_clip_min=0, hard_clip_max=1)
    assert (clipped.pdf(-0.1), clipped.cdf(-0.1), clipped.cdf(1.1)) == (0.0, 0.0, 1.0)


# ---------------------------------------------------------- discrete: pmf and moments

def test_choice_probabilities_pmf_and_sampling():
    d = Choice(["a", "b", "c"], probas=[0.2, 0.3, 0.5])
    assert d.probabilities() == pytest.approx({"a": 0.2, "b": 0.3, "c": 0.5})
    assert (d.pmf("b"), d.pmf("z"), d.pmf([1])) == (pytest.approx(0.3), 0.0, 0.0)
    counts = {k: v / N for k, v in zip(*np.unique(d.rvs_many(N, 0), return_counts=True))}
    assert counts == pytest.approx({"a": 0.2, "b": 0.3, "c": 0.5}, abs=0.02)
    assert Choice(["l1", "l2"]).probabilities() == {"l1": 0.5, "l2": 0.5}


def test_choice_does_not_take_bools_for_numbers_but_accepts_numpy_scalars():
    d = Choice([1, 2, 3])
    assert True not in d and 1.0 in d and np.int64(2) in d
    assert d.pmf(np.int64(2)) == pytest.approx(1 / 3)
    assert False not in Choice([0]) and 0 not in Boolean()


def test_choice_repeated_entries_add_up():
    d = Choice(["a", "a", "b"])
    assert d.pmf("a") == pytest.approx(2 / 3)
    assert d.probabilities() == pytest.approx({"a": 2 / 3, "b": 1 / 3})


def test_numeric_choice_moments_match_scipy_rv_discrete():
    values, probas = [1, 2.5, 10], [0.2, 0.5, 0.3]
    d, oracle = Choice(values, probas), st.rv_discrete(values=([1, 2.5, 10], probas))
    assert (d.min(), d.max()) == (1, 10)
    assert d.mean() == pytest.approx(oracle.mean())
    assert d.std() == pytest.approx(oracle.std())
    with pytest.raises(TypeError, match="need numeric choices"):
        Choice(["l1", "l2"]).mean()


def test_choice_draws_are_choice_objects_and_rvs_many_a_list():
    d = Choice([np.float64(0.5), "x"])
    assert d.choice_list == [0.5, "x"] and type(d.choice_list[0]) is float
    assert isinstance(d.rvs_many(5, 0), list)


def test_priority_choice_prefers_earlier_choices():
    d = PriorityChoice(["a", "b", "c", "d"])
    probas = [d.pmf(c) for c in "abcd"]
    assert probas == pytest.approx([0.4, 0.3, 0.2, 0.1])
    assert sum(probas) == pytest.approx(1.0)
    draws = d.rvs_many(N, random_state=1)
    freqs = [draws.count(c) / N for c in "abcd"]
    assert freqs == pytest.approx(probas, abs=0.02)
    assert PriorityChoice(["only"]).rvs(0) == "only"


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 1.0])
def test_boolean_matches_scipy_bernoulli(p):
    d, oracle = Boolean(p), st.bernoulli(p)
    assert d.probabilities() == pytest.approx({True: p, False: 1 - p})
    assert (d.mean(), d.std()) == pytest.approx((oracle.mean(), oracle.std()))
    assert np.mean(d.rvs_many(N, 0)) == pytest.approx(p, abs=0.02)
    assert True in d and False in d and 1 not in d and "True" not in d


def test_boolean_default_is_fair():
    assert Boolean() == Boolean(0.5) == Boolean(proba_is_true=None)
    assert Boolean().pmf(True) == 0.5


def test_fixed_hyperparameter():
    d = FixedHyperparameter(0.1)
    assert d.rvs() == 0.1 and d.rvs_many(3, 0) == [0.1, 0.1, 0.1]
    assert d.probabilities() == {0.1: 1.0} and d.pmf(0.2) == 0.0
    assert (d.min(), d.max(), d.mean(), d.std()) == (0.1, 0.1, 0.1, 0.0)
    assert 0.1 in d and 0.2 not in d
    assert FixedHyperparameter(None).rvs() is None


def test_randint_matches_scipy_randint():
    d, oracle = RandInt(20, 200), st.randint(20, 201)
    ks = list(range(15, 206))
    assert [d.pmf(k) for k in ks] == pytest.approx(oracle.pmf(ks))
    assert [d.cdf(k + 0.5) for k in ks] == pytest.approx(oracle.cdf(ks))
    assert (d.mean(), d.std()) == pytest.approx((oracle.mean(), oracle.std()))
    assert (d.min(), d.max()) == (20, 200)
    assert sum(d.probabilities().values()) == pytest.approx(1.0) and len(d.probabilities()) == 181
    draws = d.rvs_many(N, 0)
    assert draws.min() == 20 and draws.max() == 200
    assert np.mean(draws) == pytest.approx(oracle.mean(), abs=2)


def test_randint_support_and_single_value():
    d = RandInt(1, 3)
    assert all(v in d for v in (1, 2, 3, np.int64(2)))
    assert not any(v in d for v in (0, 4, 2.0, 2.5, True))
    assert d.pmf(2.0) == 0.0
    assert RandInt(4, 4).rvs_many(5, 0).tolist() == [4] * 5


def _rounded_pmf(oracle, ks):
    return oracle.cdf(np.asarray(ks) + 0.5) - oracle.cdf(np.asarray(ks) - 0.5)


@pytest.mark.parametrize("d, oracle", [
    (Quantized(Uniform(0.2, 9.7)), st.uniform(0.2, 9.5)),
    (Quantized(Normal(5.0, 2.0)), st.norm(5.0, 2.0)),
    (Quantized(Normal(2.0, 0.3, hard_clip_min=1.2)), st.truncnorm(-8 / 3, np.inf, 2.0, 0.3)),
    (Quantized(LogUniform(1.0, 100.0)), st.loguniform(1.0, 100.0)),
    (Quantized(ScipyDistribution(st.gamma(3.0))), st.gamma(3.0)),
])
def test_quantized_matches_rounded_scipy(d, oracle):
    ks = list(range(-10, 120))
    expected = _rounded_pmf(oracle, ks)
    assert [d.pmf(k) for k in ks] == pytest.approx(expected, abs=1e-12)
    assert d.mean() == pytest.approx(np.dot(ks, expected), rel=1e-7)
    assert d.std() == pytest.approx(math.sqrt(np.dot(np.square(ks), expected)
                                              - np.dot(ks, expected) ** 2), rel=1e-6)
    assert [d.cdf(k) for k in ks] == pytest.approx(np.cumsum(expected), abs=1e-9)
    draws = d.rvs_many(N, 0)
    assert draws.dtype.kind == "i" and all(v in d for v in np.unique(draws))
    assert np.mean(draws) == pytest.approx(d.mean(), abs=5 * d.std() / math.sqrt(N))


def test_quantized_bounds_and_support():
    d = Quantized(Uniform(0.2, 2.7))
    assert (d.min(), d.max()) == (0, 3)
    assert d.probabilities() == pytest.approx({0: 0.3 / 2.5, 1: 0.4, 2: 0.4, 3: 0.2 / 2.5})
    assert 0 in d and 3 in d and -1 not in d and 4 not in d and 1.0 not in d and True not in d
    assert (Quantized(Uniform(0.5, 2.5)).min(), Quantized(Uniform(0.5, 2.5)).max()) == (1, 2)
    unbounded = Quantized(Normal(0, 1))
    assert unbounded.min() == -math.inf and 10 ** 6 in unbounded
    with pytest.raises(ValueError, match="probabilities\\(\\) needs a bounded support"):
        unbounded.probabilities()


def test_quantized_wide_spread_uses_sheppard_correction():
    d = Quantized(Normal(0.0, 1000.0))
    assert d.mean() == pytest.approx(0.0, abs=1e-9)
    assert d.std() == pytest.approx(math.sqrt(1000.0 ** 2 + 1 / 12), rel=1e-12)
    draws = d.rvs_many(N, 0)
    assert np.std(draws) == pytest.approx(d.std(), rel=0.03)


# ----------------------------------------------------------------- scipy wrapper

def test_scipy_discrete_distribution():
    d, oracle = ScipyDistribution(st.poisson(4.0)), st.poisson(4.0)
    assert [d.pmf(k) for k in range(12)] == pytest.approx(oracle.pmf(range(12)))
    assert (d.min(), d.max()) == (0, math.inf) and type(d.min()) is int
    assert (d.mean(), d.std(), d.cdf(3)) == pytest.approx((4.0, 2.0, oracle.cdf(3)))
    assert 3 in d and 3.0 in d and 3.5 not in d and -1 not in d and d.pmf(3.5) == 0.0
    with pytest.raises(TypeError, match="is discrete: use pmf"):
        d.pdf(3)
    with pytest.raises(TypeError, match="is continuous: use pdf"):
        ScipyDistribution(st.norm()).pmf(0.0)


def test_scipy_distribution_draws_match_scipy_with_the_same_generator():
    frozen = st.gamma(2.0, scale=3.0)
    d = ScipyDistribution(frozen)
    expected = frozen.rvs(size=5, random_state=np.random.default_rng(11))
    assert d.rvs_many(5, 11).tolist() == expected.tolist()
    assert (d.min(), d.max()) == (0.0, math.inf) and -1.0 not in d and 1.0 in d


def test_scipy_distribution_is_importable_from_distributions_and_registered():
    from stepline.hyperparams.scipy_distribution import ScipyDistribution as direct
    assert dists.ScipyDistribution is direct is ScipyDistribution
    assert issubclass(direct, HyperparameterDistribution)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        dists.Nope  # noqa: B018


def test_core_distributions_import_and_work_without_scipy():
    code = (
        "import sys; sys.modules['scipy'] = None\n"
        "from stepline.hyperparams.distributions import *\n"
        "from stepline.hyperparams.distributions import distribution_from_json_dict as f\n"
        "d = Normal(0, 1, hard_clip_min=0); assert d.rvs(0) >= 0 and 0 < d.cdf(1) < 1\n"
        "assert f(Quantized(LogUniform(1, 9)).to_json_dict()) == Quantized(LogUniform(1, 9))\n"
        "try:\n    ScipyDistribution(None)\nexcept ImportError as e:\n"
        "    assert 'needs scipy' in str(e)\nelse:\n    raise AssertionError('no ImportError')\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_importing_distributions_does_not_import_scipy():
    code = ("import sys, stepline.hyperparams.distributions as d; d.Uniform(0, 1).rvs(0); "
            "print('scipy' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
