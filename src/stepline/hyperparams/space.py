"""Hyperparameter samples and spaces: flat ``"step__param"`` dicts that nest like pipelines.

Both classes store flat keys (``"inner__b__multiply_by"``). They accept nested dicts,
flat keys or a mix, and convert with :meth:`to_flat_dict` / :meth:`to_nested_dict`.
``obj["inner"]`` returns the sub-dict under that prefix.
"""
from __future__ import annotations

import json
from collections.abc import Mapping

SEPARATOR = "__"


def flatten(mapping: Mapping, prefix: str = "", out: dict | None = None, sep: str = SEPARATOR) -> dict:
    """Flatten nested mappings into ``{"a__b": value}``; keys must be strings."""
    out = {} if out is None else out
    for key, value in mapping.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"hyperparameter keys must be non-empty strings, got {key!r}")
        full = prefix + key
        if isinstance(value, Mapping) and not _is_leaf_mapping(value):
            if not value:
                continue
            flatten(value, full + sep, out, sep)
        else:
            out[full] = value
    return out


def _is_leaf_mapping(value) -> bool:
    """A mapping with a non-string key is a value (e.g. ``class_weight={0: 1, 1: 2}``), not a group."""
    return any(not isinstance(key, str) for key in value)


def nest(flat: Mapping, sep: str = SEPARATOR) -> dict:
    """The inverse of :func:`flatten`: ``{"a__b": 1}`` -> ``{"a": {"b": 1}}``."""
    nested: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split(sep)
        node = nested
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"hyperparameter {part!r} is both a value and a group (key {key!r})")
            node = child
        if isinstance(node.get(leaf), dict):
            raise ValueError(f"hyperparameter {key!r} is both a value and a group")
        node[leaf] = value
    return nested


class RecursiveDict(dict):
    """A dict of flat ``"a__b"`` keys that can be read as a tree.

    ``RecursiveDict(..., separator=".")`` joins levels with another separator
    (``"__"`` by default); ``rd[None]`` is the root level alone.
    """

    separator = SEPARATOR

    def __init__(self, *args, separator: str | None = None, **kwargs):
        super().__init__()
        if separator is None and args and isinstance(args[0], RecursiveDict):
            separator = args[0].separator
        if separator is not None and separator != type(self).separator:
            self.separator = separator
        if args or kwargs:
            source = dict(*args, **kwargs)
            if all(not isinstance(v, Mapping) or _is_leaf_mapping(v) for v in source.values()):
                _check_keys(source)
                super().update(source)
            else:
                super().update(flatten(source, sep=self.separator))

    def __getitem__(self, key):
        if key is None:  # the root level: the values of no sub-tree
            return self._new({k: v for k, v in dict.items(self) if self.separator not in k})
        try:
            return dict.__getitem__(self, key)
        except KeyError:
            sub = self._subtree(key)
            if sub is None:
                raise KeyError(f"{key!r}: no such hyperparameter or group in {sorted(self)}") from None
            return sub

    def __contains__(self, key) -> bool:
        return dict.__contains__(self, key) or self._subtree(key) is not None

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def _subtree(self, prefix: str):
        if not isinstance(prefix, str):
            return None
        start = prefix + self.separator
        items = {k[len(start):]: v for k, v in dict.items(self) if k.startswith(start)}
        return self._new(items) if items else None

    def _new(self, items):
        return type(self)(items, separator=self.separator) if self.separator != SEPARATOR else type(self)(items)

    def update(self, *args, **kwargs) -> None:
        super().update(self._new(dict(*args, **kwargs)))

    def __setitem__(self, key, value) -> None:
        if type(value) not in _SCALARS and isinstance(value, Mapping) and not _is_leaf_mapping(value):
            self.update({key: value})
        elif type(key) is str and key:  # (a load sets every hyperparameter of every step: no dict per key)
            dict.__setitem__(self, key, value)
        else:
            _check_keys({key: value})

    def to_flat_dict(self) -> dict:
        """A plain dict with flat ``"a__b"`` keys."""
        return dict(self.items())

    def iter_flat(self):
        """The ``(flat key, value)`` pairs (Neuraxle's name)."""
        return iter(dict(self.items()).items())

    def to_nested_dict(self) -> dict:
        """Plain nested dicts: ``{"a": {"b": value}}``."""
        return nest(self, self.separator)

    def to_wildcards(self) -> dict:
        """Each flat key under its shortest unambiguous wildcard (see :mod:`stepline.hyperparams.wildcards`)."""
        from stepline.hyperparams.wildcards import to_wildcards
        return to_wildcards(self.to_flat_dict())

    def with_prefix(self, prefix: str):
        """The same entries under ``prefix__``."""
        return self._new({f"{prefix}{self.separator}{k}": v for k, v in self.items()})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self.items())!r})"


