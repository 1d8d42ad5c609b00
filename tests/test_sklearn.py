"""scikit-learn inside stepline (SKLearnWrapper) and stepline inside scikit-learn (to_sklearn)."""
import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone, is_classifier, is_regressor  # noqa: E402
from sklearn.datasets import load_diabetes, load_iris  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.exceptions import NotFittedError as SkNotFittedError  # noqa: E402
from sklearn.linear_model import LogisticRegression, Ridge, SGDClassifier  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from stepline import CX, Pipeline  # noqa: E402
from stepline.base import BaseStep, HyperparameterError, Identity, NonFittableMixin, NotFittedError  # noqa: E402
from stepline.hyperparams.distributions import Boolean, Choice, LogUniform, RandInt  # noqa: E402
from stepline.hyperparams.space import HyperparameterSpace  # noqa: E402
from stepline.steps.sklearn import SKLearnWrapper, SklearnEstimatorAdapter, to_sklearn  # noqa: E402


@pytest.fixture(scope="module")
def iris():
    return load_iris(return_X_y=True)


@pytest.fixture(scope="module")
def diabetes():
    return load_diabetes(return_X_y=True)


def scaled_logreg(**kwargs):
    return Pipeline([SKLearnWrapper(StandardScaler()), SKLearnWrapper(LogisticRegression(**kwargs))],
                    name="clf")


# ------------------------------------------------------------------ SKLearnWrapper

def test_classifier_predicts_like_sklearn(iris):
    X, y = iris
    step = SKLearnWrapper(LogisticRegression(max_iter=500)).fit(X, y)
    ref = LogisticRegression(max_iter=500).fit(X, y)
    np.testing.assert_array_equal(step.transform(X), ref.predict(X))
    np.testing.assert_array_equal(step.predict(X), ref.predict(X))
    assert step.name == "LogisticRegression" and step.is_fitted


def test_regressor_predicts_like_sklearn(diabetes):
    X, y = diabetes
    step, out = SKLearnWrapper(Ridge(alpha=0.5)).fit_transform(X, y)
    np.testing.assert_allclose(out, Ridge(alpha=0.5).fit(X, y).predict(X))
    assert step.wrapped_sklearn_predictor.coef_.shape == (X.shape[1],)


def test_transformer_uses_transform_and_fits_without_y(iris):
    X, _ = iris
    step, out = SKLearnWrapper(PCA(n_components=2, random_state=0)).fit_transform(X)
    ref = PCA(n_components=2, random_state=0).fit(X)
    np.testing.assert_allclose(out, ref.transform(X), atol=1e-10)
    np.testing.assert_allclose(step.transform(X), ref.transform(X), atol=1e-10)
    np.testing.assert_allclose(SKLearnWrapper(StandardScaler()).fit(X).transform(X),
                               StandardScaler().fit_transform(X))


def test_fits_with_y_only_when_given():
    calls = []

    class Spy(StandardScaler):
        def fit(self, X, y=None, sample_weight=None):
            calls.append(y is None)
            return super().fit(X)

    SKLearnWrapper(Spy()).fit(np.ones((3, 2)))
    SKLearnWrapper(Spy()).fit(np.ones((3, 2)), np.zeros(3))
    assert calls == [True, False]


def test_partial_fit_accumulates(iris):
    X, y = iris
    step = SKLearnWrapper(SGDClassifier(random_state=0), use_partial_fit=True,
                          partial_fit_kwargs={"classes": np.unique(y)})
    step = step.fit(X[:75], y[:75])
    assert step.wrapped_sklearn_predictor.t_ == 76.0
    step = step.fit(X[75:], y[75:])
    assert step.wrapped_sklearn_predictor.t_ == 151.0  # a second pass, not a refit
    assert set(step.transform(X)) <= set(np.unique(y))


def test_partial_fit_needs_the_method():
    with pytest.raises(TypeError, match="no partial_fit"):
        SKLearnWrapper(PCA(), use_partial_fit=True).fit(np.ones((4, 2)))


