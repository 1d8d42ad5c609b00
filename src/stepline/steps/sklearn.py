"""scikit-learn inside stepline, and stepline inside scikit-learn.

- :class:`SKLearnWrapper` makes any scikit-learn estimator (classifier, regressor,
  transformer, or a whole ``sklearn.pipeline.Pipeline``) a stepline step. Its
  hyperparameters are the estimator's ``get_params()`` names, set through
  ``set_params``.
- :func:`to_sklearn` (also ``step.to_sklearn()``) returns a
  :class:`SklearnEstimatorAdapter`: a scikit-learn estimator around a stepline step,
  accepted by ``clone``, ``cross_val_score`` and ``GridSearchCV``
  (``param_grid={"step__LogisticRegression__C": [...]}``).

Importing this module imports scikit-learn (``pip install stepline[sklearn]``);
nothing else in stepline does.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from stepline.core.errors import HyperparameterError, InvalidStepNameError
from stepline.core.mode import call_mode, inference
from stepline.core.naming import validate_name
from stepline.core.step import BaseStep, BaseTransformer

__all__ = ["SKLearnWrapper", "SklearnEstimatorAdapter", "to_sklearn"]


def _plain(value):
    """A numpy scalar as its Python value (sklearn's validation and JSON manifests like those)."""
    return value.item() if isinstance(value, np.generic) else value


def _is_estimator_like(value) -> bool:
    """Values of ``get_params(deep=True)`` that are sub-estimators or lists of them."""
    if hasattr(value, "get_params") and not isinstance(value, type):
        return True
    if isinstance(value, (list, tuple)) and value:
        return all(isinstance(v, tuple) and len(v) >= 2 and isinstance(v[0], str) for v in value)
    return False


class SKLearnWrapper(BaseStep):
    """A scikit-learn estimator as a stepline step.

    ``SKLearnWrapper(estimator, hyperparams_space=None,
    return_all_sklearn_default_params_on_get=False, use_predict_proba=False,
    use_partial_fit=False, partial_fit_kwargs=None, name=None, savers=None)``

    - ``name`` defaults to the estimator's class name (made unique in a pipeline).
    - ``fit`` calls ``estimator.fit(X, y)`` when expected outputs are given, else
      ``estimator.fit(X)``; with ``use_partial_fit`` it calls ``partial_fit`` instead,
      passing ``partial_fit_kwargs`` (e.g. ``{"classes": [0, 1, 2]}``) on every call.
    - ``transform`` returns ``predict_proba`` when ``use_predict_proba``, else the
      estimator's ``transform`` if it has one (transformers), else ``predict``.
      ``predict`` prefers the estimator's ``predict``.
    - Hyperparameters are the estimator's ``get_params(deep=True)`` names (nested
      names such as ``clf__C`` of a wrapped sklearn ``Pipeline`` included) and are set
      with ``set_params``. An unknown name, or a value outside ``hyperparams_space``,
      raises :class:`HyperparameterError` listing the valid names.
      ``get_hyperparams()`` reports the values set through stepline, or every
      scalar parameter of the estimator with
      ``return_all_sklearn_default_params_on_get=True``.
    - ``wrapped_sklearn_predictor`` is the estimator. A wrapper built around an
      already fitted estimator counts as fitted.
    - Saved by the default saver: the estimator is pickled with the step.
    """

    def __init__(self, wrapped_sklearn_predictor, hyperparams_space=None,
                 return_all_sklearn_default_params_on_get: bool = False,
                 use_predict_proba: bool = False, use_partial_fit: bool = False,
                 partial_fit_kwargs: Mapping | None = None, name: str | None = None, savers=None):
        if isinstance(wrapped_sklearn_predictor, BaseTransformer):
            raise TypeError(
                f"SKLearnWrapper wraps a scikit-learn estimator, got the stepline step "
                f"{wrapped_sklearn_predictor.name!r} ({type(wrapped_sklearn_predictor).__name__}): "
                f"use the step itself (in a Pipeline), or step.to_sklearn() for a scikit-learn view of it")
        if not (hasattr(wrapped_sklearn_predictor, "fit") and hasattr(wrapped_sklearn_predictor, "get_params")):
            raise TypeError(
                "SKLearnWrapper wraps a scikit-learn estimator (with fit and get_params), got "
                f"{type(wrapped_sklearn_predictor).__name__} {wrapped_sklearn_predictor!r}")
        if isinstance(wrapped_sklearn_predictor, type):
            raise TypeError(f"SKLearnWrapper wraps an estimator instance, not the class "
                            f"{wrapped_sklearn_predictor.__name__}: write {wrapped_sklearn_predictor.__name__}()")
        super().__init__(hyperparams_space=hyperparams_space, name=name, savers=savers)
        if name is None:  # the class name, still a default name (made unique in pipelines)
            try:
                self.name = validate_name(type(wrapped_sklearn_predictor).__name__)
            except InvalidStepNameError:
                self.name = type(self).__name__
        self.wrapped_sklearn_predictor = wrapped_sklearn_predictor
        self.return_all_sklearn_default_params_on_get = bool(return_all_sklearn_default_params_on_get)
        self.use_predict_proba = bool(use_predict_proba)
        self.use_partial_fit = bool(use_partial_fit)
        self.partial_fit_kwargs = dict(partial_fit_kwargs or {})
        if self.hyperparams_space:
            self._validate_names(self.hyperparams_space)
        self._method = self._transform_method()
        if _sklearn_is_fitted(wrapped_sklearn_predictor):
            self.is_fitted = True

    def manifest_info(self) -> dict:
        """Recorded in the step's manifest: the class of the estimator it wraps."""
        estimator = type(self.wrapped_sklearn_predictor)
        return {"estimator": f"{estimator.__module__}.{estimator.__qualname__}"}

    # ------------------------------------------------------------ hyperparameters
    def _own_hyperparam_names(self):
        return self.wrapped_sklearn_predictor.get_params(deep=True).keys()

    def _get_own_hyperparams(self) -> dict:
        if self.return_all_sklearn_default_params_on_get:
            return {k: _plain(v) for k, v in self.wrapped_sklearn_predictor.get_params(deep=True).items()
                    if not _is_estimator_like(v) and not isinstance(v, Mapping)}
        if not self.hyperparams:
            return {}
        params = self.wrapped_sklearn_predictor.get_params(deep=True)
        return {k: _plain(params.get(k, v)) for k, v in self.hyperparams.items()}

    def _set_own_hyperparams(self, values: dict) -> None:
        values = {k: _plain(v) for k, v in values.items()}
        self.wrapped_sklearn_predictor.set_params(**values)
        self.hyperparams.update(values)
        self._method = self._transform_method()

    def _hyperparams_snapshot(self, names):
        params = self.wrapped_sklearn_predictor.get_params(deep=True)
        return dict(self.hyperparams), {k: params[k] for k in names if k in params}

    def _restore_hyperparams(self, snapshot) -> None:
        hyperparams, params = snapshot
        self.wrapped_sklearn_predictor.set_params(**params)
        super()._restore_hyperparams(hyperparams)
        self._method = self._transform_method()

    # ------------------------------------------------------------------ learning
    def fit(self, data_inputs, expected_outputs=None) -> "SKLearnWrapper":
        est = self.wrapped_sklearn_predictor
        if self.use_partial_fit:
            if not hasattr(est, "partial_fit"):
                raise TypeError(f"step {self.name!r}: use_partial_fit=True but "
                                f"{type(est).__name__} has no partial_fit")
            if expected_outputs is None:
                est.partial_fit(data_inputs, **self.partial_fit_kwargs)
            else:
                est.partial_fit(data_inputs, expected_outputs, **self.partial_fit_kwargs)
        elif expected_outputs is None:
            est.fit(data_inputs)
        else:
            est.fit(data_inputs, expected_outputs)
        self._method = self._transform_method(check=True)
        return self

    def fit_transform(self, data_inputs, expected_outputs=None):
        est = self.wrapped_sklearn_predictor
        if self.use_partial_fit or self._method != "transform" or not hasattr(est, "fit_transform"):
            step = self.fit(data_inputs, expected_outputs)
            return step, step.transform(data_inputs)
        # a transformer: one pass, as scikit-learn's own Pipeline does
        if expected_outputs is None:
            outputs = est.fit_transform(data_inputs)
        else:
            outputs = est.fit_transform(data_inputs, expected_outputs)
        return self, outputs

    def transform(self, data_inputs):
        return getattr(self.wrapped_sklearn_predictor, self._method)(data_inputs)

    def predict(self, data_inputs):
        est = self.wrapped_sklearn_predictor
        if not self.use_predict_proba and hasattr(est, "predict"):
            return est.predict(data_inputs)
        return getattr(est, self._method)(data_inputs)

    def _transform_method(self, check: bool = False) -> str:
        est = self.wrapped_sklearn_predictor
        if self.use_predict_proba:
            if check and not hasattr(est, "predict_proba"):
                raise TypeError(f"step {self.name!r}: use_predict_proba=True but {type(est).__name__} "
                                f"with these parameters has no predict_proba")
            return "predict_proba"
        if hasattr(est, "predict") or not hasattr(est, "transform"):
            return "predict"  # a predictor predicts (KMeans gives labels, not distances)
        return "transform"

    # ---------------------------------------------------------------------- repr
    def _repr_lines(self, indent: str) -> list[str]:
        est_lines = repr(self.wrapped_sklearn_predictor).splitlines() or [""]
        head = f"{indent}{type(self).__name__}(name={self.name!r}, {est_lines[0]}"
        lines = [head] + [indent + "    " + line for line in est_lines[1:]]
        hp = self._get_own_hyperparams()
        if hp:
            lines[-1] += f", hyperparams={hp!r}"
        lines[-1] += ")"
        return lines

    def __setstate__(self, state):
        super().__setstate__(state)
        if "_method" not in self.__dict__ and "wrapped_sklearn_predictor" in self.__dict__:
            self._method = self._transform_method()


def _sklearn_is_fitted(estimator) -> bool:
    from sklearn.exceptions import NotFittedError as SkNotFitted
    try:
        check_is_fitted(estimator)
    except (SkNotFitted, TypeError, ValueError, AttributeError):
        return False
    return True


# ============================================================ stepline -> sklearn

def _final_wrapper(step):
    """The :class:`SKLearnWrapper` that produces ``step``'s outputs, following the last
    step of (nested) pipelines; ``None`` when there is none."""
    from stepline.pipeline import Pipeline
    while True:
        if isinstance(step, SKLearnWrapper):
            return step
        if isinstance(step, Pipeline) and len(step):
            step = step[-1]
            continue
        return None


def _final_estimator(step):
    wrapper = _final_wrapper(step)
    return None if wrapper is None else wrapper.wrapped_sklearn_predictor


def _unfitted_copy(step):
    """A deep copy of ``step`` that is not fitted (scikit-learn's ``clone`` semantics)."""
    from sklearn.base import clone
    step = copy.deepcopy(step)

    def reset(s, context):
        s.__dict__.pop("is_fitted", None)
        if isinstance(s, SKLearnWrapper):
            s.wrapped_sklearn_predictor = clone(s.wrapped_sklearn_predictor)
    step.apply(reset)
    return step


def _has_final_method(name: str):
    def check(self) -> bool:
        est = _final_estimator(self.step)
        return est is not None and hasattr(est, name)
    return check


class SklearnEstimatorAdapter(BaseEstimator):
    """A stepline step seen as a scikit-learn estimator (returned by :func:`to_sklearn`).

    Its one parameter is ``step``; the step's hyperparameters appear as
    ``step__<path>`` (``step__LogisticRegression__C``), so ``GridSearchCV`` and
    ``set_params`` reach them. ``clone`` gives an independent, unfitted deep copy.

    ``fit(X, y)`` fits the step in training mode and keeps the fitted step in
    ``self.step``; ``predict``, ``transform``, ``predict_proba`` and ``score`` run it
    in inference mode (the call's mode, see ``stepline.core.mode``: the step's own
    ``is_train`` is left alone), so train-only steps such as
    ``TrainOnlyWrapper(DataShuffler())`` pass data through.
    ``predict_proba``/``decision_function`` exist when the final estimator (the last
    step of the pipeline, followed through nested pipelines) has them. ``score`` is
    accuracy when that estimator is a classifier, R² otherwise.
    """

    def __init__(self, step):
        self.step = step

    # -- scikit-learn protocol
    def set_params(self, **params) -> "SklearnEstimatorAdapter":
        """``step=`` replaces the step; every other key is one of the step's hyperparameters,
        with or without the ``step__`` prefix (``C`` of ``LogisticRegression``:
        ``LogisticRegression__C`` or ``step__LogisticRegression__C``), so the keys of
        ``step.get_hyperparams_space().to_flat_dict()`` work as a search space as they are."""
        if "step" in params:
            self.step = params.pop("step")
        prefixed = {key[len("step__"):]: value for key, value in params.items() if key.startswith("step__")}
        bare = {key: value for key, value in params.items() if not key.startswith("step__")}
        if (prefixed or bare) and self.step is None:
            raise ValueError(f"cannot set {sorted(params)} on SklearnEstimatorAdapter(step=None)")
        if bare:  # an unknown bare key is scikit-learn's "Invalid parameter"
            try:
                _check_declared(self.step, bare)
                self.step.set_hyperparams(bare)
            except HyperparameterError as error:
                raise ValueError(f"Invalid parameter for {type(self).__name__}: {error}") from error
        if prefixed:
            self.step.set_hyperparams(prefixed)
        return self

    def __sklearn_clone__(self):
        return type(self)(None if self.step is None else _unfitted_copy(self.step))

    def __sklearn_is_fitted__(self) -> bool:
        return bool(self.step is not None and _is_fitted(self.step))

    def __sklearn_tags__(self):
        from sklearn.utils import get_tags
        tags = super().__sklearn_tags__()
        est = _final_estimator(self.step) if self.step is not None else None
        if est is not None:  # a classifier or regressor when the final estimator is one
            final = get_tags(est)
            tags.estimator_type = final.estimator_type
            tags.classifier_tags = final.classifier_tags
            tags.regressor_tags = final.regressor_tags
            tags.target_tags.required = final.target_tags.required
        tags.non_deterministic = True  # steps may shuffle or sample
        return tags

    @property
    def classes_(self):
        est = _final_estimator(self.step)
        if est is None or not hasattr(est, "classes_"):
            raise AttributeError("the final step exposes no classes_")
        return est.classes_

    # -- learning and inference
    def fit(self, X, y=None, **fit_params):
        if fit_params:
            raise TypeError(f"{type(self).__name__}.fit takes no fit parameters, got {sorted(fit_params)}")
        if self.step is None:
            raise ValueError("SklearnEstimatorAdapter(step=None) cannot be fitted")
        with call_mode(True):  # the call's mode: the step's own stays as it is
            self.step = self.step.fit(X, y)
        shape = getattr(X, "shape", None)
        if shape is not None and len(shape) == 2:
            self.n_features_in_ = shape[1]
        return self

    def predict(self, X):
        check_is_fitted(self)
        return self.step.predict(X)

    def transform(self, X):
        check_is_fitted(self)
        with inference():
            return self.step.transform(X)

    def fit_transform(self, X, y=None):
        return self.fit(X, y).transform(X)

    @available_if(_has_final_method("predict_proba"))
    def predict_proba(self, X):
        check_is_fitted(self)
        with inference():
            return _final_call(self.step, X, "predict_proba")

    @available_if(_has_final_method("predict_log_proba"))
    def predict_log_proba(self, X):
        check_is_fitted(self)
        with inference():
            return _final_call(self.step, X, "predict_log_proba")

    @available_if(_has_final_method("decision_function"))
    def decision_function(self, X):
        check_is_fitted(self)
        with inference():
            return _final_call(self.step, X, "decision_function")

    def score(self, X, y, sample_weight=None):
        from sklearn.base import is_classifier
        from sklearn.metrics import accuracy_score, r2_score
        predictions = self.predict(X)
        est = _final_estimator(self.step)
        if est is not None and is_classifier(est):
            return accuracy_score(y, predictions, sample_weight=sample_weight)
        return r2_score(y, predictions, sample_weight=sample_weight)


def _check_declared(step, flat: dict) -> None:
    """Refuse keys that name no declared hyperparameter, as scikit-learn's ``set_params`` does,
    even on steps that otherwise accept any name (those that declare none, as Neuraxle's)."""
    for owner, values in step._route(flat).items():
        unknown = sorted(set(values) - set(owner._own_hyperparam_names()))
        if unknown:
            raise HyperparameterError(
                f"step {owner.name!r} ({type(owner).__name__}) declares no hyperparameter "
                f"{', '.join(map(repr, unknown))}; valid keys are those of get_params()")


def _is_fitted(step) -> bool:
    """Whether every step of the tree that needs fitting is fitted."""
    return all(not s._needs_fit or s.is_fitted for s in step.apply(lambda s, cx: s).values())


def _final_call(step, X, method: str):
    """Transform ``X`` through every step but the final estimator, then call ``method`` on it."""
    if isinstance(step, SKLearnWrapper):
        if step._needs_fit and not step.is_fitted:
            step.transform(X)  # raises stepline's NotFittedError
        return getattr(step.wrapped_sklearn_predictor, method)(X)
    if len(step) > 1:
        X = step[:-1].transform(X)
    return _final_call(step[-1], X, method)


def to_sklearn(step) -> SklearnEstimatorAdapter:
    """A scikit-learn estimator view of ``step``: :class:`SklearnEstimatorAdapter` (``step.to_sklearn()``)."""
    if isinstance(step, SklearnEstimatorAdapter):
        return step
    return SklearnEstimatorAdapter(step)
