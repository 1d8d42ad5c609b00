"""Trusted dumps (DESIGN §5a): signatures, the trust store, untrusted loads of real pipelines,
tampering after signing, ``stepline verify``/``trust``/``inspect --audit``, extending the allow-list."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from trust_tamper import edit_manifest, rehash, write_inline  # noqa: E402

from stepline import CX, Pipeline  # noqa: E402
from stepline.base import BaseStep, Identity  # noqa: E402
from stepline.saving import CorruptFileError, StepLoadError  # noqa: E402
from stepline.trust import UntrustedDumpError, allow  # noqa: E402
from stepline.trust.keys import PRIVATE_NAME, PUBLIC_NAME, config_home, local_public_key_hex  # noqa: E402
from stepline.trust.signing import SIGNATURE_NAME, root_digest, sign_dump, verify_dump  # noqa: E402

PY = sys.executable
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _env(home):
    env = dict(os.environ, STEPLINE_HOME=str(home))
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _stepline(home, *args):
    return subprocess.run([PY, "-m", "stepline", *map(str, args)], env=_env(home), capture_output=True,
                          text=True, timeout=120)


class NotListed(BaseStep):
    """Importable (by reference) but not on the allow-list: trusted dumps only, unless allowed."""

    def __init__(self, name=None):
        super().__init__(hyperparams={"k": 2}, name=name)

    def transform(self, data_inputs):
        return np.asarray(data_inputs) * self.hyperparams["k"]


# ------------------------------------------------------------------ keys, signatures
def test_config_home_follows_stepline_home_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("STEPLINE_HOME", str(tmp_path / "a"))
    assert config_home() == tmp_path / "a"
    monkeypatch.delenv("STEPLINE_HOME")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_home() == tmp_path / "xdg" / "stepline"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert config_home() == tmp_path / "h" / ".config" / "stepline"


def test_a_save_signs_the_root_digest_with_a_key_created_on_first_use(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("STEPLINE_HOME", str(home))
    assert not home.exists()
    Pipeline([Identity(name="a")], name="p").save(CX(tmp_path / "dump"), full_dump=True)
    assert (home / PRIVATE_NAME).stat().st_mode & 0o077 == 0 and (home / PUBLIC_NAME).is_file()
    signature = json.loads((tmp_path / "dump" / "p" / SIGNATURE_NAME).read_text())
    assert signature["root_digest"] == root_digest(tmp_path / "dump" / "p")
    assert signature["public_key"] == local_public_key_hex()
    verdict = verify_dump(tmp_path / "dump" / "p")
    assert verdict.trusted and verdict.signer == local_public_key_hex()
    assert SIGNATURE_NAME not in json.loads((tmp_path / "dump" / "p" / "stepline.json").read_text())["files"]


def test_a_changes_only_save_signs_the_new_root(tmp_path):
    p = Pipeline([NotListed(name="a"), NotListed(name="b")], name="p")
    p.save(CX(tmp_path), full_dump=True)
    first = root_digest(tmp_path / "p")
    p["b"].set_hyperparams({"k": 5})
    p.save(CX(tmp_path))
    assert root_digest(tmp_path / "p") != first and verify_dump(tmp_path / "p").trusted
    assert CX(tmp_path).load("p").transform([1.0]).tolist() == [10.0]


def test_own_dumps_with_unlisted_classes_load_as_before(tmp_path):
    NotListed(name="n").save(CX(tmp_path), full_dump=True)
    assert CX(tmp_path).load("n").transform([1.0]).tolist() == [2.0]
    with pytest.raises(UntrustedDumpError, match=r"test_trust\.NotListed"):
        CX(tmp_path).load("n", trusted=False)


def test_loading_on_a_machine_without_a_key_creates_none(tmp_path, monkeypatch):
    Identity(name="i").save(CX(tmp_path / "dump"), full_dump=True)
    monkeypatch.setenv("STEPLINE_HOME", str(tmp_path / "fresh"))
    CX(tmp_path / "dump").load("i")
    assert not (tmp_path / "fresh" / PRIVATE_NAME).exists()


# ------------------------------------------------------------------ real pipelines, fresh process
LOADER = textwrap.dedent("""
    import sys, numpy as np, warnings
    warnings.simplefilter("ignore")
    from stepline import CX
    from stepline.trust.signing import verify_dump
    root, name, inputs, out = sys.argv[1:]
    assert not verify_dump(root + "/" + name).trusted, "the fresh process must not trust the dump"
    step = CX(root).load(name)
    np.save(out, np.asarray(step.predict(np.load(inputs))))