def test_predict_proba(iris):
    X, y = iris
    step = SKLearnWrapper(LogisticRegression(max_iter=500), use_predict_proba=True).fit(X, y)
    proba = step.transform(X)
    assert proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    with pytest.raises(TypeError, match="no predict_proba"):
        SKLearnWrapper(SGDClassifier(loss="hinge"), use_predict_proba=True).fit(X, y)


def test_sklearn_pipeline_inside_with_nested_params(iris):
    X, y = iris
    step = SKLearnWrapper(make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)))
    assert step.name == "Pipeline"
    outer = Pipeline([step], name="outer")
    outer.set_hyperparams({"Pipeline__logisticregression__C": 0.25})
    assert step.wrapped_sklearn_predictor.get_params()["logisticregression__C"] == 0.25
    assert outer.get_hyperparams() == {"Pipeline__logisticregression__C": 0.25}
    outer = outer.fit(X, y)
    assert (outer.transform(X) == y).mean() > 0.9  # a final classifier: predict, not transform


def test_set_hyperparams_reach_the_estimator():
    lr = SKLearnWrapper(LogisticRegression())
    p = Pipeline([SKLearnWrapper(StandardScaler()), lr])
    p.set_hyperparams({"LogisticRegression": {"C": 0.5, "max_iter": 33}})
    assert lr.wrapped_sklearn_predictor.get_params()["C"] == 0.5
    assert lr.wrapped_sklearn_predictor.max_iter == 33
    assert p.get_hyperparams() == {"LogisticRegression__C": 0.5, "LogisticRegression__max_iter": 33}
    p.set_params(LogisticRegression__C=2.0)
    assert lr.wrapped_sklearn_predictor.C == 2.0 and lr.get_params(deep=False) == {"C": 2.0, "max_iter": 33}
    assert p.is_invalidated


def test_numpy_values_become_python_values():
    lr = SKLearnWrapper(LogisticRegression())
    lr.set_hyperparams({"C": np.float64(0.3), "max_iter": np.int64(40), "fit_intercept": np.bool_(False)})
    params = lr.wrapped_sklearn_predictor.get_params()
    assert type(params["C"]) is float and type(params["max_iter"]) is int
    assert params["fit_intercept"] is False


def test_return_all_sklearn_default_params_on_get():
    lr = SKLearnWrapper(LogisticRegression(C=3.0), return_all_sklearn_default_params_on_get=True)
    hp = lr.get_hyperparams()
    assert hp["C"] == 3.0 and hp["max_iter"] == 100 and "solver" in hp
    assert SKLearnWrapper(LogisticRegression(C=3.0)).get_hyperparams() == {}
    inner = SKLearnWrapper(make_pipeline(StandardScaler(), Ridge()), return_all_sklearn_default_params_on_get=True)
    hp = dict(inner.get_hyperparams())
    assert hp["ridge__alpha"] == 1.0 and "steps" not in hp and "ridge" not in hp  # no estimator objects


def test_bad_name_lists_valid_names():
    p = Pipeline([SKLearnWrapper(LogisticRegression())])
    with pytest.raises(HyperparameterError, match=r"'Cc'.*\['C', 'class_weight'"):
        p.set_hyperparams({"LogisticRegression__Cc": 1.0})
    with pytest.raises(HyperparameterError, match="'colour'"):
        SKLearnWrapper(LogisticRegression(), HyperparameterSpace({"colour": Boolean()}))


def test_value_outside_space_refused():
    lr = SKLearnWrapper(LogisticRegression(), HyperparameterSpace({"C": LogUniform(0.01, 10.0),
                                                                   "penalty": Choice(["l1", "l2"])}))
    with pytest.raises(HyperparameterError, match="outside its space"):
        lr.set_hyperparams({"C": 50.0})
    with pytest.raises(HyperparameterError, match="'penalty'"):
        lr.set_hyperparams({"penalty": "elasticnet"})
    assert lr.wrapped_sklearn_predictor.C == 1.0  # nothing was set