#: Values that are never a group of hyperparameters (no ``isinstance`` of the ``Mapping`` ABC).
_SCALARS = frozenset({int, float, str, bool, type(None)})


def _check_keys(mapping: Mapping) -> None:
    for key in mapping:
        if not isinstance(key, str) or not key:
            raise TypeError(f"hyperparameter keys must be non-empty strings, got {key!r}")


class HyperparameterSamples(RecursiveDict):
    """Concrete hyperparameter values, e.g. ``{"LogisticRegression__C": 0.5}``."""

    def to_json(self) -> str:
        """JSON text of the nested values."""
        return json.dumps(self.to_nested_dict(), default=_json_default, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "HyperparameterSamples":
        """Inverse of :meth:`to_json`."""
        return cls(json.loads(text))


class HyperparameterSpace(RecursiveDict):
    """Distributions to sample hyperparameters from, nested like the pipeline.

    A value that is not a distribution is wrapped in ``FixedHyperparameter``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for key, value in list(dict.items(self)):
            dict.__setitem__(self, key, _as_distribution(value, key))

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        if not isinstance(value, Mapping):
            dict.__setitem__(self, key, _as_distribution(value, key))

    def rvs(self, random_state=None) -> HyperparameterSamples:
        """One sample of every hyperparameter (reproducible with a seed, a Generator or a RandomState)."""
        from stepline.hyperparams.distribution_base import _rng
        rng = _rng(random_state)
        return HyperparameterSamples({key: dist.rvs(random_state=rng) for key, dist in sorted(self.items())})

    def to_json(self) -> str:
        """JSON text of the nested space, every distribution as a typed dict."""
        nested = nest({k: v.to_json_dict() for k, v in self.items()})
        return json.dumps(nested, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "HyperparameterSpace":
        """Inverse of :meth:`to_json`."""
        from stepline.hyperparams.distributions import distribution_from_json_dict

        def revive(node):
            if isinstance(node, dict) and "type" in node and not isinstance(node["type"], dict):
                return distribution_from_json_dict(node)
            return {k: revive(v) for k, v in node.items()}
        return cls(revive(json.loads(text)))


def _as_distribution(value, key: str):
    from stepline.hyperparams.distributions import FixedHyperparameter, HyperparameterDistribution
    if isinstance(value, HyperparameterDistribution):
        return value
    if _is_frozen_scipy(value):  # scipy.stats.randint(2, 5), gamma(0.2): searched, as in Neuraxle
        from stepline.hyperparams.scipy_distributions import (ScipyContinuousDistributionWrapper,
                                                              ScipyDiscreteDistributionWrapper)
        from scipy import stats
        if isinstance(value.dist, stats.rv_discrete):
            return ScipyDiscreteDistributionWrapper(value)
        return ScipyContinuousDistributionWrapper(value)
    return FixedHyperparameter(value)


def _is_frozen_scipy(value) -> bool:
    """A frozen scipy.stats distribution (checked without importing scipy)."""
    return type(value).__module__.startswith("scipy.stats") and hasattr(value, "dist") and hasattr(value, "rvs")


def _json_default(value):
    import numpy as np
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"hyperparameter value {value!r} of type {type(value).__name__} is not JSON serialisable")


FlatDict = dict  # Neuraxle's name for a flat ``{"a__b": value}`` mapping (a type hint)
