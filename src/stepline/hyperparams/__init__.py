"""Hyperparameter distributions, spaces and samples."""
