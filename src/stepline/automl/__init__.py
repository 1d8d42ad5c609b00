"""Tuning the spaces declared on the steps, with Optuna as the engine (``pip install stepline[automl]``).

``AutoML(pipeline, scoring=..., cv=..., n_trials=...)`` searches ``pipeline``'s
hyperparameter space: Optuna's samplers, pruners and storages; trials on local worker
processes (``n_jobs``) or a Dask cluster (``client``), each worker receiving the pipeline as
a stepline dump once; resumable from an Optuna storage (SQLite, any SQL URL). Optuna is
imported when a search starts, not when this package is.
"""
from stepline.automl.search import AutoML

__all__ = ["AutoML"]
