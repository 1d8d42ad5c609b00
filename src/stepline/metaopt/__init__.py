"""Neuraxle's ``metaopt`` package name. stepline tunes with :mod:`stepline.automl` (Optuna);
only the names ported code imports outside tuning live here."""
