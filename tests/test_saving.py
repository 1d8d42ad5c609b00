"""Saving and loading whole pipelines: savers, layout, changes-only saves, integrity, atomicity."""
import json
import re
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from stepline import CX, Pipeline
from stepline.base import BaseSaver, BaseStep, Identity, MetaStep, NonFittableMixin
from stepline.saving.manifest import encode_manifest
from stepline.saving.atomic import wait_for_cleanup
from stepline.saving import (CorruptFileError, ManifestError, MissingFileError, NotADumpError, SaveError, StepLoadError,
                             VersionMismatchWarning)

PY = sys.executable


class Weights(BaseStep):
    """A fitted step holding an array."""

    def __init__(self, size=1000, name=None):
        super().__init__(hyperparams={"size": size}, name=name)

    def fit(self, data_inputs, expected_outputs=None):
        self.w_ = np.arange(self.hyperparams["size"], dtype=np.float32) + float(np.mean(data_inputs))
        return self

    def transform(self, data_inputs):
        return np.asarray(data_inputs, dtype=np.float32) + self.w_[: len(data_inputs)]


class Recording(BaseSaver):
    """Records save/load order in a shared list; strips nothing."""

    def __init__(self, tag, log):
        self.tag, self.log = tag, log

    def save_step(self, step, context):
        self.log.append(("save", self.tag))
        return step

    def can_load(self, step, context):
        return True

    def load_step(self, step, context):
        self.log.append(("load", self.tag))
        return step

    def __getstate__(self):  # the log is not saved: the loaded saver records into LOAD_LOG
        return {"tag": self.tag}

    def __setstate__(self, state):
        self.tag, self.log = state["tag"], LOAD_LOG


LOAD_LOG: list = []
LOCKS = [".p.lock", ".p.turn"]  # what saves to "p" take turns on
SPARED = [".p.lock", ".p.spare", ".p.turn"]  # and the spare tree a full save rebuilds in place


def fitted_pipeline():
    p = Pipeline([("w1", Weights(100_000)), ("mid", Identity()),
                  ("inner", Pipeline([("w2", Weights(50))])), ("meta", MetaStep(Weights(10, name="w3")))],
                 name="p")
    return p.fit(np.ones(4))


def files_of(root: Path) -> dict:
    wait_for_cleanup()  # replaced dumps are deleted in the background
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_ino)
            for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")}


# ------------------------------------------------------------------ savers
def test_savers_run_in_reverse_then_stripped_saver_and_load_forward(tmp_path):
    log = []
    LOAD_LOG.clear()
    step = Identity(savers=[Recording("first", log), Recording("second", log)])

    class Stripped(Recording):
        def save_step(self, step, context):
            self.log.append(("save", "stripped"))
            from stepline.saving.savers import JoblibStepSaver
            return JoblibStepSaver().save_step(step, context)

    cx = CX(tmp_path, stripped_saver=Stripped("stripped", log))
    step.save(cx, full_dump=True)
    assert log == [("save", "second"), ("save", "first"), ("save", "stripped")]
    CX(tmp_path).load("Identity")
    assert LOAD_LOG == [("load", "first"), ("load", "second")]  # stripped saver first, then forward


def test_layout_and_manifest(tmp_path):
    p = fitted_pipeline()
    p.save(CX(tmp_path), full_dump=True)
    root = tmp_path / "p"
    for folder in ["", "w1", "mid", "inner", "inner/w2", "meta", "meta/w3"]:
        assert (root / folder / "stepline.json").is_file(), folder
    manifest = json.loads((root / "w1" / "stepline.json").read_text())
    assert manifest["format"] == "stepline-dump" and manifest["class"].endswith("Weights")
    assert manifest["hyperparams"] == {"size": 100_000}
    assert manifest["stripped_saver"].endswith("JoblibStepSaver")
    assert {"python", "stepline", "numpy", "joblib", "cloudpickle"} <= set(manifest["versions"])
    for name, record in manifest["files"].items():
        assert (root / "w1" / name).stat().st_size == record["size"] and len(record["blake3"]) == 64
    top = json.loads((root / "stepline.json").read_text())
    assert [c["name"] for c in top["children"]] == ["w1", "mid", "inner", "meta"] and top["savers"] == ["stepline.saving.savers.ChildrenSaver"]


