"""The declared spaces as Optuna suggestions: each distribution's mapping, inverse CDFs, conditions."""
import math

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402

from stepline.automl.space import SearchSpace, inverse_cdf, suggest  # noqa: E402
from stepline.hyperparams.distributions import (Boolean, Choice, FixedHyperparameter, LogNormal,  # noqa: E402
                                                LogUniform, Normal, PriorityChoice, Quantized,
                                                RandInt, Uniform)
from stepline.pipeline import Pipeline  # noqa: E402
from stepline.steps.flow import ChooseOneStepOf, OptionalStep  # noqa: E402
from stepline.steps.numpy import MultiplyByN  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


def one_trial(seed=0):
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()


@pytest.mark.parametrize("dist, expected", [
    (Choice(["a", "b", 3]), CategoricalDistribution(["a", "b", 3])),
    (Boolean(), CategoricalDistribution([True, False])),
    (RandInt(2, 9), IntDistribution(2, 9)),
    (Uniform(-1.0, 2.0), FloatDistribution(-1.0, 2.0)),
    (LogUniform(0.01, 10.0), FloatDistribution(0.01, 10.0, log=True)),
    (Quantized(Uniform(0.0, 10.0)), IntDistribution(0, 10)),
    (Quantized(LogUniform(1.0, 100.0)), IntDistribution(1, 100, log=True)),
    (Normal(0.0, 1.0), FloatDistribution(0.0, 1.0)),
    (LogNormal(0.0, 1.0), FloatDistribution(0.0, 1.0)),
    (PriorityChoice(["x", "y", "z"]), FloatDistribution(0.0, 1.0)),
    (Choice([0, 1], probas=[0.9, 0.1]), FloatDistribution(0.0, 1.0)),
], ids=repr)
def test_each_distribution_maps_onto_an_optuna_distribution(dist, expected):
    trial = one_trial()
    value = suggest(trial, "p", dist)
    assert trial.distributions["p"] == expected
    assert value in dist


def test_a_fixed_hyperparameter_is_set_not_searched():
    trial = one_trial()
    assert suggest(trial, "p", FixedHyperparameter(7)) == 7
    assert trial.distributions == {}


def test_choices_optuna_cannot_store_are_suggested_by_index():
    values = [(1, 2), {"k": 1}]
    trial = one_trial()
    assert suggest(trial, "p", Choice(values)) in values
    assert trial.distributions["p"] == CategoricalDistribution([0, 1])


@pytest.mark.parametrize("dist", [Normal(1.0, 2.0), Normal(0.0, 1.0, hard_clip_min=-0.5, hard_clip_max=3.0),
                                  LogNormal(1.0, 0.5), Uniform(2.0, 5.0)], ids=repr)
def test_inverse_cdf_inverts_the_cdf(dist):
    for u in (1e-6, 0.01, 0.3, 0.5, 0.9, 0.999):
        assert dist.cdf(inverse_cdf(dist, u)) == pytest.approx(u, abs=1e-9)


def test_scipy_distributions_use_their_ppf():
    stats = pytest.importorskip("scipy.stats")
    from stepline.hyperparams.distributions import ScipyDistribution
    dist = ScipyDistribution(stats.gamma(2.0, scale=3.0))
    assert inverse_cdf(dist, 0.5) == pytest.approx(stats.gamma(2.0, scale=3.0).ppf(0.5))


def test_random_sampling_of_an_inverse_cdf_parameter_follows_its_prior():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    dist = Normal(3.0, 2.0)
    draws = [suggest(study.ask(), "p", dist) for _ in range(2000)]
    assert np.mean(draws) == pytest.approx(3.0, abs=0.2)
    assert np.std(draws) == pytest.approx(2.0, abs=0.2)
    counts = {c: 0 for c in "xyz"}
    for _ in range(3000):
        counts[suggest(study.ask(), "q", PriorityChoice(list("xyz")))] += 1
    assert counts["x"] > counts["y"] > counts["z"]  # weights 3:2:1
    assert counts["x"] / 3000 == pytest.approx(0.5, abs=0.04)


def branching_pipeline():
    return Pipeline([
        ChooseOneStepOf([
            ("double", MultiplyByN(2, hyperparams_space={"multiply_by": RandInt(2, 4)})),
            ("scale", MultiplyByN(1, hyperparams_space={"multiply_by": Uniform(0.5, 1.5)})),
        ], name="pick"),
        OptionalStep(MultiplyByN(1, hyperparams_space={"multiply_by": LogUniform(1.0, 8.0)}, name="extra"),
                     name="maybe"),
    ])


def test_conditional_spaces_sample_only_the_active_branch():
    space = SearchSpace.of(branching_pipeline())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        values = space.suggest(trial)
        assert set(trial.params) == set(values)
        chosen = values["pick__choice"]
        other = "scale" if chosen == "double" else "double"
        assert f"pick__{chosen}__multiply_by" in values
        assert f"pick__{other}__multiply_by" not in values
        assert ("maybe__extra__multiply_by" in values) == values["maybe__enabled"]
        seen.add((chosen, values["maybe__enabled"]))
    assert len(seen) == 4


def test_suggested_values_set_the_pipeline():
    p = branching_pipeline()
    values = SearchSpace.of(p).suggest(one_trial(3))
    p.set_hyperparams(values)
    assert p["pick"].chosen().name == values["pick__choice"]


def test_a_distribution_without_any_mapping_gets_a_clear_error():
    from stepline.hyperparams.distribution_base import DiscreteDistribution

    class Opaque(DiscreteDistribution):
        def _sample(self, rng, n):
            return [object()] * n

        def __contains__(self, value):
            return True

        def pmf(self, value):
            return 0.0

        def probabilities(self):
            raise NotImplementedError

        def _params(self):
            return {}

    with pytest.raises(TypeError, match="'p'.*cannot be searched"):
        suggest(one_trial(), "p", Opaque())
    assert math.isfinite(inverse_cdf(Normal(0.0, 1.0), 1.0))