def test_space_sampling_routes_to_the_estimator():
    space = {"C": LogUniform(0.01, 10.0), "fit_intercept": Boolean(), "max_iter": RandInt(20, 200)}
    p = Pipeline([SKLearnWrapper(LogisticRegression(), HyperparameterSpace(space))])
    full = p.get_hyperparams_space()
    assert set(full) == {"LogisticRegression__C", "LogisticRegression__fit_intercept",
                         "LogisticRegression__max_iter"}
    sample = full.rvs(random_state=3)
    p.set_hyperparams(sample)
    est = p["LogisticRegression"].wrapped_sklearn_predictor
    assert est.C == pytest.approx(sample["LogisticRegression__C"])
    assert est.max_iter == sample["LogisticRegression__max_iter"]


def test_default_names_made_unique_and_explicit_name_kept():
    p = Pipeline([SKLearnWrapper(StandardScaler()), SKLearnWrapper(StandardScaler()),
                  SKLearnWrapper(Ridge(), name="reg")])
    assert p.keys() == ["StandardScaler", "StandardScaler_1", "reg"]


def test_not_fitted_and_prefitted(iris):
    X, y = iris
    with pytest.raises(NotFittedError, match="LogisticRegression"):
        SKLearnWrapper(LogisticRegression()).transform(X)
    fitted = SKLearnWrapper(LogisticRegression(max_iter=500).fit(X, y))
    assert fitted.is_fitted and fitted.transform(X[:3]).shape == (3,)


def test_refuses_non_estimators():
    with pytest.raises(TypeError, match="scikit-learn estimator"):
        SKLearnWrapper(object())
    with pytest.raises(TypeError, match="instance"):
        SKLearnWrapper(LogisticRegression)


def test_repr_shows_the_estimator():
    p = Pipeline([SKLearnWrapper(LogisticRegression(C=0.5))], name="p")
    p.set_hyperparams({"LogisticRegression__max_iter": 7})
    text = repr(p)
    assert "SKLearnWrapper(name='LogisticRegression', LogisticRegression(C=0.5, max_iter=7)" in text
    assert "hyperparams={'max_iter': 7}" in text


def test_save_load_round_trip(tmp_path, iris):
    X, y = iris
    p = scaled_logreg(C=0.7, max_iter=300)
    p.set_hyperparams({"LogisticRegression__tol": 1e-5})
    p = p.fit(X, y)
    before = p.transform(X)
    p.save(CX(tmp_path), full_dump=True)
    loaded = CX(tmp_path).load("clf")
    assert isinstance(loaded["LogisticRegression"], SKLearnWrapper)
    np.testing.assert_array_equal(loaded.transform(X), before)
    np.testing.assert_array_equal(loaded.predict(X), p.predict(X))
    assert loaded.get_hyperparams() == {"LogisticRegression__tol": 1e-5}
    assert loaded["LogisticRegression"].wrapped_sklearn_predictor.C == 0.7


def test_pickles(iris):
    X, y = iris
    step = SKLearnWrapper(LogisticRegression(max_iter=500)).fit(X, y)
    again = pickle.loads(pickle.dumps(step))
    np.testing.assert_array_equal(again.transform(X), step.transform(X))


# ------------------------------------------------------------------ to_sklearn

def test_to_sklearn_returns_the_adapter():
    p = scaled_logreg()
    a = p.to_sklearn()
    assert isinstance(a, SklearnEstimatorAdapter) and a.step is p and to_sklearn(a) is a
    assert is_classifier(a) and not is_regressor(a)
    assert is_regressor(to_sklearn(SKLearnWrapper(Ridge())))


def test_get_set_params_round_trip():
    p = scaled_logreg()
    p.set_hyperparams({"LogisticRegression__C": 0.5})
    a = to_sklearn(p)
    params = a.get_params()
    assert params["step"] is p and params["step__LogisticRegression__C"] == 0.5
    assert a.get_params(deep=False) == {"step": p}
    a.set_params(step__LogisticRegression__C=4.0)
    assert p["LogisticRegression"].wrapped_sklearn_predictor.C == 4.0
    a.set_params(**a.get_params(deep=False))
    assert a.step is p
    with pytest.raises(ValueError, match="Invalid parameter"):
        a.set_params(nope=1)
    with pytest.raises(HyperparameterError):
        a.set_params(step__LogisticRegression__Cc=1)


