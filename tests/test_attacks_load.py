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


def _sklearn_dump(tmp_path, make, change):
    pytest.importorskip("sklearn")
    from stepline.steps.sklearn import SKLearnWrapper
    X = np.random.default_rng(0).random((40, 3))
    step = SKLearnWrapper(make(), name="model").fit(X, (X[:, 0] > .5).astype(int))
    step.save(CX(tmp_path / "dump"), full_dump=True)
    change(step.wrapped_sklearn_predictor)
    root = tmp_path / "dump" / "model"
    write_files(root, {"step.pkl": pickle.dumps(step, protocol=5)}, root)
    return root


def _kmeans():
    from sklearn.cluster import KMeans
    return KMeans(3, n_init=1, random_state=0)


def _svc():
    from sklearn.svm import SVC
    return SVC()


def _narrow_centres(e):
    e.cluster_centers_ = np.ascontiguousarray(e.cluster_centers_[:, :1])


def _fewer_dual_coefficients(e):
    e._dual_coef_ = np.ascontiguousarray(e._dual_coef_[:, :1])


def _narrow_support_vectors(e):
    e.support_vectors_ = np.ascontiguousarray(e.support_vectors_[:, :1])


SHAPE_ATTACKS = {"k-means centres of 1 column for 3 features": (_kmeans, _narrow_centres),
                 "SVC with one dual coefficient for 20 support vectors": (_svc, _fewer_dual_coefficients),
                 "SVC support vectors of 1 column for 3 features": (_svc, _narrow_support_vectors)}


@pytest.mark.parametrize("attack", sorted(SHAPE_ATTACKS))
def test_an_untrusted_estimator_whose_arrays_its_compiled_code_overreads_is_refused(tmp_path, attack):
    """On main these loaded and predicted from memory past their arrays (silently: no error,
    scikit-learn checks neither)."""
    from stepline.trust import UnsafeStateError
    root = _sklearn_dump(tmp_path, *SHAPE_ATTACKS[attack])
    with pytest.raises(UnsafeStateError, match=f"{root / 'step.pkl'}.*(shape)"):
        CX(tmp_path / "dump").load("model")


@pytest.mark.parametrize("make", [_kmeans, _svc])
def test_untouched_untrusted_kmeans_and_svc_still_load_and_predict(tmp_path, make):
    _sklearn_dump(tmp_path, make, lambda e: None)
    assert CX(tmp_path / "dump").load("model").predict(np.random.default_rng(2).random((4, 3))).shape == (4,)


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


# ------------------------------------------------ allowed callables whose arguments alone hang or exhaust
LOAD = r"""
import json, sys
from stepline import CX
from stepline.saving import StepLoadError
try:
    CX(sys.argv[1]).load("p")
except StepLoadError as error:
    print(json.dumps({"error": type(error).__name__, "message": str(error)}))
else:
    print(json.dumps({"error": None}))
"""


def _gadget_dump(tmp_path, value):
    """An unsigned dump of an Identity step holding ``value`` (a trust_payloads.Call) as an attribute."""
    from stepline.base import Identity
    Identity(name="p").save(CX(tmp_path / "dump"), full_dump=True)
    step = Identity(name="p")
    step.gadget = value
    root = tmp_path / "dump" / "p"
    write_files(root, {"step.pkl": pickle.dumps(step, protocol=5)}, root)
    return root


def _gadgets():
    import collections
    import decimal
    import fractions
    from trust_payloads import Call
    return {"Fraction('1e100000000')": Call(fractions.Fraction, "1e100000000"),  # 10**100000000
            "Fraction(Decimal('1e100000000'))": Call(fractions.Fraction, Call(decimal.Decimal, "1e100000000")),
            "deque(range(10**18), maxlen=1)": Call(collections.deque, Call(range, 10 ** 18), 1),
            "set(range(10**18))": Call(set, Call(range, 10 ** 18)),
            "bytearray(2**62)": Call(bytearray, 2 ** 62)}