def test_round_trip_identical_outputs_and_not_set_up(tmp_path):
    p = fitted_pipeline()
    expected = p.transform(np.ones(4))
    p.save(CX(tmp_path), full_dump=True)
    loaded = CX(tmp_path).load("p")
    assert not loaded.is_initialized and not loaded["w1"].is_initialized
    assert loaded["w1"].is_fitted and not loaded.is_invalidated
    np.testing.assert_array_equal(loaded.transform(np.ones(4)), expected)
    assert loaded["meta"].wrapped.name == "w3" and loaded.keys() == p.keys()


def test_load_child_path(tmp_path):
    p = fitted_pipeline()
    p.save(CX(tmp_path), full_dump=True)
    w2 = CX(tmp_path).load("p/inner/w2")
    np.testing.assert_array_equal(w2.transform(np.zeros(3)), p["inner"]["w2"].transform(np.zeros(3)))
    assert CX(tmp_path).load("p/meta").wrapped.name == "w3"


def test_saving_never_calls_setup_and_keeps_live_step(tmp_path):
    calls = []

    class Heavy(NonFittableMixin, BaseStep):
        def setup(self, context=None):
            calls.append("setup")
            self.lock = threading.Lock()  # cannot be pickled
            return self

        def transform(self, data_inputs):
            return data_inputs

    class StripLock(BaseSaver):
        def save_step(self, step, context):
            step.lock = None
            return step

        def can_load(self, step, context):
            return True

        def load_step(self, step, context):
            return step

    never_set_up = Heavy(savers=[StripLock()])
    never_set_up.save(CX(tmp_path), full_dump=True)
    assert calls == []
    live = Heavy(name="live", savers=[StripLock()]).setup()
    lock = live.lock
    live.save(CX(tmp_path), full_dump=True)
    assert live.lock is lock and live.is_initialized  # the live step keeps its resource
    loaded = CX(tmp_path).load("live")
    assert loaded.lock is None and not loaded.is_initialized
    loaded.transform([1])
    assert isinstance(loaded.lock, type(threading.Lock()))


def test_unpicklable_attribute_gives_a_clear_error(tmp_path):
    step = Identity()
    step.lock = threading.Lock()
    with pytest.raises(SaveError, match=r"cannot save step .Identity.*attribute .lock.*Add a saver"):
        step.save(CX(tmp_path), full_dump=True)


# ------------------------------------------------------------ changes only
def test_never_fitted_pipeline_writes_nothing(tmp_path):
    Pipeline([Weights(), Identity()]).save(CX(tmp_path), full_dump=False)
    assert list(tmp_path.iterdir()) == []


def test_changes_only_rewrites_changed_steps_and_their_parents_only(tmp_path, pickles_in_files):
    p = fitted_pipeline()
    p.save(CX(tmp_path), full_dump=False)  # first changes-only save writes everything
    assert CX(tmp_path).load("p").keys() == p.keys()
    before = files_of(tmp_path)
    p.save(CX(tmp_path), full_dump=False)
    assert files_of(tmp_path) == before  # nothing changed: nothing written
    p["inner"]["w2"].set_hyperparams({"size": 60})
    p.save(CX(tmp_path), full_dump=False)
    after = files_of(tmp_path)
    changed = {k for k in before if before[k] != after.get(k)}
    assert "p/inner/w2/step.pkl" in changed and "p/inner/stepline.json" in changed
    assert "p/stepline.json" in changed
    assert not any(k.startswith(("p/w1/", "p/mid/", "p/meta/")) for k in changed)
    assert CX(tmp_path).load("p")["inner"]["w2"].hyperparams["size"] == 60