""")


@pytest.mark.parametrize("model", ["demo", "scaler_pca_logistic", "random_forest", "feature_union", "torch"])
def test_real_dumps_load_untrusted_in_a_fresh_process_with_identical_outputs(tmp_path, model):
    pytest.importorskip("sklearn")
    if model == "torch":
        pytest.importorskip("torch")
    from trust_models import BUILDERS
    step, inputs = BUILDERS[model]()
    expected = np.asarray(step.predict(inputs))
    step.save(CX(tmp_path / "dump"), full_dump=True)
    np.save(tmp_path / "inputs.npy", inputs)
    (tmp_path / "loader.py").write_text(LOADER)
    proc = subprocess.run([PY, str(tmp_path / "loader.py"), str(tmp_path / "dump"), step.name,
                           str(tmp_path / "inputs.npy"), str(tmp_path / "out.npy")],
                          env=_env(tmp_path / "other-home"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


def test_a_main_class_dump_is_refused_untrusted_and_loads_once_trusted(tmp_path):
    (tmp_path / "build.py").write_text(textwrap.dedent("""
        import sys
        from stepline import CX
        from stepline.base import BaseStep
        class Tripler(BaseStep):
            def transform(self, data_inputs):
                return [3 * x for x in data_inputs]
        Tripler().save(CX(sys.argv[1]), full_dump=True)
    """))
    subprocess.run([PY, str(tmp_path / "build.py"), str(tmp_path / "dump")], check=True, timeout=60,
                   env=_env(tmp_path / "author-home"))
    load = textwrap.dedent("""
        import sys
        from stepline import CX
        from stepline.trust import UntrustedDumpError
        try:
            print(CX(sys.argv[1]).load("Tripler").transform([1, 2]))
        except UntrustedDumpError as e:
            print("REFUSED", e); sys.exit(3)
    """)
    (tmp_path / "load.py").write_text(load)
    reader = tmp_path / "reader-home"

    def run_loader():
        return subprocess.run([PY, str(tmp_path / "load.py"), str(tmp_path / "dump")], capture_output=True,
                              text=True, timeout=60, env=_env(reader))
    refused = run_loader()
    assert refused.returncode == 3 and "__main__.Tripler" in refused.stdout and "Tripler/step.pkl" in refused.stdout
    trusted = _stepline(reader, "trust", tmp_path / "dump" / "Tripler")
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    loaded = run_loader()
    assert loaded.returncode == 0 and loaded.stdout.strip() == "[3, 6]", loaded.stdout + loaded.stderr


# ------------------------------------------------------------------ tampering after signing
@pytest.fixture
def signed(tmp_path, pickles_in_files):
    """A signed dump whose pickles are ``step.pkl`` files (the tests below tamper with those);
    ``signed_inline`` has its tiny steps' pickles inline in their manifests, as saved."""
    step = Pipeline([NotListed(name="a"), Identity(name="b")], name="p")
    step.save(CX(tmp_path / "dump"), full_dump=True)
    return tmp_path / "dump" / "p"


@pytest.fixture
def signed_inline(tmp_path):
    step = Pipeline([NotListed(name="a"), Identity(name="b")], name="p")
    step.save(CX(tmp_path / "dump"), full_dump=True)
    assert not (tmp_path / "dump" / "p" / "a" / "step.pkl").exists()
    return tmp_path / "dump" / "p"


def _inline_pickle(folder) -> bytes:
    import base64
    return base64.b64decode(json.loads((folder / "stepline.json").read_text())["inline"]["step.pkl"]["base64"])