@pytest.mark.parametrize("gadget", sorted(_gadgets()))
def test_an_allowed_callable_whose_arguments_alone_would_hang_the_load_is_refused(tmp_path, gadget):
    """A few bytes of pickle, every global on the allow-list: on main these ran for ever (or
    were a MemoryError) inside the restricted unpickler."""
    import json
    import subprocess
    root = _gadget_dump(tmp_path, _gadgets()[gadget])
    result = subprocess.run([sys.executable, "-c", LOAD, str(tmp_path / "dump")], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["error"] == "UnsafeStateError" and str(root / "step.pkl") in outcome["message"], outcome


def test_the_guarded_callables_still_build_what_their_pickles_hold(tmp_path):
    import collections
    import fractions
    value = {"f": fractions.Fraction(-7, 3), "r": range(0, 100, 7), "b": bytearray(b"ab"),
             "d": collections.deque(range(5), maxlen=3), "s": {1, 2}}
    from stepline.base import Identity
    step = Identity(name="p")
    step.value = value
    root = tmp_path / "dump" / "p"
    step.save(CX(tmp_path / "dump"), full_dump=True)
    (root / "stepline.sig").unlink()
    assert CX(tmp_path / "dump").load("p").value == value


# ------------------------------------------------ what is verified is what is loaded (TOCTOU)
SWAP = r"""
import json, os, sys
import numpy as np
from stepline import CX
from stepline.saving import StepLoadError

root, target, swap_at, kwargs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
opens = []

def swap(event, args):  # a writer racing the loader, at the very moment the loader opens the file
    if event == "open" and isinstance(args[0], str) and os.path.basename(args[0]) == target \
            and os.path.dirname(args[0]).startswith(root):
        opens.append(args[0])
        if len(opens) in swap_at:
            replacement = args[0] + ".attacker"
            with open(replacement, "wb") as f:
                f.write(bytes(os.path.getsize(args[0])))  # same size, other bytes (zeros)
            os.replace(replacement, args[0])

sys.addaudithook(swap)
try:
    step = CX(root).load("p", **kwargs)
except StepLoadError as error:
    print(json.dumps({"error": type(error).__name__, "message": str(error), "opens": len(opens)}))
else:
    print(json.dumps({"error": None, "sum": float(np.asarray(step.array).sum()), "opens": len(opens)}))
"""


def _array_dump(tmp_path, trusted=True):
    """A dump of one step holding a 2 MiB array of ones (a buffer file, stat-cached)."""
    from stepline.base import Identity
    step = Identity(name="p")
    step.array = np.ones(1 << 18)
    step.save(CX(tmp_path / "dump"), full_dump=True)
    root = tmp_path / "dump" / "p"
    if not trusted:  # a dump from someone else: every digest recomputed, unsigned
        (root / "stepline.sig").unlink()
    return root, float(step.array.sum())


def _swap_load(tmp_path, target, swap_at, **kwargs):
    import json
    import subprocess
    result = subprocess.run([sys.executable, "-c", SWAP, str(tmp_path / "dump"), target, json.dumps(swap_at),
                             json.dumps(kwargs)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout)


LOADS = {"untrusted": ({"trusted": False}, False), "untrusted mmap": ({"trusted": False, "mmap_mode": "r"}, False),
         "trusted, stat cache warm": ({}, True), "trusted, mmap": ({"mmap_mode": "c"}, True),
         "verify=full": ({"verify": "full"}, True), "verify=False": ({"verify": False}, True)}


@pytest.mark.parametrize("load", sorted(LOADS))
@pytest.mark.parametrize("swap_at", [1, 2, 3])
def test_a_buffer_swapped_when_the_loader_opens_it_is_never_loaded(tmp_path, load, swap_at):
    """A writer replaces the buffer file (same size, other bytes) at the loader's 1st, 2nd or 3rd
    open of it: the load returns the array the manifest lists, or a CorruptFileError naming the
    file. On main an untrusted load hashed the file in the trust gate and read it again (the
    swapped bytes loaded silently), a load the stat cache vouched for read whatever file was
    there by then, and a mapped load mapped it."""
    kwargs, trusted = LOADS[load]
    root, expected = _array_dump(tmp_path, trusted)
    if trusted:
        CX(tmp_path / "dump").load("p")  # warms the stat cache: the next load hashes nothing
    result = _swap_load(tmp_path, "buffer-000.bin", [swap_at], **kwargs)
    if result["error"] is None:
        assert result["sum"] == expected, result
    else:
        assert result["error"] == "CorruptFileError" and "buffer-000.bin" in result["message"], result
        if load == "verify=False":
            return
        assert ("after it was verified" in result["message"] or "mismatch" in result["message"]), result


@pytest.mark.parametrize("load", ["untrusted", "untrusted mmap"])
def test_an_untrusted_load_opens_its_pickle_and_each_buffer_once(tmp_path, load):
    """Read once, hashed as read, audited and unpickled from those bytes (main opened the
    pickle three times: to hash it, to audit it, to unpickle it)."""
    kwargs, _ = LOADS[load]
    _array_dump(tmp_path, trusted=False)
    from trust_tamper import pickle_to_file
    pickle_to_file(tmp_path / "dump" / "p", tmp_path / "dump" / "p")
    assert _swap_load(tmp_path, "step.pkl", [], **kwargs)["opens"] == 1
    assert _swap_load(tmp_path, "buffer-000.bin", [], **kwargs)["opens"] == 1


# ------------------------------------------------ the stat cache lives in the dump
def _forge_cache(folder, name, digest):
    """What an attacker who can write the dump does: rewrite the stat cache so that it vouches
    for the file as it is now, with the digest the manifest lists (the format is plain JSON)."""
    import json
    import os
    path = folder / ".stepline-verified.json"
    cache = json.loads(path.read_text())
    st = os.stat(folder / name)
    cache["files"][name] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, digest]
    cache.pop("mac", None)
    path.write_text(json.dumps(cache))
    os.utime(path, ns=(st.st_ctime_ns + 10 ** 9, st.st_ctime_ns + 10 ** 9))  # newer than the file: not racy


def _listed_digest(folder, name):
    import json
    return json.loads((folder / "stepline.json").read_text())["files"][name]["blake3"]


@pytest.mark.parametrize("kwargs", [{}, {"mmap_mode": "r"}, {"trusted": False}])
def test_a_forged_stat_cache_cannot_vouch_for_a_buffer_changed_in_a_signed_dump(tmp_path, kwargs):
    """On main a signed dump loaded the attacker's bytes as the model (no error, the
    signature still valid): the cache, forged beside the changed file, vouched for it."""
    from stepline.saving import CorruptFileError
    root, _ = _array_dump(tmp_path)
    CX(tmp_path / "dump").load("p")  # the cache written by a real load
    with open(root / "buffer-000.bin", "r+b") as f:  # same size, other bytes
        f.write(bytes(4096))
    _forge_cache(root, "buffer-000.bin", _listed_digest(root, "buffer-000.bin"))
    with pytest.raises(CorruptFileError, match="buffer-000.bin.*mismatch"):
        CX(tmp_path / "dump").load("p", **kwargs)


def test_a_stat_cache_written_under_another_key_vouches_for_nothing(tmp_path, monkeypatch):
    """A cache copied in from another user's (or machine's) dump, with its own valid MAC."""
    from stepline.saving import CorruptFileError
    root, _ = _array_dump(tmp_path)
    with open(root / "buffer-000.bin", "r+b") as f:
        f.write(bytes(4096))
    from stepline.saving.integrity import stat_entry, update_stat_cache
    import os
    with monkeypatch.context() as m:
        m.setenv("STEPLINE_HOME", str(tmp_path / "other-user"))
        from stepline.base import Identity
        Identity(name="x").save(CX(tmp_path / "other"), full_dump=True)
        update_stat_cache(root, {"buffer-000.bin": stat_entry(os.stat(root / "buffer-000.bin"),
                                                               _listed_digest(root, "buffer-000.bin"))}, settle=True)
    with pytest.raises(CorruptFileError, match="buffer-000.bin.*mismatch"):
        CX(tmp_path / "dump").load("p")


def test_the_stat_cache_still_spares_hashing_a_dump_the_user_loaded(tmp_path):
    import os
    from stepline.saving.integrity import trusted_entries
    root, expected = _array_dump(tmp_path)
    assert "buffer-000.bin" in trusted_entries(root)  # written by the save, under this user's key
    assert float(CX(tmp_path / "dump").load("p").array.sum()) == expected
    assert "buffer-000.bin" in trusted_entries(root)
    assert os.path.exists(root / ".stepline-verified.json")


# ------------------------------------------------ the config folder: keys, trust store, allowed globals
CONFIG_RUN = r"""
import json, sys, warnings
from stepline import CX
from stepline.base import Identity
warnings.simplefilter("always")
what, dump = sys.argv[1], sys.argv[2]
try:
    with warnings.catch_warnings(record=True) as caught:
        if what == "save":
            Identity(name="p").save(CX(dump), full_dump=True)
        else:
            CX(dump).load("p", trusted=False if what == "untrusted load" else None)
except Exception as error:
    print(json.dumps({"error": type(error).__name__, "bases": [c.__name__ for c in type(error).__mro__],
                      "message": str(error)}))
else:
    print(json.dumps({"error": None, "warnings": [str(w.message) for w in caught]}))
"""


def _config_run(home, what, dump):
    import json
    import os
    import subprocess
    env = dict(os.environ, STEPLINE_HOME=str(home))
    result = subprocess.run([sys.executable, "-c", CONFIG_RUN, what, str(dump)], env=env, capture_output=True,
                            text=True, timeout=60)  # a FIFO read would block: a failed test, not a stuck suite
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout)