def test_changes_only_after_refit_and_rename(tmp_path, pickles_in_files):
    p = fitted_pipeline()
    p.save(CX(tmp_path), full_dump=True)
    before = files_of(tmp_path)
    p["meta"].wrapped.fit(np.full(2, 5.0))
    p.save(CX(tmp_path), full_dump=False)
    after = files_of(tmp_path)
    assert before["p/meta/w3/step.pkl"] != after["p/meta/w3/step.pkl"]
    assert before["p/w1/buffer-000.bin"] == after["p/w1/buffer-000.bin"]
    np.testing.assert_array_equal(CX(tmp_path).load("p/meta/w3").w_, p["meta"].wrapped.w_)


# ------------------------------------------------------------ fresh process
def test_main_defined_classes_load_in_a_fresh_process(tmp_path):
    script = tmp_path / "build.py"
    script.write_text(textwrap.dedent("""
        import sys, numpy as np
        from stepline import Pipeline, CX
        from stepline.base import BaseStep

        class Secret(BaseStep):
            def fit(self, x, y=None):
                self.offset_ = float(np.sum(x)); return self
            def transform(self, x):
                return np.asarray(x) * 2 + self.offset_

        def helper(x):
            return x - 1

        class UsesHelper(BaseStep):
            def transform(self, x):
                return helper(x)

        p = Pipeline([Secret(), UsesHelper()], name="mainpipe").fit(np.array([1.0, 2.0]))
        np.save(sys.argv[2], p.transform(np.array([3.0, 4.0])))
        p.save(CX(sys.argv[1]), full_dump=True)
    """))
    dump, expected = tmp_path / "dump", tmp_path / "expected.npy"
    subprocess.run([PY, str(script), str(dump), str(expected)], check=True, cwd=tmp_path, timeout=60)
    script.unlink()  # the source is gone
    out = subprocess.run([PY, "-c", textwrap.dedent(f"""
        import numpy as np
        from stepline import CX
        p = CX({str(dump)!r}).load("mainpipe")
        assert "Secret" not in dir(__import__("__main__"))
        print(p.transform(np.array([3.0, 4.0])).tolist())
    """)], check=True, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.stdout.strip() == str(np.load(expected).tolist())
    manifest = json.loads((dump / "mainpipe" / "Secret" / "stepline.json").read_text())
    assert manifest["inline"]["step.pkl"]["python"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}")


# -------------------------------------------------------------- integrity
@pytest.fixture
def dump(tmp_path):
    fitted_pipeline().save(CX(tmp_path), full_dump=True)
    return tmp_path


@pytest.fixture
def dump_of_files(tmp_path, pickles_in_files):
    """:func:`dump` with every pickle in a ``step.pkl`` file."""
    fitted_pipeline().save(CX(tmp_path), full_dump=True)
    return tmp_path


def test_flipped_byte_in_pickle_is_caught_naming_the_file(dump_of_files):
    dump = dump_of_files
    target = dump / "p" / "inner" / "w2" / "step.pkl"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=str(target).replace("\\", "\\\\") + ".*BLAKE3"):
        CX(dump).load("p")


def test_flipped_byte_in_array_buffer_is_caught(dump):
    target = dump / "p" / "w1" / "buffer-000.bin"
    with open(target, "r+b") as f:
        f.seek(1234)
        byte = f.read(1)
        f.seek(1234)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(CorruptFileError, match="buffer-000.bin"):
        CX(dump).load("p")
    with pytest.raises(CorruptFileError, match="buffer-000.bin"):
        CX(dump).load("p", mmap_mode="r")