def test_one_byte_of_an_inline_payload_changed_after_signing(signed_inline):
    import base64
    signed = signed_inline
    data = bytearray(_inline_pickle(signed / "a"))
    data[-3] ^= 1
    edit_manifest(signed / "a", lambda m: m["inline"]["step.pkl"].update(
        base64=base64.b64encode(bytes(data)).decode()), signed)  # the payload's own digest left as it was
    with pytest.raises(CorruptFileError, match=r"a/step\.pkl \(inline in stepline\.json\)"):
        CX(signed.parent).load("p", trusted=True)
    write_inline(signed / "a", {"step.pkl": bytes(data)}, signed)  # every digest recomputed: only the signature fails
    verdict = verify_dump(signed)
    assert not verdict.trusted and verdict.signature == "mismatch"
    with pytest.raises(StepLoadError):
        CX(signed.parent).load("p")


def test_an_inline_payload_of_an_unlisted_class_is_refused_untrusted_and_audited(signed_inline, tmp_path):
    stranger = _stepline(tmp_path / "stranger", "verify", signed_inline)
    assert stranger.returncode == 0 and "trusted:     no" in stranger.stdout
    assert f"{signed_inline / 'a' / 'step.pkl'} (inline in stepline.json): test_trust.NotListed" in stranger.stdout
    with pytest.raises(UntrustedDumpError, match=r"a/step\.pkl \(inline in stepline\.json\): test_trust\.NotListed"):
        CX(signed_inline.parent).load("p", trusted=False)
    out = _stepline(os.environ["STEPLINE_HOME"], "inspect", "--audit", signed_inline)
    assert out.returncode == 0 and "REFUSED  test_trust.NotListed" in out.stdout
    assert f"{signed_inline / 'a' / 'step.pkl'} (inline in stepline.json):" in out.stdout


def test_stepline_verify_reports_a_broken_inline_payload(signed_inline):
    edit_manifest(signed_inline / "b", lambda m: m["inline"]["step.pkl"].update(size=1), signed_inline)
    broken = _stepline(os.environ["STEPLINE_HOME"], "verify", signed_inline)
    assert broken.returncode == 2 and "BROKEN" in broken.stdout and "b/step.pkl (inline" in broken.stdout


def test_one_byte_of_a_payload_changed_after_signing(signed):
    path = signed / "a" / "step.pkl"
    data = bytearray(path.read_bytes())
    data[-3] ^= 1
    path.unlink()
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="a/step.pkl"):
        CX(signed.parent).load("p", trusted=True)
    rehash(signed / "a", signed)  # the attacker recomputes every digest: integrity passes, the signature fails
    verdict = verify_dump(signed)
    assert not verdict.trusted and verdict.signature == "mismatch"
    with pytest.raises(StepLoadError):
        CX(signed.parent).load("p")


def test_one_manifest_field_changed_after_signing(signed):
    edit_manifest(signed / "b", lambda m: m["hyperparams"].update(x=1), signed)
    assert verify_dump(signed).signature == "mismatch"
    with pytest.raises(UntrustedDumpError, match="changed after signing"):
        CX(signed.parent).load("p")


def test_a_child_swapped_in_from_another_signed_dump(signed, tmp_path):
    import shutil
    Pipeline([NotListed(name="a")], name="p").set_hyperparams({"a__k": 7}).save(CX(tmp_path / "other"), full_dump=True)
    assert verify_dump(tmp_path / "other" / "p").trusted
    shutil.rmtree(signed / "a")
    shutil.copytree(tmp_path / "other" / "p" / "a", signed / "a")
    with pytest.raises(StepLoadError, match="another save"):  # the parent's digest no longer matches
        CX(signed.parent).load("p", trusted=True)
    rehash(signed / "a", signed)
    assert not verify_dump(signed).trusted
    with pytest.raises(UntrustedDumpError):
        CX(signed.parent).load("p")


def test_a_dump_signed_by_an_unknown_key_is_untrusted_until_the_key_is_trusted(tmp_path, monkeypatch):
    author = tmp_path / "author"
    monkeypatch.setenv("STEPLINE_HOME", str(author))
    NotListed(name="n").save(CX(tmp_path / "dump"), full_dump=True)
    monkeypatch.setenv("STEPLINE_HOME", str(tmp_path / "reader"))
    verdict = verify_dump(tmp_path / "dump" / "n")
    assert not verdict.trusted and verdict.signature == "valid" and "unknown key" in verdict.reason
    with pytest.raises(UntrustedDumpError, match="unknown key"):
        CX(tmp_path / "dump").load("n")
    added = _stepline(tmp_path / "reader", "trust", "--key", author / PUBLIC_NAME)
    assert added.returncode == 0, added.stdout
    assert CX(tmp_path / "dump").load("n").transform([1.0]).tolist() == [2.0]