def _fifo(path):
    import os
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def _garbage(path):
    path.unlink(missing_ok=True)
    path.write_bytes(b"[" * 200_000)


def _world_writable(path):
    path.chmod(0o666)


def _someone_elses(path):
    import os
    os.chown(path, 4242, 4242)


CONFIG_ATTACKS = {  # (file, change, message)
    "trust store a FIFO": ("trust.json", _fifo, "trust.json: is a FIFO"),
    "signing key a FIFO": ("signing_key.pem", _fifo, "signing_key.pem: is a FIFO"),
    "allowed globals a FIFO": ("allowed_globals.txt", _fifo, "allowed_globals.txt: is a FIFO"),
    "trust store nested 200 000 deep": ("trust.json", _garbage, "trust.json: cannot read"),
    "trust store writable by everyone": ("trust.json", _world_writable, "trust.json: .*writable by every user"),
    "allowed globals writable by everyone": ("allowed_globals.txt", _world_writable, "writable by every user"),
    "trust store of another user": ("trust.json", _someone_elses, "trust.json: .*owned by user id 4242"),
}


@pytest.mark.parametrize("attack", sorted(CONFIG_ATTACKS))
def test_a_config_file_that_would_hang_or_let_others_decide_trust_is_a_clear_error(tmp_path, attack):
    """On main a FIFO as the trust store or the key hung every load (and every save), a trust
    store nested 200 000 deep was a RecursionError, and one any user could write (or owned by
    another) was used: whoever can write it makes you trust their dumps, as ssh refuses such
    an authorized_keys."""
    import os
    import re
    name, change, message = CONFIG_ATTACKS[attack]
    home, dump = tmp_path / "home", tmp_path / "dump"
    assert _config_run(home, "save", dump)["error"] is None
    from stepline.trust.store import _FORMAT
    (home / "trust.json").write_text('{"format": "%s", "keys": {}, "digests": {}}' % _FORMAT)
    (home / "allowed_globals.txt").write_text("# nothing\n")
    change(home / name)
    if os.getuid() != 0 and change is _someone_elses:
        pytest.skip("chown needs root")
    result = _config_run(home, "untrusted load" if name == "allowed_globals.txt" else "load", dump)
    assert result["error"] == "TrustConfigError" and "RuntimeError" in result["bases"], result
    assert re.search(message, result["message"]), result


