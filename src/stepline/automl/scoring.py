"""How a trial is scored, the scikit-learn way: scorers, CV splitters, a validation split.

- ``scoring``: ``None`` (the estimator's ``score``: accuracy for classifiers, R² otherwise),
  a scorer name (``"accuracy"``, ``"roc_auc"``, ``"neg_log_loss"``…) or a callable
  ``scorer(estimator, X, y) -> float``. Scores are greater-is-better, as in scikit-learn,
  so the study maximizes.
- ``cv``: an int (``StratifiedKFold`` for classifiers, ``KFold`` otherwise, as
  ``check_cv`` does), any splitter or iterable of ``(train, test)`` indices, or a float in
  (0, 1): one validation split holding out that fraction (stratified for classifiers,
  seeded so every trial sees the same rows).

The splits are computed once in the driver, so every trial and every worker scores on the
same rows.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable

import numpy as np

__all__ = ["resolve_scorer", "resolve_splits", "take_rows"]

VALIDATION_SEED = 0


def default_score(estimator, X, y) -> float:
    """The estimator's own ``score`` (scikit-learn's default when ``scoring=None``)."""
    return estimator.score(X, y)


def resolve_scorer(scoring: Any) -> Callable:
    """A callable ``scorer(estimator, X, y)`` for ``scoring``; ValueError naming a bad one."""
    if scoring is None:
        return default_score
    if isinstance(scoring, str):
        from sklearn.metrics import get_scorer, get_scorer_names
        if scoring not in get_scorer_names():
            raise ValueError(f"AutoML: scoring={scoring!r} is not a scikit-learn scorer name; "
                             f"valid names: {sorted(get_scorer_names())}")
        return get_scorer(scoring)
    if callable(scoring):
        return scoring
    raise ValueError(f"AutoML: scoring must be None, a scorer name or a callable "
                     f"scorer(estimator, X, y), got {scoring!r}")


def resolve_splits(cv: Any, X, y, classifier: bool) -> list:
    """The ``(train_indices, test_indices)`` pairs of ``cv`` on ``X, y``."""
    from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit, check_cv
    if isinstance(cv, numbers.Real) and not isinstance(cv, (bool, numbers.Integral)):
        if not 0.0 < cv < 1.0:
            raise ValueError(f"AutoML: a float cv is the validation fraction, in (0, 1); got {cv!r}")
        kind = StratifiedShuffleSplit if classifier else ShuffleSplit
        splitter = kind(n_splits=1, test_size=float(cv), random_state=VALIDATION_SEED)
    else:
        if isinstance(cv, bool) or (isinstance(cv, numbers.Integral) and cv < 2):
            raise ValueError(f"AutoML: an int cv is the number of folds, at least 2; got {cv!r}")
        try:
            splitter = check_cv(cv, y, classifier=classifier)
        except (TypeError, ValueError) as error:
            raise ValueError(f"AutoML: cv={cv!r} is not a number of folds, a validation fraction "
                             f"or a splitter: {error}") from error
    try:
        splits = [(np.asarray(train), np.asarray(test)) for train, test in splitter.split(X, y)]
    except ValueError as error:  # e.g. more folds than rows
        raise ValueError(f"AutoML: cv={cv!r} cannot split the data: {error}") from error
    if not splits:
        raise ValueError(f"AutoML: cv={cv!r} produced no split")
    return splits


def take_rows(data, indices: np.ndarray):
    """Rows ``indices`` of an array, a DataFrame/Series (by position) or a list."""
    if data is None:
        return None
    if hasattr(data, "iloc"):
        return data.iloc[indices]
    if isinstance(data, (list, tuple)):
        return [data[i] for i in indices]
    return np.asarray(data)[indices]