def test_clone_is_independent_and_unfitted(iris):
    X, y = iris
    p = scaled_logreg(max_iter=300).fit(X, y)
    a = to_sklearn(p)
    b = clone(a)
    assert b.step is not p and b.step["LogisticRegression"] is not p["LogisticRegression"]
    assert not hasattr(b.step["LogisticRegression"].wrapped_sklearn_predictor, "coef_")
    with pytest.raises(SkNotFittedError):
        b.predict(X)
    b.set_params(step__LogisticRegression__C=0.01)
    assert p["LogisticRegression"].wrapped_sklearn_predictor.C == 1.0
    assert b.fit(X, y).score(X, y) > 0.6 and a.score(X, y) > 0.9


def test_cross_val_score(iris):
    X, y = iris
    scores = cross_val_score(to_sklearn(scaled_logreg(max_iter=300)), X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.85


def test_grid_search_picks_the_best(iris):
    X, y = iris
    grid = GridSearchCV(to_sklearn(scaled_logreg(max_iter=300)),
                        {"step__LogisticRegression__C": [1e-4, 10.0]}, cv=3)
    grid.fit(X, y)
    assert grid.best_params_ == {"step__LogisticRegression__C": 10.0}
    assert grid.best_estimator_.step["LogisticRegression"].wrapped_sklearn_predictor.C == 10.0
    assert grid.score(X, y) > 0.9


def test_regression_score_is_r2(diabetes):
    X, y = diabetes
    a = to_sklearn(SKLearnWrapper(Ridge(alpha=0.1))).fit(X, y)
    assert a.score(X, y) == pytest.approx(Ridge(alpha=0.1).fit(X, y).score(X, y))
    assert not hasattr(a, "predict_proba")


def test_predict_proba_and_decision_function_through_the_pipeline(iris):
    X, y = iris
    a = to_sklearn(scaled_logreg(max_iter=300)).fit(X, y)
    ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(X, y)
    np.testing.assert_allclose(a.predict_proba(X), ref.predict_proba(X))
    np.testing.assert_allclose(a.decision_function(X), ref.decision_function(X))
    np.testing.assert_array_equal(a.classes_, [0, 1, 2])


def test_adapter_predicts_in_inference_mode(iris):
    X, y = iris
    modes = []

    class TrainOnlyNoise(NonFittableMixin, BaseStep):
        def transform(self, data_inputs):
            modes.append(self.is_train)
            return data_inputs + 100.0 if self.is_train else data_inputs

    p = Pipeline([TrainOnlyNoise(), SKLearnWrapper(Ridge())])
    a = to_sklearn(p).fit(X, y)
    a.predict(X)
    assert modes == [True, False] and p.is_train  # restored after predict


def test_sklearn_estimator_checks_basics():
    from sklearn.utils import estimator_checks as ec
    checks = ["check_get_params_invariance", "check_set_params", "check_estimator_cloneable",
              "check_estimators_pickle", "check_no_attributes_set_in_init", "check_dont_overwrite_parameters",
              "check_estimators_fit_returns_self", "check_fit_check_is_fitted", "check_estimator_repr",
              "check_do_not_raise_errors_in_init_or_set_params", "check_estimators_unfitted",
              "check_fit_score_takes_y", "check_estimators_dtypes", "check_methods_subset_invariance",
              "check_fit_idempotent", "check_classifiers_train"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in checks:
            getattr(ec, name)("SklearnEstimatorAdapter", to_sklearn(scaled_logreg()))


@pytest.mark.parametrize("make", [lambda: Identity(), lambda: Pipeline([Identity()]),
                                  lambda: SKLearnWrapper(StandardScaler())])
def test_wrapping_a_stepline_step_is_a_clear_type_error(make):
    step = make()
    with pytest.raises(TypeError, match=rf"stepline step '{step.name}' \({type(step).__name__}\).*to_sklearn"):
        SKLearnWrapper(step)