def test_a_private_key_readable_by_others_warns_and_a_new_key_never_is(tmp_path):
    home, dump = tmp_path / "home", tmp_path / "dump"
    assert _config_run(home, "save", dump) == {"error": None, "warnings": []}
    assert (home / "signing_key.pem").stat().st_mode & 0o777 == 0o600
    (home / "signing_key.pem").chmod(0o644)
    result = _config_run(home, "save", dump)
    assert result["error"] is None and any("readable by other users" in w for w in result["warnings"]), result


def test_config_files_are_written_whole_with_their_mode_from_the_start(tmp_path):
    """safe_open's small whole-file writes, as the keys, the trust store and the stat cache use
    them: created with their final mode (under umask 0 too), nothing left beside them."""
    import os
    from stepline.saving.safe_open import publish_new, replace_with
    old = os.umask(0)
    try:
        replace_with(tmp_path / "a", b"one", mode=0o600)
        assert (tmp_path / "a").stat().st_mode & 0o777 == 0o600
        replace_with(tmp_path / "a", b"two", mode=0o600)
        assert (tmp_path / "a").read_bytes() == b"two"
        assert publish_new(tmp_path / "key", b"first", mode=0o600) is True
        assert publish_new(tmp_path / "key", b"second", mode=0o600) is False  # the first writer's is kept
        assert (tmp_path / "key").read_bytes() == b"first" and (tmp_path / "key").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "key"]


