"""scikit-learn habits on pipelines: ``predict_proba``, ``score``, ``classes_``, raw estimators.

:class:`EstimatorAPIMixin` gives a pipeline whose last step is a scikit-learn classifier
``predict_proba``, ``predict_log_proba``, ``decision_function`` and ``classes_`` directly
(each present only when the final estimator has it, so ``hasattr`` tells), and ``score``
(accuracy for classifiers, R² otherwise), all in inference mode. :func:`wrap_foreign_steps`
lets ``Pipeline([StandardScaler(), LogisticRegression()])`` take raw estimators, as Neuraxle does.
"""
from __future__ import annotations


def _is_sklearn_estimator(obj) -> bool:
    return (not isinstance(obj, type) and hasattr(obj, "fit") and hasattr(obj, "get_params")
            and (hasattr(obj, "predict") or hasattr(obj, "transform")))


def wrap_foreign_steps(steps):
    """``steps`` with each raw scikit-learn estimator (bare or in a ``(name, est)`` pair) wrapped
    in :class:`~stepline.steps.sklearn.SKLearnWrapper`."""
    from stepline.core.step import BaseTransformer
    if isinstance(steps, BaseTransformer):
        return steps

    def wrap(obj):
        if isinstance(obj, BaseTransformer) or not _is_sklearn_estimator(obj):
            return obj
        from stepline.steps.sklearn import SKLearnWrapper
        return SKLearnWrapper(obj)
    out = []
    for item in steps:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            out.append((item[0], wrap(item[1])))
        else:
            out.append(wrap(item))
    return out


def _final_method(step, method: str):
    from stepline.steps.sklearn import _final_estimator, to_sklearn
    est = _final_estimator(step)
    if est is None or not hasattr(est, method):
        raise AttributeError(f"{type(step).__name__} {step.name!r}: its last step has no {method} "
                             f"(it is {type(est).__name__ if est is not None else 'not a scikit-learn estimator'})")
    return getattr(to_sklearn(step), method)


class EstimatorAPIMixin:
    """``predict_proba``/``predict_log_proba``/``decision_function``/``classes_``/``score`` of the final estimator."""

    @property
    def predict_proba(self):
        return _final_method(self, "predict_proba")

    @property
    def predict_log_proba(self):
        return _final_method(self, "predict_log_proba")

    @property
    def decision_function(self):
        return _final_method(self, "decision_function")

    @property
    def classes_(self):
        from stepline.steps.sklearn import _final_estimator
        est = _final_estimator(self)
        if est is None or not hasattr(est, "classes_"):
            raise AttributeError(f"{type(self).__name__} {self.name!r}: its last step has no classes_ "
                                 f"(not a fitted classifier)")
        return est.classes_

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy for a final classifier, R² otherwise (scikit-learn's ``score``)."""
        from stepline.steps.sklearn import to_sklearn
        return to_sklearn(self).score(X, y, sample_weight=sample_weight)