def test_a_signature_file_of_garbage_is_just_no_signature(signed):
    (signed / SIGNATURE_NAME).write_text("{not json")
    assert not verify_dump(signed).trusted and "malformed" in verify_dump(signed).reason
    (signed / SIGNATURE_NAME).unlink()
    os.mkfifo(signed / SIGNATURE_NAME)  # never blocks
    assert not verify_dump(signed).trusted


# ------------------------------------------------------------------ CLI
def test_stepline_verify_reports_signer_digest_integrity_and_untrusted_loading(signed, tmp_path):
    home = os.environ["STEPLINE_HOME"]
    ok = _stepline(home, "verify", signed)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert root_digest(signed) in ok.stdout and local_public_key_hex() in ok.stdout
    assert "trusted:     yes" in ok.stdout and "integrity:   ok" in ok.stdout
    assert "would be refused untrusted" in ok.stdout and "test_trust.NotListed" in ok.stdout
    stranger = _stepline(tmp_path / "stranger", "verify", signed)
    assert stranger.returncode == 0 and "trusted:     no" in stranger.stdout
    (signed / "b" / "step.pkl").write_bytes(b"x")
    broken = _stepline(home, "verify", signed)
    assert broken.returncode == 2 and "BROKEN" in broken.stdout


def test_stepline_trust_refuses_a_broken_dump_and_a_bad_key_file(signed, tmp_path):
    (signed / "b" / "step.pkl").write_bytes(b"x")
    assert _stepline(tmp_path / "h", "trust", signed).returncode == 2
    (tmp_path / "key.pub").write_text("not a key")
    bad = _stepline(tmp_path / "h", "trust", "--key", tmp_path / "key.pub")
    assert bad.returncode == 2 and "not a public key" in bad.stderr


def test_inspect_audit_lists_every_pickles_globals(signed):
    out = _stepline(os.environ["STEPLINE_HOME"], "inspect", "--audit", signed)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "allowed  stepline.pipeline.Pipeline" in out.stdout
    assert "REFUSED  test_trust.NotListed" in out.stdout


# ------------------------------------------------------------------ the allow-list
class MyInert(BaseStep):
    def transform(self, data_inputs):
        return data_inputs


def test_users_allow_their_own_classes_whole(tmp_path):
    MyInert(name="m").save(CX(tmp_path), full_dump=True)
    with pytest.raises(UntrustedDumpError, match="test_trust.MyInert"):
        CX(tmp_path).load("m", trusted=False)
    allow(MyInert)
    assert CX(tmp_path).load("m", trusted=False).transform([1]) == [1]
    for too_broad in ("test_trust.*", "test_trust", os, len):
        with pytest.raises(TypeError, match="whole classes"):
            allow(too_broad)


def test_allowed_globals_file_in_the_config_folder(tmp_path, monkeypatch):
    NotListed(name="n").save(CX(tmp_path / "dump"), full_dump=True)
    monkeypatch.setenv("STEPLINE_HOME", str(tmp_path / "home"))
    with pytest.raises(UntrustedDumpError):
        CX(tmp_path / "dump").load("n")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "allowed_globals.txt").write_text("# my classes\ntest_trust.NotListed\n")
    assert CX(tmp_path / "dump").load("n").transform([1.0]).tolist() == [2.0]


def test_the_allow_list_takes_classes_by_exact_name_only():
    from stepline.trust.allowlist import is_allowed
    assert is_allowed("sklearn.linear_model._logistic", "LogisticRegression")
    assert is_allowed("stepline.pipeline", "Pipeline")
    assert not is_allowed("sklearn.base", "np.ndarray")  # an alias reaching out of an allowed module
    assert not is_allowed("sklearn.base", "clone")  # a function of an allowed module
    assert not is_allowed("stepline.saving.objectfile", "_loads")
    assert not is_allowed("stepline.distributed.dask", "DaskPipeline")
    assert not is_allowed("os", "system") and not is_allowed("builtins", "getattr")
    import sys
    assert not is_allowed("numpy.f2py.__main__", "main") and "numpy.f2py.__main__" not in sys.modules
    assert not is_allowed("stepline.__main__", "Pipeline")  # importing it would run the CLI