# ------------------------------------------------ the shape of the tree
def test_a_payload_nested_deeper_than_the_audit_once_went_is_refused_before_anything_is_unpickled(tmp_path):
    """On main the trust gate audited 64 levels and skipped what lay deeper: the payload at
    level 70 was found only by the restricted unpickler, after 70 steps had been unpickled."""
    from trust_payloads import build
    from stepline import Pipeline
    from stepline.base import Identity
    from stepline.trust import UntrustedDumpError
    step = Identity(name="leaf")
    for _ in range(70):
        step = Pipeline([step], name="p")
    step.save(CX(tmp_path / "dump"), full_dump=True)
    leaf = tmp_path / "dump" / Path(*["p"] * 70) / "leaf"
    marker = tmp_path / "marker"
    write_files(leaf, {"step.pkl": build("os_system", marker, leaf)[0]}, tmp_path / "dump" / "p")
    with pytest.raises(UntrustedDumpError, match="nothing of it was unpickled") as caught:
        CX(tmp_path / "dump").load("p")
    assert str(leaf / "step.pkl") in caught.value.needed
    import subprocess
    for command in (["verify"], ["inspect", "--audit"]):  # they walked 64 levels too
        shown = subprocess.run([sys.executable, "-m", "stepline", *command, str(tmp_path / "dump" / "p")],
                               capture_output=True, text=True, timeout=60)
        assert f"{leaf / 'step.pkl'}" in shown.stdout and "posix.system" in shown.stdout, (command, shown.stdout)
    assert not marker.exists()


