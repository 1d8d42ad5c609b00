"""Distributions draw from an int seed, a numpy Generator or a RandomState (scikit-learn's)."""
import warnings

import numpy as np
import pytest

from stepline.hyperparams.distributions import (Boolean, Choice, LogNormal, LogUniform, Normal,
                                                PriorityChoice, Quantized, RandInt, Uniform)
from stepline.hyperparams.space import HyperparameterSpace

DISTRIBUTIONS = [Boolean(), Choice(["a", "b", "c"]), PriorityChoice([1, 2, 3]), RandInt(1, 9),
                 Uniform(-1.0, 2.0), LogUniform(0.1, 1.0), Normal(0.0, 1.0), LogNormal(0.0, 1.0),
                 Quantized(Uniform(0, 10))]


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=repr)
def test_rvs_takes_a_random_state_reproducibly(dist):
    draws = [dist.rvs(random_state=np.random.RandomState(3)) for _ in range(2)]
    assert draws[0] == draws[1]
    assert draws[0] in dist
    assert len(dist.rvs_many(5, np.random.RandomState(3))) == 5


@pytest.mark.parametrize("dist", DISTRIBUTIONS[3:], ids=repr)
def test_successive_draws_from_one_random_state_differ(dist):
    rs = np.random.RandomState(0)
    assert len({dist.rvs(random_state=rs) for _ in range(20)}) > 1


def test_space_rvs_takes_a_random_state():
    space = HyperparameterSpace({"a__C": LogUniform(0.1, 1.0), "b__k": RandInt(1, 50)})
    assert space.rvs(np.random.RandomState(1)) == space.rvs(np.random.RandomState(1))


def test_a_bad_random_state_is_named():
    with pytest.raises(TypeError, match="RandomState"):
        Uniform(0, 1).rvs(random_state="seed")


def test_randomized_search_cv_takes_the_declared_space():
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import RandomizedSearchCV

    from stepline.demo import build_pipeline
    X, y = load_breast_cancer(return_X_y=True)
    X, y = X[::3] / X.max(axis=0), y[::3]
    p = build_pipeline(0)
    search = RandomizedSearchCV(p.to_sklearn(), p.get_hyperparams_space().to_flat_dict(),
                                n_iter=4, cv=3, random_state=0, error_score=np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # liblinear refuses l1 with dual=True: a nan score
        search.fit(X, y)
    assert set(search.best_params_) == set(p.get_hyperparams_space().to_flat_dict())
    assert search.best_params_["LogisticRegression__C"] in LogUniform(0.01, 10.0)
    assert search.predict(X[:5]).shape == (5,)
    tried = search.cv_results_["param_LogisticRegression__C"]
    assert len(set(tried)) == 4