# ------------------------------------------------------------------ workers
@pytest.fixture(scope="module")
def foreign_client(tmp_path_factory):
    """A Dask client whose one worker process has a config folder of its own (no key)."""
    distributed = pytest.importorskip("distributed")
    import logging
    home = tmp_path_factory.mktemp("worker-home")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, silence_logs=logging.ERROR,
                                  env={"STEPLINE_HOME": str(home)}) as cluster, distributed.Client(cluster) as client:
        yield client


def test_dask_workers_with_another_config_folder_verify_with_the_clients_key(foreign_client):
    from stepline.distributed.dask import DaskPipeline
    step = DaskPipeline(Pipeline([NotListed(name="n")]), client=foreign_client)
    assert np.asarray(step.transform(np.ones(4))).tolist() == [2.0] * 4


def test_streaming_workers_load_the_dump_the_parent_signed(tmp_path):
    """Worker processes share the parent's config folder, so its key: a class off the
    allow-list still travels to them as a dump, with no check turned off."""
    from stepline.distributed.streaming import SequentialQueuedPipeline
    NotListed(name="n").save(CX(tmp_path), full_dump=True)
    with pytest.raises(UntrustedDumpError):
        CX(tmp_path).load("n", trusted=False)  # so the workers' loads below were trusted ones
    p = SequentialQueuedPipeline([(2, NotListed())], batch_size=2, use_savers=True, start_method="spawn")
    with p.setup():
        assert p._runtime.stages[0].payload_kind == "dump"
        assert p.transform([1.0, 2.0, 3.0]).tolist() == [2.0, 4.0, 6.0]


def test_verify_false_still_hashes_the_pickles_of_a_signed_dump(signed, tmp_path):
    """Sizes-only checks must not let a same-size pickle swapped into a signed dump run."""
    from trust_payloads import build
    path, marker = signed / "a" / "step.pkl", tmp_path / "marker"
    evil, _ = build("os_system", marker, signed / "a")
    size = path.stat().st_size
    assert len(evil) < size
    path.unlink()
    path.write_bytes(evil + b"." * (size - len(evil)))  # padding after STOP is never read
    with pytest.raises(CorruptFileError, match="a/step.pkl"):
        CX(signed.parent).load("p", verify=False)
    assert not marker.exists()


def test_a_forged_stat_cache_cannot_vouch_for_a_swapped_pickle(signed, tmp_path):
    """The stat cache lives in the dump, so an attacker who can write there can forge it:
    a signed dump's pickles are hashed on every load, whatever the cache says."""
    from stepline.saving.integrity import stat_entry, update_stat_cache
    from trust_payloads import build
    path, marker = signed / "a" / "step.pkl", tmp_path / "marker"
    claimed = json.loads((signed / "a" / "stepline.json").read_text())["files"]["step.pkl"]["blake3"]
    evil, _ = build("os_system", marker, signed / "a")
    size = path.stat().st_size
    path.unlink()
    path.write_bytes(evil + b"." * (size - len(evil)))
    update_stat_cache(signed / "a", {"step.pkl": stat_entry(os.stat(path), claimed)}, settle=True)
    with pytest.raises(CorruptFileError, match="a/step.pkl"):
        CX(signed.parent).load("p")
    assert not marker.exists()


