"""The base of hyperparameter distributions: sampling helpers, base classes, the JSON registry.

Concrete distributions live in :mod:`stepline.hyperparams.discrete` and
:mod:`stepline.hyperparams.continuous`; import them from :mod:`stepline.hyperparams.distributions`.
"""
from __future__ import annotations

import inspect
import math
import numbers
from abc import ABC, abstractmethod
from typing import Any, Union

import numpy as np



RandomState = Union[None, int, np.random.Generator, np.random.RandomState]

_REGISTRY: dict[str, type] = {}
_JSON_SCALARS = (type(None), bool, int, float, str)
_LN2 = math.log(2.0)
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

# --------------------------------------------------------------------------- helpers

def _rng(random_state: RandomState) -> np.random.Generator:
    """A Generator from None (fresh entropy), an int seed, a Generator (used as is) or a
    legacy ``RandomState`` (scikit-learn's: a seed is drawn from it, so it advances)."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2 ** 63 - 1, dtype=np.int64))
    if random_state is None or _is_int(random_state):
        return np.random.default_rng(None if random_state is None else int(random_state))
    raise TypeError("random_state must be None, an int seed, a numpy.random.Generator or a "
                    f"numpy.random.RandomState, got {random_state!r}")


def _plain(value: Any) -> Any:
    """The Python value of a numpy scalar; anything else unchanged."""
    return value.item() if isinstance(value, np.generic) else value


def _is_real(value: Any) -> bool:
    """True for a real number that is neither a bool nor NaN."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and not math.isnan(value))


def _is_int(value: Any) -> bool:
    """True for an integer that is not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _number(owner: str, name: str, value: Any) -> float:
    """``value`` as a float; ValueError naming ``owner`` and ``name`` unless finite and real."""
    if not _is_real(value) or math.isinf(value):
        raise ValueError(f"{owner}: {name} must be a finite number, got {value!r}")
    return float(value)


def _integer(owner: str, name: str, value: Any) -> int:
    """``value`` as an int; ValueError naming ``owner`` and ``name`` unless an integer."""
    if not _is_int(value):
        raise ValueError(f"{owner}: {name} must be an int, got {value!r}")
    return int(value)


def _same(a: Any, b: Any) -> bool:
    """Equality that never raises and never takes a bool for a number."""
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - exotic __eq__ (arrays, broken objects) means "not equal"
        return False


def _check_json_safe(owner: str, name: str, value: Any) -> None:
    """ValueError unless ``value`` survives ``json.dumps``/``json.loads`` unchanged."""
    if isinstance(value, list):
        for item in value:
            _check_json_safe(owner, name, item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if type(key) is not str:
                raise ValueError(f"{owner}: {name} has the non-str key {key!r}, which JSON "
                                 "cannot carry")
            _check_json_safe(owner, name, item)
    elif type(value) not in _JSON_SCALARS:
        raise ValueError(f"{owner}: {name} holds {value!r}, which JSON cannot carry; JSON needs "
                         "None, bool, int, float, str, and lists and str-keyed dicts of those")


# ---------------------------------------------------------------------- base classes

def _accepting_null_default_value(init):
    """``__init__`` that also takes Neuraxle's ``null_default_value=`` keyword and keeps it."""
    import functools
    import inspect as _inspect
    if "null_default_value" in _inspect.signature(init).parameters:
        return init

    @functools.wraps(init)
    def __init__(self, *args, null_default_value=None, **kwargs):
        init(self, *args, **kwargs)
        if null_default_value is not None:
            self.null_default_value = null_default_value
    return __init__