def test_truncated_file(dump):
    target = dump / "p" / "w1" / "buffer-000.bin"
    os.truncate(target, target.stat().st_size // 2)
    with pytest.raises(CorruptFileError, match="buffer-000.bin.*truncated"):
        CX(dump).load("p")


def test_deleted_file(dump_of_files):
    dump = dump_of_files
    target = dump / "p" / "mid" / "step.pkl"
    target.unlink()
    with pytest.raises(MissingFileError, match="mid.*step.pkl"):
        CX(dump).load("p")


def test_deleted_child_folder(dump):
    import shutil
    shutil.rmtree(dump / "p" / "inner" / "w2")
    with pytest.raises(NotADumpError, match="w2"):
        CX(dump).load("p")


def test_random_folder_and_missing_name(tmp_path):
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "notes.txt").write_text("hello")
    with pytest.raises(NotADumpError, match="random"):
        CX(tmp_path).load("random")
    with pytest.raises(NotADumpError, match="nothing_here"):
        CX(tmp_path).load("nothing_here")


def test_garbage_manifest(dump):
    (dump / "p" / "stepline.json").write_text("{not json")
    with pytest.raises(ManifestError, match="stepline.json"):
        CX(dump).load("p")


def write_and_reseal(folder, manifest, top):
    """Rewrite ``folder``'s manifest and every parent's child digest up to ``top`` (a forger's job)."""
    import blake3
    (folder / "stepline.json").write_bytes(encode_manifest(manifest))
    while folder != top:
        parent = json.loads((folder.parent / "stepline.json").read_text())
        for child in parent["children"]:
            if child["name"] == folder.name:
                child["manifest"] = blake3.blake3((folder / "stepline.json").read_bytes()).hexdigest()
        (folder.parent / "stepline.json").write_bytes(encode_manifest(parent))
        folder = folder.parent


def test_foreign_pickle_content_is_a_clear_error(dump_of_files):
    """A consistent manifest over a file that is not a pickle: never a raw traceback."""
    dump = dump_of_files
    import blake3
    folder = dump / "p" / "mid"
    (folder / "step.pkl").write_bytes(b"not a pickle at all")
    manifest = json.loads((folder / "stepline.json").read_text())
    manifest["files"]["step.pkl"] = {"size": 19, "blake3": blake3.blake3(b"not a pickle at all").hexdigest()}
    write_and_reseal(folder, manifest, top=dump / "p")
    with pytest.raises(StepLoadError, match="step.pkl.*cannot unpickle"):
        CX(dump).load("p", trusted=True)  # the rewritten manifest voids the signature (DESIGN §5a)


# ---------------------------------------------------------------- atomicity
def test_save_killed_half_way_leaves_previous_dump_loadable(tmp_path):
    script = tmp_path / "die.py"
    script.write_text(textwrap.dedent("""
        import os, sys, numpy as np
        from stepline import Pipeline, CX
        from stepline.base import BaseSaver, Identity

        class DieWhileSaving(BaseSaver):
            def save_step(self, step, context):
                os._exit(3)
            def can_load(self, step, context): return True
            def load_step(self, step, context): return step

        p = Pipeline([Identity(name="first"), Identity(name="second")], name="p")
        p.save(CX(sys.argv[1]), full_dump=True)
        p["second"].add_saver(DieWhileSaving())
        p.save(CX(sys.argv[1]), full_dump=True)
    """))
    result = subprocess.run([PY, str(script), str(tmp_path / "dump")], cwd=tmp_path, timeout=60)
    assert result.returncode == 3
    leftovers = [p.name for p in (tmp_path / "dump").iterdir() if p.name.startswith(".") and p.name not in LOCKS]
    assert leftovers and all(".tmp-" in n for n in leftovers)
    loaded = CX(tmp_path / "dump").load("p")  # the previous, complete dump
    assert loaded.keys() == ["first", "second"] and loaded["second"].savers == []
    Pipeline([Identity()], name="p").save(CX(tmp_path / "dump"), full_dump=True)
    wait_for_cleanup()
    assert sorted(p.name for p in (tmp_path / "dump").iterdir() if p.name.startswith(".")) == SPARED  # cleaned up