@pytest.mark.parametrize("model", ["scaler_pca_logistic", "random_forest", "feature_union", "torch"])
def test_the_opcode_audit_finds_exactly_the_globals_unpickling_asks_for(tmp_path, model):
    """What the audit reads from the opcodes is what find_class is asked for, on real dumps."""
    import io
    import pickle
    pytest.importorskip("sklearn")
    if model == "torch":
        pytest.importorskip("torch")
    from trust_models import BUILDERS

    from stepline.trust.audit import pickle_globals
    step, _ = BUILDERS[model]()
    step.save(CX(tmp_path), full_dump=True)
    from stepline.saving.inline import step_pickle
    from stepline.saving.manifest import read_manifest
    folders = sorted(p.parent for p in (tmp_path / step.name).rglob("stepline.json"))
    pickles = [step_pickle(f, read_manifest(f), lambda p: Path(p).read_bytes()) for f in folders]
    assert any(pickles)
    for folder, (where, data) in zip(folders, pickles):
        asked = []

        class Recording(pickle.Unpickler):
            def find_class(self, module, name):
                asked.append(f"{module}.{name}")
                return super().find_class(module, name)

            def persistent_load(self, pid):
                raise AssertionError("no persistent ids in a dump")
        buffers = [np.fromfile(p, dtype=np.uint8) for p in sorted(folder.glob("buffer-*.bin"))]
        Recording(io.BytesIO(data), buffers=buffers).load()
        audit = pickle_globals(data)
        assert audit.unresolvable == [] and set(audit.globals) == set(asked), where


def _recorded_globals(data: bytes) -> list:
    import io
    import pickle
    asked = []

    class Recording(pickle.Unpickler):
        def find_class(self, module, name):
            asked.append(f"{module}.{name}")
            return super().find_class(module, name)
    Recording(io.BytesIO(data)).load()
    return asked


def test_the_audit_matches_unpickling_on_random_data_in_every_protocol():
    import collections
    import pickle

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from stepline.trust.audit import pickle_globals
    leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5),
                       st.binary(max_size=5), st.complex_numbers(allow_nan=False),
                       st.builds(bytearray, st.binary(max_size=3)), st.builds(slice, st.integers()))
    data = st.recursive(leaves, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.tuples(inner, inner), st.frozensets(st.integers(), max_size=3),
        st.sets(st.text(max_size=2), max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3),
        st.builds(collections.OrderedDict, st.dictionaries(st.integers(), inner, max_size=2))), max_leaves=8)

    @settings(max_examples=150, deadline=None)
    @given(data, st.integers(0, pickle.HIGHEST_PROTOCOL))
    def check(value, protocol):
        raw = pickle.dumps(value, protocol=protocol)
        audit = pickle_globals(raw)
        assert audit.unresolvable == [] and set(audit.globals) == set(_recorded_globals(raw))
    check()


def test_the_audit_never_raises_on_garbage():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from stepline.trust.audit import pickle_globals

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=200))
    def check(data):
        pickle_globals(data)
    check()


def test_inspect_audit_of_a_fifo_pickle_fails_clearly_without_hanging(signed):
    (signed / "b" / "step.pkl").unlink()
    os.mkfifo(signed / "b" / "step.pkl")
    out = _stepline(os.environ["STEPLINE_HOME"], "inspect", "--audit", signed)
    assert out.returncode == 2 and "not a regular file" in out.stdout + out.stderr
    with pytest.raises(StepLoadError):
        CX(signed.parent).load("p", trusted=False)


def test_automl_trials_on_dask_workers_with_another_config_folder_verify_with_the_clients_key(foreign_client):
    pytest.importorskip("optuna")
    from sklearn.linear_model import LogisticRegression

    from stepline.automl import AutoML
    from stepline.hyperparams.distributions import LogUniform
    from stepline.steps.sklearn import SKLearnWrapper
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = (X[:, 0] > 0).astype(int)
    pipeline = Pipeline([NotListed(), SKLearnWrapper(LogisticRegression(), {"C": LogUniform(1e-2, 10.0)})],
                        name="tuned")
    search = AutoML(pipeline, cv=2, n_trials=2, seed=0, client=foreign_client, show_progress=False).fit(X, y)
    assert search.trials_dataframe()["state"].value_counts().to_dict() == {"COMPLETE": 2}


def test_a_save_without_a_writable_config_folder_is_a_clear_error(tmp_path, monkeypatch):
    from stepline.saving import SaveError
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("STEPLINE_HOME", str(tmp_path / "file" / "home"))  # under a file: never creatable
    with pytest.raises(SaveError, match="STEPLINE_HOME"):
        Identity(name="i").save(CX(tmp_path / "dump"), full_dump=True)
    assert not (tmp_path / "dump" / "i").exists()  # the atomic save left nothing behind