class HyperparameterDistribution(ABC):
    """Base of all distributions: sampling, support, equality, repr and JSON."""

    #: Whether the distribution has a density (``pdf``) rather than a mass function (``pmf``).
    is_continuous: bool = False

    #: The value the hyperparameter takes when its step is disabled (Neuraxle's argument).
    null_default_value: Any = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            _REGISTRY.setdefault(cls.__name__, cls)
        if "__init__" in cls.__dict__:
            cls.__init__ = _accepting_null_default_value(cls.__dict__["__init__"])

    def rvs(self, random_state: RandomState = None) -> Any:
        """Draw one value, as a plain Python value."""
        return _plain(self.rvs_many(1, random_state)[0])

    def rvs_many(self, n: int = None, random_state: RandomState = None, *, size: int = None
                 ) -> Union[np.ndarray, list]:
        """Draw ``n`` values: a numpy array for numbers, a list for arbitrary choices (``size=``: Neuraxle's name)."""
        n = size if n is None else n
        if not _is_int(n) or n < 0:
            raise ValueError(f"{type(self).__name__}.rvs_many: n must be an int >= 0, got {n!r}")
        return self._sample(_rng(random_state), int(n))

    @abstractmethod
    def _sample(self, rng: np.random.Generator, n: int) -> Union[np.ndarray, list]:
        """Draw ``n`` values with ``rng``."""

    @abstractmethod
    def __contains__(self, value: Any) -> bool:
        """Whether ``value`` is in the support; False, never an error, for a wrong type."""

    @abstractmethod
    def _params(self) -> dict:
        """The constructor arguments, by keyword, in signature order."""

    def to_json_dict(self) -> dict:
        """A JSON-safe dict: ``{"type": <class name>, <constructor argument>: <value>, ...}``."""
        out: dict = {"type": type(self).__name__}
        for key, value in self._params().items():
            if isinstance(value, HyperparameterDistribution):
                value = value.to_json_dict()
            else:
                _check_json_safe(type(self).__name__, key, value)
            out[key] = value
        return out

    @classmethod
    def _from_json_params(cls, params: dict) -> HyperparameterDistribution:
        """Build from the parameters of :meth:`to_json_dict` (without ``"type"``)."""
        return cls(**params)

    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        return self._params() == other._params()

    def __hash__(self) -> int:
        return hash(type(self).__name__)

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self._params().items())
        return f"{type(self).__name__}({args})"


class ContinuousDistribution(HyperparameterDistribution):
    """A distribution with a density over an interval of the real line."""

    is_continuous = True

    @abstractmethod
    def pdf(self, x: float) -> float:
        """Probability density at ``x``."""

    @abstractmethod
    def cdf(self, x: float) -> float:
        """Probability of a draw <= ``x``."""

    @abstractmethod
    def min(self) -> float:
        """Lower bound of the support (may be ``-inf``)."""

    @abstractmethod
    def max(self) -> float:
        """Upper bound of the support (may be ``inf``)."""

    @abstractmethod
    def mean(self) -> float:
        """Expected value."""

    @abstractmethod
    def std(self) -> float:
        """Standard deviation."""

    def __contains__(self, value: Any) -> bool:
        return _is_real(value) and math.isfinite(value) and self.min() <= value <= self.max()

    def var(self) -> float:
        """Variance (``std() ** 2``)."""
        return self.std() ** 2


class DiscreteDistribution(HyperparameterDistribution):
    """A distribution over countably many values."""

    @abstractmethod
    def pmf(self, value: Any) -> float:
        """Probability of drawing ``value``; 0.0 outside the support."""

    @abstractmethod
    def probabilities(self) -> dict:
        """Every value of the support mapped to its probability."""

    def pdf(self, value: Any) -> float:
        """Neuraxle's name for :meth:`pmf` on discrete distributions."""
        return self.pmf(value)

    def var(self) -> float:
        """Variance (``std() ** 2``), where the values are numbers."""
        return self.std() ** 2


# --------------------------------------------------------------------------- JSON

def distribution_from_json_dict(d: dict) -> HyperparameterDistribution:
    """Rebuild a distribution from the output of its ``to_json_dict()``."""
    if not isinstance(d, dict) or not isinstance(d.get("type"), str):
        raise ValueError("distribution_from_json_dict: expected a dict with a str 'type' key, "
                         f"got {d!r}")
    if d["type"] == "ScipyDistribution":
        import stepline.hyperparams.scipy_distribution  # noqa: F401 - registers the type
    known = {name: cls for name, cls in _REGISTRY.items() if not inspect.isabstract(cls)}
    cls = known.get(d["type"])
    if cls is None:
        raise ValueError(f"distribution_from_json_dict: unknown distribution type {d['type']!r}; "
                         f"known types: {sorted(known)}")
    params = {key: value for key, value in d.items() if key != "type"}
    try:
        return cls._from_json_params(params)
    except (TypeError, KeyError) as error:
        raise ValueError(f"distribution_from_json_dict: cannot build {d['type']} from "
                         f"{params!r}: {error}") from error
