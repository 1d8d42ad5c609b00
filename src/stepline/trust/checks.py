"""Checks of what an untrusted pickle built, for allowed classes whose native code trusts their state.

The allow-list admits classes that run no code of the attacker's choosing, but some of them
hand their state to compiled code that trusts it: a scikit-learn ``Tree`` walks its nodes by
the child indices it holds and reads ``X[i, feature]`` with no bounds check, so a dump whose
tree points past its node array crashes (or reads other memory) at ``predict``, and one whose
nodes form a cycle loops for ever. After a restricted unpickling, :func:`check_loaded` walks
the objects built and refuses such state with :class:`~stepline.trust.errors.UnsafeStateError`
before the object is returned.

Checked: every ``sklearn.tree._tree.Tree`` is a tree (each node but the root has exactly one
parent, children come after their parent, leaves have no children), its split features are
in ``[0, n_features)``, its recorded depth covers its real depth; a decision tree estimator's
tree has as many features as the estimator checks ``X`` for, and so do the trees of a forest
or a gradient boosting (they are called without checking their input); k-means centres and
libsvm's support vectors, dual coefficients and intercepts have the shapes their compiled
code reads. Other estimators' compiled code may trust its state too: this is the list of
what was found and fixed, not a proof (see docs/trust.md, "Attacks tested").
"""
from __future__ import annotations

import fractions
import re

import numpy as np

from stepline.trust.errors import UnsafeStateError

_LEAF = -1
_MAX_OBJECTS = 10_000_000
#: The longest ``range`` an untrusted pickle may build: a range is lazy, so a few bytes of
#: pickle, ``set(range(10**18))`` or ``deque(range(10**18), maxlen=1)``, would never end.
MAX_RANGE = 1 << 24
_PLAIN_RATIONAL = re.compile(r"\s*[+-]?\d{1,4000}(/\d{1,4000})?\s*")


def guarded(qualified: str):
    """The checked stand-in an untrusted pickle gets for the allowed callable ``qualified``
    whose arguments alone could hang or exhaust the loader, or ``None`` (most need none).

    ``fractions.Fraction("1e1000000000")`` computes ``10**1000000000`` (so does a Fraction of
    a Decimal with such an exponent); ``range`` is lazy (see :data:`MAX_RANGE`); ``bytearray(n)``
    of an int allocates ``n`` bytes (pickles of bytearrays carry their bytes, never a length).
    """
    return _GUARDS.get(qualified)


def _fraction(*args):
    for value in args:
        if not (type(value) in (int, float, fractions.Fraction)
                or type(value) is str and _PLAIN_RATIONAL.fullmatch(value)):
            _refuse_call("fractions.Fraction", value, "only integers, floats, fractions or 'n/d' strings")
    return fractions.Fraction(*args)


def _range(*args):
    made = range(*args)
    if len(made) > MAX_RANGE:
        _refuse_call("builtins.range", args, f"a range of {len(made)} numbers (at most {MAX_RANGE})")
    return made


def _bytearray(*args):
    if args and not isinstance(args[0], (bytes, bytearray, memoryview, str)):
        _refuse_call("builtins.bytearray", args[0], "only from bytes (a pickled bytearray carries its bytes)")
    return bytearray(*args)


class RefusedCall(ValueError):
    """A guarded call refused (see :func:`guarded`); the unpickler words it as an
    :class:`UnsafeStateError` naming the pickle."""

    def __init__(self, message: str, qualified: str):
        super().__init__(message)
        self.qualified = qualified


def _refuse_call(qualified: str, value, allowed: str) -> None:
    raise RefusedCall(f"untrusted pickle calls {qualified} with {_short(value)}: {allowed}, so that a few "
                      f"bytes of pickle cannot hang or exhaust the load", qualified)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_GUARDS = {"fractions.Fraction": _fraction, "builtins.range": _range, "builtins.bytearray": _bytearray}