# A fitted step for the scripts that the tests below run in other processes.
SCRIPT_HEADER = """
import os, sys, numpy as np
from stepline import Pipeline, CX
from stepline.base import BaseSaver, BaseStep

class Full(BaseStep):
    def __init__(self, n=100_000, name=None):
        super().__init__(hyperparams={"n": n}, name=name)
    def fit(self, data_inputs, expected_outputs=None):
        self.w_ = np.full(self.hyperparams["n"], float(data_inputs[0]))
        return self
    def transform(self, data_inputs):
        return data_inputs
"""


def run_script(tmp_path, body: str, *args, **kwargs) -> subprocess.Popen:
    """Start ``SCRIPT_HEADER`` + ``body`` in a fresh Python process."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT_HEADER + textwrap.dedent(body))
    return subprocess.Popen([PY, str(script), *map(str, args)], cwd=tmp_path, **kwargs)


def test_changes_only_save_killed_half_way_leaves_previous_dump_loadable(tmp_path):
    proc = run_script(tmp_path, """
        class DieWhileSaving(BaseSaver):
            def save_step(self, step, context):
                os._exit(3)
            def can_load(self, step, context): return True
            def load_step(self, step, context): return step

        p = Pipeline([Full(name="a"), Full(name="b")], name="p").fit([1.0])
        p.save(CX(sys.argv[1]), full_dump=True)
        p["b"].fit([2.0])
        p["a"].fit([2.0])
        p["b"].add_saver(DieWhileSaving())
        p.save(CX(sys.argv[1]), full_dump=False)  # "b" is saved after "a" was rewritten
    """, tmp_path / "dump")
    assert proc.wait(timeout=60) == 3
    loaded = CX(tmp_path / "dump").load("p")  # the previous dump, whole: both steps at 1.0
    assert loaded["a"].w_[0] == 1.0 and loaded["b"].w_[0] == 1.0


class TwoArrays(BaseStep):
    """Holds one or two big arrays: its second save writes fewer buffer files."""

    def __init__(self, name=None):
        super().__init__(hyperparams={"count": 2}, name=name)

    def fit(self, data_inputs, expected_outputs=None):
        self.arrays_ = [np.full(100_000, float(i)) for i in range(self.hyperparams["count"])]
        return self

    def transform(self, data_inputs):
        return data_inputs


def test_changes_only_save_drops_files_the_step_no_longer_writes(tmp_path, pickles_in_files):
    p = Pipeline([TwoArrays(name="t"), Weights(name="w")], name="p").fit(np.ones(2))
    p.save(CX(tmp_path), full_dump=True)
    assert (tmp_path / "p" / "t" / "buffer-001.bin").is_file()
    p["t"].set_hyperparams({"count": 1})
    p["t"].fit(None)
    p.save(CX(tmp_path), full_dump=False)
    assert sorted(f.name for f in (tmp_path / "p" / "t").iterdir() if not f.name.startswith(".")) == [
        "buffer-000.bin", "step.pkl", "stepline.json"]
    assert len(CX(tmp_path).load("p", verify="full")["t"].arrays_) == 1


def test_changes_only_save_keeps_the_unchanged_steps_vouched_for(tmp_path, cache_small_files, pickles_in_files):
    from stepline.saving.integrity import trusted_entries
    p = fitted_pipeline()
    p.save(CX(tmp_path), full_dump=True)
    w1 = tmp_path / "p" / "w1"
    assert set(trusted_entries(w1)) == {"buffer-000.bin", "step.pkl"}
    p["inner"]["w2"].fit(np.full(4, 3.0))
    p.save(CX(tmp_path), full_dump=False)
    assert set(trusted_entries(w1)) == {"buffer-000.bin", "step.pkl"}  # its next load hashes nothing
    assert set(trusted_entries(tmp_path / "p" / "inner" / "w2")) == {"step.pkl"}


def test_concurrent_saves_to_one_destination_take_turns(tmp_path):
    body = """
        value = float(sys.argv[2])
        p = Pipeline([Full(300_000, name="a"), Full(300_000, name="b")], name="p").fit([value])
        for i in range(15):
            p["b"].fit([value])
            p.save(CX(sys.argv[1]), full_dump=bool(i % 2))
    """
    procs = [run_script(tmp_path, body, tmp_path / "dump", v, stderr=subprocess.PIPE, text=True) for v in (1, 2)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    loaded = CX(tmp_path / "dump").load("p", verify="full")
    assert loaded["a"].w_[0] == loaded["b"].w_[0] in (1.0, 2.0)  # one save's dump, whole
    wait_for_cleanup()
    assert sorted(p.name for p in (tmp_path / "dump").iterdir()) == SPARED + ["p"]


def test_loads_running_beside_saves_get_a_whole_dump(tmp_path):
    p = Pipeline([("a", Weights(50_000)), ("b", Weights(50_000))], name="p").fit([0.0])
    p.save(CX(tmp_path), full_dump=True)
    stop, errors, seen = threading.Event(), [], set()

    def save_forever():
        value = 0.0
        while not stop.is_set():
            value += 1.0
            p["a"].fit([value])
            p["b"].fit([value])
            p.save(CX(tmp_path), full_dump=bool(int(value) % 2))

    saver = threading.Thread(target=save_forever)
    saver.start()
    loads, deadline = 0, time.monotonic() + 20
    try:
        while (loads < 40 or len(seen) < 3) and time.monotonic() < deadline:
            loads += 1
            try:
                loaded = CX(tmp_path).load("p")
            except Exception as e:  # noqa: BLE001 - any failure is the test's failure
                errors.append(repr(e))
                continue
            assert loaded["a"].w_[0] == loaded["b"].w_[0]  # never half of one save, half of another
            seen.add(float(loaded["a"].w_[0]))
            time.sleep(0.001)  # let the saver take the lock now and then
    finally:
        stop.set()
        saver.join(timeout=60)
    assert errors == [] and len(seen) >= 3


def test_a_save_is_not_kept_waiting_by_loads_that_never_pause(tmp_path):
    p = Pipeline([("a", Weights(1_000_000)), ("b", Weights(1_000_000))], name="p").fit([0.0])
    p.save(CX(tmp_path), full_dump=True)
    stop, loads = threading.Event(), []

    def load_forever():
        while not stop.is_set():
            loads.append(CX(tmp_path).load("p", verify="full"))  # ~20 ms each, back to back
            del loads[:-1]

    loaders = [threading.Thread(target=load_forever) for _ in range(3)]
    for t in loaders:
        t.start()
    give_up = threading.Timer(20, stop.set)  # without a turnstile the saves would wait for ever
    give_up.start()
    try:
        start = time.monotonic()
        for value in range(1, 6):
            p["a"].fit([float(value)])
            p.save(CX(tmp_path), full_dump=False)
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        give_up.cancel()
        for t in loaders:
            t.join(timeout=60)
    assert elapsed < 5, f"5 saves took {elapsed:.1f} s beside loads"  # well under 1 s
    assert CX(tmp_path).load("p")["a"].w_[0] == 5.0


def test_a_write_that_fails_names_the_file_and_keeps_the_previous_dump(tmp_path):
    proc = run_script(tmp_path, """
        import resource, signal
        from stepline.saving import SaveError

        p = Pipeline([Full(10, name="a")], name="p").fit([1.0])
        p.save(CX(sys.argv[1]), full_dump=True)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
        p["a"].set_hyperparams({"n": 1_000_000})
        p["a"].fit([1.0])  # 8 MB: more than a file may hold now
        try:
            p.save(CX(sys.argv[1]), full_dump=False)
        except SaveError as e:
            print(e)
    """, tmp_path / "dump", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert re.search(r"p/a/buffer-000.bin: cannot write step 'a' \(Full\): File too large", out)
    assert CX(tmp_path / "dump").load("p")["a"].w_.shape == (10,)  # the previous dump, whole


# ------------------------------------------------------------ versions, mmap
def test_version_differences_warn_per_package(dump):
    path = dump / "p" / "stepline.json"
    manifest = json.loads(path.read_text())
    manifest["versions"]["numpy"] = "0.0.1"
    path.write_bytes(encode_manifest(manifest))
    with pytest.warns(VersionMismatchWarning, match="numpy: saved with 0.0.1, running"):
        CX(dump).load("p", trusted=True)  # the rewritten manifest voids the signature (DESIGN §5a)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CX(dump).load("p/w1", trusted=True)  # this folder's versions match: no warning


def test_mmap_load_returns_memmap_backed_arrays(dump):
    step = CX(dump).load("p/w1", mmap_mode="r")
    base = step.w_
    while base is not None and not isinstance(base, np.memmap):
        base = base.base
    assert isinstance(base, np.memmap) and not step.w_.flags.writeable
    np.testing.assert_array_equal(step.w_, CX(dump).load("p/w1").w_)


def test_verify_full_rehashes(cache_small_files, dump, monkeypatch):
    from stepline.saving import integrity
    calls = []
    real = integrity.file_digest
    monkeypatch.setattr(integrity, "file_digest", lambda p, *a: calls.append(p) or real(p, *a))
    CX(dump).load("p")
    assert calls == []  # the stat cache vouches for files this machine wrote
    CX(dump).load("p", verify="full")
    assert any(str(c).endswith("buffer-000.bin") for c in calls)


def test_first_load_of_a_copied_dump_reads_each_buffer_once_as_it_verifies_it(tmp_path, monkeypatch):
    """A copy has new inodes: nothing is vouched for, so every file is hashed; the buffer
    files are read once, into the arrays the load returns, and hashed as they are read."""
    import shutil

    from stepline.saving import integrity
    p = Pipeline([("a", Weights(1_200_000)), ("b", Weights(300_000))], name="p").fit(np.ones(4))  # 4.8 MB, 1.2 MB
    p.save(CX(tmp_path / "d"), full_dump=True)
    wait_for_cleanup()  # the previous dump is deleted in the background
    shutil.copytree(tmp_path / "d", tmp_path / "copy")
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: opened.append(os.fspath(f)) or real_open(f, *a, **k))
    real_os_open = os.open  # (files of a dump are opened without blocking: os.open, then fdopen)
    monkeypatch.setattr(os, "open", lambda f, *a, **k: opened.append(os.fspath(f)) or real_os_open(f, *a, **k))
    hashed = []
    real_digest = integrity.file_digest
    monkeypatch.setattr(integrity, "file_digest", lambda f, *a: hashed.append(os.fspath(f)) or real_digest(f, *a))
    loaded = CX(tmp_path / "copy").load("p")
    monkeypatch.undo()
    buffers = sorted(str(f) for f in (tmp_path / "copy").rglob("buffer-*.bin"))
    assert len(buffers) == 2 and sorted(f for f in hashed if "buffer-" in f) == buffers
    assert sorted(f for f in opened if "buffer-" in f) == buffers  # read once: hashing is the read
    np.testing.assert_array_equal(loaded["a"].w_, p["a"].w_)
    np.testing.assert_array_equal(loaded["b"].w_, p["b"].w_)
    assert loaded["a"].w_.flags.writeable


def test_first_load_of_a_copied_dump_still_catches_a_corrupt_buffer(tmp_path):
    import shutil
    p = Pipeline([("a", Weights(600_000))], name="p").fit(np.ones(4))
    p.save(CX(tmp_path / "d"), full_dump=True)
    wait_for_cleanup()  # the previous dump is deleted in the background
    shutil.copytree(tmp_path / "d", tmp_path / "copy")
    buffer = tmp_path / "copy" / "p" / "a" / "buffer-000.bin"
    with open(buffer, "r+b") as f:
        f.seek(1234)
        f.write(b"\xff\xfe")
    with pytest.raises(CorruptFileError, match=r"buffer-000\.bin: BLAKE3 mismatch"):
        CX(tmp_path / "copy").load("p")


# ------------------------------------------------------------------ inspect
def test_inspect_prints_tree_from_manifests_without_unpickling(dump_of_files):
    dump = dump_of_files
    pickled, marker = dump / "p" / "w1" / "step.pkl", dump / "unpickled"
    payload = b"cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR."  # os.system("touch ...") if run
    pickled.write_bytes(payload.ljust(pickled.stat().st_size, b"!"))
    out = subprocess.run([PY, "-m", "stepline", "inspect", str(dump / "p")], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "p: stepline.pipeline.Pipeline" in out and "savers: ChildrenSaver" in out
    assert re.search(r"w1: test_saving.Weights  \[39\d\.\d KiB in 2 files\]", out)
    assert 'hyperparams: {"size": 100000}' in out
    assert "w3: " in out and "versions: python" in out and "numpy" in out
    assert not marker.exists()


def test_inspect_on_a_random_folder_is_a_clear_error(tmp_path):
    result = subprocess.run([PY, "-m", "stepline", "inspect", str(tmp_path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "stepline.json" in result.stderr and "Traceback" not in result.stderr


def test_space_that_json_cannot_carry_is_saved_as_repr(tmp_path):
    from stepline.hyperparams.distributions import Choice
    step = Identity(hyperparams={"sizes": (16,)}, hyperparams_space={"sizes": Choice([(16,), (32, 32)])})
    step.save(CX(tmp_path), full_dump=True)
    manifest = json.loads((tmp_path / "Identity" / "stepline.json").read_text())
    assert manifest["hyperparams_space"]["sizes"].startswith("Choice(")
    assert CX(tmp_path).load("Identity").hyperparams_space["sizes"] == Choice([(16,), (32, 32)])


def test_by_value_code_from_another_python_is_refused_clearly(tmp_path):
    script = tmp_path / "build.py"
    script.write_text(textwrap.dedent("""
        import sys
        from stepline import CX
        from stepline.base import Identity
        class MainOnly(Identity):
            pass
        MainOnly().save(CX(sys.argv[1]), full_dump=True)
    """))
    subprocess.run([PY, str(script), str(tmp_path / "dump")], check=True, cwd=tmp_path, timeout=60)
    path = tmp_path / "dump" / "MainOnly" / "stepline.json"
    manifest = json.loads(path.read_text())
    assert manifest["inline"]["step.pkl"]["by_value"] and manifest["inline"]["step.pkl"]["python"]
    manifest["inline"]["step.pkl"]["python"] = "3.9.18"
    path.write_bytes(encode_manifest(manifest))
    from stepline.saving import IncompatibleDumpError
    with pytest.raises(IncompatibleDumpError, match=r"step.pkl.*Python 3\.9\.18"):
        CX(tmp_path / "dump").load("MainOnly", trusted=True)  # the edit voids the signature


class ReprRecording(BaseSaver):
    """Records ``repr`` of the stripped copy it is given."""

    seen: list = []

    def save_step(self, step, context):
        ReprRecording.seen.append(repr(step))
        return step

    def can_load(self, step, context):
        return False

    def load_step(self, step, context):
        return step


def test_a_custom_saver_after_the_children_saver_sees_placeholders_in_repr(tmp_path):
    p = Pipeline([("a", Weights(4)), ("b", Weights(4))], name="p").fit([1.0])
    children_saver = p.get_savers()[0]
    p.set_savers([ReprRecording(), children_saver])  # reversed: children saved first
    ReprRecording.seen.clear()
    p.save(CX(tmp_path), full_dump=True)
    assert ReprRecording.seen == ["Pipeline(name='p', [\n    ChildPlaceholder('a'),\n    ChildPlaceholder('b'),\n])"]
    assert np.array_equal(CX(tmp_path).load("p").transform([1.0]), p.transform([1.0]))