def test_a_tree_deeper_than_any_stepline_saves_is_a_clear_error_untrusted(tmp_path):
    import json
    from stepline.saving import ManifestError
    from trust_tamper import edit_manifest
    from stepline.base import Identity
    Identity(name="p").save(CX(tmp_path / "dump"), full_dump=True)
    root = tmp_path / "dump" / "p"
    folder = root
    for _ in range(300):  # each level's manifest a copy of the root's, listing one child
        folder = folder / "c"
        folder.mkdir()
        (folder / "stepline.json").write_bytes((root / "stepline.json").read_bytes())
    while folder != root:
        parent = folder.parent
        edit_manifest(parent, lambda m: m.update(children=[{"name": "c", "manifest": "0" * 64}]), parent)
        folder = parent
    from trust_tamper import rehash
    rehash(root / Path(*["c"] * 299), root)
    assert json.loads((root / "stepline.json").read_text())["children"][0]["name"] == "c"
    with pytest.raises(ManifestError, match="nested more than 256 deep"):
        CX(tmp_path / "dump").load("p")


# ------------------------------------------------ file names and sizes in a manifest
def _one_buffer_dump(tmp_path):
    from stepline.base import Identity
    step = Identity(name="p")
    step.a = np.ones(1 << 17)  # 1 MiB: a buffer file
    step.save(CX(tmp_path / "dump"), full_dump=True)
    return tmp_path / "dump" / "p"


def test_a_file_listed_through_a_linked_folder_out_of_the_dump_is_refused(tmp_path):
    """On main a manifest could list ``lnk/secret`` with ``lnk`` a link to any folder: the file
    outside the dump was stat'ed, read and hashed as the dump's (only the last part of a
    name was opened without following links)."""
    import os
    from stepline.saving import CorruptFileError
    from trust_tamper import edit_manifest
    root = _one_buffer_dump(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s" * 10)
    os.symlink(outside, root / "lnk")
    edit_manifest(root, lambda m: m["files"].update({"lnk/secret": {"size": 10, "blake3": "0" * 64}}), root)
    for kwargs in ({}, {"trusted": False}, {"verify": False}):
        with pytest.raises(CorruptFileError, match=f"{root / 'lnk'}: is a symbolic link"):
            CX(tmp_path / "dump").load("p", **kwargs)


@pytest.mark.parametrize("name", ["./buffer-000.bin", "a//b", "sub/./x"])
def test_a_file_name_with_an_empty_or_dot_part_is_refused(tmp_path, name):
    """One file, one spelling: ``./buffer-000.bin`` listed beside ``buffer-000.bin`` loaded on main."""
    import json
    from stepline.saving import ManifestError
    from stepline.saving.manifest import encode_manifest
    root = _one_buffer_dump(tmp_path)
    data = json.loads((root / "stepline.json").read_text())
    data["files"][name] = dict(data["files"]["buffer-000.bin"])
    (root / "stepline.json").write_bytes(encode_manifest(data))
    with pytest.raises(ManifestError, match="invalid file name"):
        CX(tmp_path / "dump").load("p")


def test_a_sparse_buffer_claiming_a_terabyte_is_a_clear_error_not_a_memory_error(tmp_path):
    """A 1 TiB file that occupies no disk, listed with its size: on main a raw MemoryError."""
    import json
    if Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "1":
        pytest.skip("this kernel hands out 1 TiB of memory on request (vm.overcommit_memory=1)")
    from stepline.saving.manifest import encode_manifest
    root = _one_buffer_dump(tmp_path)
    (root / "buffer-000.bin").unlink()
    with open(root / "buffer-000.bin", "wb") as f:
        f.truncate(1 << 40)
    data = json.loads((root / "stepline.json").read_text())
    data["files"]["buffer-000.bin"] = {"size": 1 << 40, "blake3": "0" * 64}
    (root / "stepline.json").write_bytes(encode_manifest(data))
    for kwargs in ({"verify": False}, {"trusted": False}):
        with pytest.raises(StepLoadError, match=f"{root / 'buffer-000.bin'}: {1 << 40} bytes, more than"):
            CX(tmp_path / "dump").load("p", **kwargs)
