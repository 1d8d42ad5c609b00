"""Attacks on loading a dump (DESIGN §5, §5a): "a dump must never hand a user the wrong model,
never hang, and never run code nobody trusted".

Each test is one attack on the public API, on a real dump edited the way an attacker would
(tests/trust_tamper.py recomputes every digest, so only the signature can tell). The attacks
the older suites already stop (tests/test_trust*.py, test_broken_dumps.py, test_dump_integrity.py,
test_inline_payloads.py, test_copied_load.py) are not repeated here.
"""
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from trust_tamper import write_files  # noqa: E402

from stepline import CX  # noqa: E402
from stepline.saving import StepLoadError  # noqa: E402


# ------------------------------------------------ native code that trusts an allowed object's state
def _tree_dump(tmp_path, change, estimator="tree"):
    """An untrusted dump of a fitted SKLearnWrapper whose estimator ``change`` edited."""
    pytest.importorskip("sklearn")
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
    from sklearn.tree import DecisionTreeRegressor
    from stepline.steps.sklearn import SKLearnWrapper
    made = {"tree": lambda: DecisionTreeRegressor(max_depth=3),
            "forest": lambda: RandomForestRegressor(n_estimators=3, max_depth=3, random_state=0),
            "boosting": lambda: GradientBoostingRegressor(n_estimators=3, max_depth=2, random_state=0)}[estimator]
    X = np.random.default_rng(0).random((60, 3))
    step = SKLearnWrapper(made(), name="model").fit(X, X[:, 0])
    step.save(CX(tmp_path / "dump"), full_dump=True)
    change(step.wrapped_sklearn_predictor)
    root = tmp_path / "dump" / "model"
    write_files(root, {"step.pkl": pickle.dumps(step, protocol=5)}, root)
    return root


def _edit_nodes(tree, edit):
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    edit(nodes)
    state["nodes"] = nodes
    tree.__setstate__(state)


def _child_past_the_end(estimator):
    _edit_nodes(estimator.tree_, lambda n: n["left_child"].__setitem__(0, 10 ** 8))  # predict: a segfault


def _cycle(estimator):
    def edit(nodes):
        nodes["left_child"][1], nodes["right_child"][1] = 0, 0  # predict: loops for ever, in C
    _edit_nodes(estimator.tree_, edit)


def _feature_past_x(estimator):
    _edit_nodes(estimator.tree_, lambda n: n["feature"].__setitem__(0, 10 ** 7))  # reads far outside X


def _shared_child(estimator):
    _edit_nodes(estimator.tree_, lambda n: n["right_child"].__setitem__(0, n["left_child"][0]))


def _more_features_than_checked(estimator):
    estimator.n_features_in_ = 2  # X of 2 columns is accepted, the tree reads column 2


TREE_ATTACKS = {"child past the end": _child_past_the_end, "cycle": _cycle, "feature past X": _feature_past_x,
                "two parents": _shared_child, "n_features_in_ below the tree's": _more_features_than_checked}


@pytest.mark.parametrize("attack", sorted(TREE_ATTACKS))
def test_an_untrusted_sklearn_tree_whose_nodes_point_outside_is_refused_before_predict(tmp_path, attack):
    """On main these loaded, and ``predict`` crashed the process (SIGSEGV), hung in C, or read
    other memory: the allow-list admits the Tree class, whose compiled code trusts its nodes."""
    from stepline.trust import UnsafeStateError
    root = _tree_dump(tmp_path, TREE_ATTACKS[attack])
    with pytest.raises(UnsafeStateError, match=f"{root / 'step.pkl'}.*(tree|features)") as caught:
        CX(tmp_path / "dump").load("model")
    assert isinstance(caught.value, StepLoadError)


@pytest.mark.parametrize("estimator", ["forest", "boosting"])
def test_an_untrusted_ensemble_whose_trees_read_more_features_than_it_checks_is_refused(tmp_path, estimator):
    """A forest or a gradient boosting checks X once, then runs its trees without checking."""
    from stepline.trust import UnsafeStateError

    def change(ensemble):
        members = np.asarray(ensemble.estimators_, dtype=object).ravel()
        for member in members:
            member.tree_ = members[0].tree_
        ensemble.n_features_in_ = 2
        for member in members:
            member.n_features_in_ = 3
    _tree_dump(tmp_path, change, estimator)
    with pytest.raises(UnsafeStateError, match="features"):
        CX(tmp_path / "dump").load("model")


@pytest.mark.parametrize("estimator", ["tree", "forest", "boosting"])
def test_untouched_untrusted_trees_still_load_and_predict(tmp_path, estimator):
    root = _tree_dump(tmp_path, lambda e: None, estimator)
    loaded = CX(tmp_path / "dump").load("model", trusted=False)
    X = np.random.default_rng(1).random((5, 3))
    assert loaded.predict(X).shape == (5,)
    assert root.exists()