def check_loaded(obj, where) -> None:
    """Raise :class:`UnsafeStateError` naming ``where`` if anything built from an untrusted
    pickle has state its native code would read out of bounds or loop on (see the module doc)."""
    tree_class, estimator_checks = _sklearn_classes()
    if tree_class is None:
        return  # (scikit-learn is not imported: no pickle built one of its objects)
    for item in _objects(obj):
        if type(item) is tree_class:
            check_tree(item, where)
        else:
            for cls, check in estimator_checks:
                if isinstance(item, cls):
                    check(item, where)


def check_tree(tree, where) -> None:
    """Raise :class:`UnsafeStateError` unless ``tree`` (a scikit-learn ``Tree``) is a tree
    whose indices all stay inside its arrays."""
    state = tree.__getstate__()
    nodes, count = state["nodes"], int(state["node_count"])
    left, right, feature = (np.asarray(nodes[f], dtype=np.int64) for f in ("left_child", "right_child", "feature"))
    problem = _tree_problem(left, right, feature, count, int(tree.n_features), int(state["max_depth"]))
    if problem:
        raise UnsafeStateError(f"{where}: untrusted pickle holds a scikit-learn decision tree that {problem}: "
                               f"its predictions would read outside its arrays or never end, so it is "
                               f"refused (not a tree scikit-learn built)", {str(where): ["sklearn.tree._tree.Tree"]})


def _tree_problem(left, right, feature, count: int, n_features: int, max_depth: int) -> str | None:
    if count < 1 or len(left) != count:
        return f"lists {len(left)} nodes but says it has {count}"
    leaf = left == _LEAF
    if not np.array_equal(leaf, right == _LEAF):
        return "has a node with one child"
    index = np.arange(count)
    inner = ~leaf
    for side, children in (("left", left), ("right", right)):
        if np.any(inner & ((children <= index) | (children >= count))):
            bad = int(np.flatnonzero(inner & ((children <= index) | (children >= count)))[0])
            return f"has node {bad} whose {side} child {int(children[bad])} is not a later node of its {count}"
    parents = np.bincount(np.concatenate([left[inner], right[inner]]), minlength=count)
    if parents[0] != 0 or np.any(parents[1:] != 1):
        return "has nodes with no parent or with several (not a tree)"
    if np.any(inner & ((feature < 0) | (feature >= n_features))):
        bad = int(np.flatnonzero(inner & ((feature < 0) | (feature >= n_features)))[0])
        return f"splits node {bad} on feature {int(feature[bad])} of {n_features}"
    if _depth(left, right, inner) > max_depth:
        return f"is deeper than the depth it records ({max_depth})"
    return None


def _depth(left, right, inner) -> int:
    depth, level = 0, np.array([0])
    while True:
        level = level[inner[level]]
        if not level.size:
            return depth
        level = np.concatenate([left[level], right[level]])
        depth += 1


def _check_tree_estimator(estimator, where) -> None:
    """A decision tree estimator checks ``X`` for ``n_features_in_`` columns, then its tree reads them."""
    tree, expected = estimator.__dict__.get("tree_"), estimator.__dict__.get("n_features_in_")
    if tree is not None and expected is not None and getattr(tree, "n_features", None) != expected:
        _refuse_features(estimator, where, f"its tree has {getattr(tree, 'n_features', None)} features")


def _check_ensemble(ensemble, where) -> None:
    """A forest or a gradient boosting checks ``X`` once, then calls its trees without checking."""
    expected = ensemble.__dict__.get("n_features_in_")
    estimators = ensemble.__dict__.get("estimators_")
    if expected is None or estimators is None:
        return
    for member in np.asarray(estimators, dtype=object).ravel():
        found = getattr(member, "__dict__", {}).get("n_features_in_")
        if found != expected:
            _refuse_features(ensemble, where, f"one of its trees checks for {found}")


def _check_kmeans(estimator, where) -> None:
    """k-means' compiled code reads ``n_features_in_`` columns of each centre (X is checked for that many)."""
    centers, expected = estimator.__dict__.get("cluster_centers_"), estimator.__dict__.get("n_features_in_")
    if centers is None or expected is None:
        return
    if not (isinstance(centers, np.ndarray) and centers.ndim == 2 and centers.shape[1] == expected
            and centers.dtype in (np.float32, np.float64)):
        _refuse_shape(estimator, where, f"cluster_centers_ {_shape(centers)} for {expected} features")


def _check_libsvm(estimator, where) -> None:
    """libsvm reads as many coefficients per class as there are support vectors, and each of
    those over the columns of X (sklearn checks only the support counts, and only dense)."""
    state = estimator.__dict__
    vectors, dual, intercept, counts = (state.get(k) for k in ("support_vectors_", "_dual_coef_", "_intercept_",
                                                                 "_n_support"))
    if vectors is None or dual is None or state.get("_sparse"):
        return
    classes = len(counts) if "classes_" in state and counts is not None else 2
    if not (isinstance(vectors, np.ndarray) and vectors.ndim == 2 and vectors.shape[1] == state.get("n_features_in_")):
        _refuse_shape(estimator, where, f"support vectors {_shape(vectors)} for {state.get('n_features_in_')} features")
    if not (isinstance(dual, np.ndarray) and dual.shape == (classes - 1, vectors.shape[0])):
        _refuse_shape(estimator, where, f"dual coefficients {_shape(dual)} for {vectors.shape[0]} support vectors "
                                        f"and {classes} classes")
    if not (isinstance(intercept, np.ndarray) and intercept.shape == (classes * (classes - 1) // 2,)):
        _refuse_shape(estimator, where, f"intercepts {_shape(intercept)} for {classes} classes")


def _shape(value) -> str:
    return f"of shape {value.shape}" if isinstance(value, np.ndarray) else f"of type {type(value).__name__}"


def _refuse_shape(estimator, where, found: str) -> None:
    name = type(estimator).__name__
    raise UnsafeStateError(f"{where}: untrusted pickle holds a {name} with {found}: its compiled code would "
                           f"read outside its arrays, so it is refused (not state scikit-learn fitted)",
                           {str(where): [f"{type(estimator).__module__}.{name}"]})


def _refuse_features(estimator, where, found: str) -> None:
    name = type(estimator).__name__
    raise UnsafeStateError(f"{where}: untrusted pickle holds a {name} that checks X for "
                           f"{estimator.__dict__.get('n_features_in_')} features but {found}: its "
                           f"predictions would read outside X, so it is refused",
                           {str(where): [f"{type(estimator).__module__}.{name}"]})


def _sklearn_classes():
    import sys
    if "sklearn" not in sys.modules:
        return None, ()
    from sklearn.cluster._kmeans import _BaseKMeans
    from sklearn.ensemble._forest import BaseForest
    from sklearn.ensemble._gb import BaseGradientBoosting
    from sklearn.svm._base import BaseLibSVM
    from sklearn.tree import BaseDecisionTree
    from sklearn.tree._tree import Tree
    return Tree, ((BaseDecisionTree, _check_tree_estimator), (BaseForest, _check_ensemble),
                  (BaseGradientBoosting, _check_ensemble), (_BaseKMeans, _check_kmeans), (BaseLibSVM, _check_libsvm))


def _objects(root):
    """Every object reachable from ``root`` through containers, object arrays and ``__dict__``s, once."""
    seen, pending = set(), [root]
    while pending:
        item = pending.pop()
        if id(item) in seen or isinstance(item, (str, bytes, int, float, bool, type(None))):
            continue
        seen.add(id(item))
        if len(seen) > _MAX_OBJECTS:
            return
        yield item
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            pending.extend(item)
        elif isinstance(item, np.ndarray):
            if item.dtype.hasobject:
                pending.extend(item.ravel().tolist())
        else:
            attributes = getattr(item, "__dict__", None)
            if isinstance(attributes, dict):
                pending.extend(attributes.values())
