"""Every way a dump can be broken gets one clear error naming the path and the reason.

Each malformed input of issue 11 is made here on a real dump; the load runs in a fresh
process (a hang is a failed test, not a stuck suite) and must end in a ``StepLoadError``
subclass, and ``stepline inspect`` on it must exit 2 with the message on stderr.
"""
import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from stepline import CX, Pipeline
from stepline.base import BaseSaver, BaseStep
from stepline.saving import CorruptFileError, ManifestError, SaveError, StepLoadError
from stepline.saving import manifest as mf
from stepline.steps.numpy import AddN, MultiplyByN

sys.path.insert(0, str(Path(__file__).parent))
from trust_tamper import pickle_to_file, write_inline  # noqa: E402

PY = sys.executable
TIMEOUT = 60  # a load that blocks (a FIFO opened for reading) fails the test instead of the suite
LOAD = textwrap.dedent("""
    import json, sys
    from stepline import CX
    from stepline.saving import StepLoadError
    try:
        CX(sys.argv[1]).load(sys.argv[2])
    except StepLoadError as error:
        print(json.dumps({"error": type(error).__name__, "message": str(error)}))
    else:
        print(json.dumps({"error": None}))
""")


# ------------------------------------------------------------------ helpers
def save_pipeline(root: Path) -> Path:
    Pipeline([MultiplyByN(2), AddN(1)], name="p").save(CX(root), full_dump=True)
    return root / "p"


def forge(folder: Path, change) -> None:
    """Rewrite ``folder``'s manifest as stepline itself would write it, after ``change(data)``:
    its own checks pass, so what is tested is the validation of the content."""
    path = folder / mf.MANIFEST_NAME
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    encode = getattr(mf, "encode_manifest", lambda d: json.dumps(d, indent=2).encode())  # before the fix
    path.write_bytes(encode(data))


def record_of(path: Path, like: dict) -> dict:
    """A manifest record for the file at ``path``, with the digest ``like`` uses."""
    data = path.read_bytes()
    if "sha256" in like:
        return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    import blake3
    return {"size": len(data), "blake3": blake3.blake3(data).hexdigest()}


def load_in_subprocess(root: Path, name: str) -> dict:
    result = subprocess.run([PY, "-c", LOAD, str(root), name], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout)


def inspect(path: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "stepline", "inspect", *options, str(path)], capture_output=True, text=True,
                          timeout=TIMEOUT)


def make_fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


# -------------------------------------------------- the corpus of broken dumps
def _no_files(p):
    forge(p, lambda d: d.pop("files"))


def _edited_by_hand(p):  # not through stepline: the manifest's own check fails
    data = json.loads((p / "stepline.json").read_text())
    del data["files"]
    (p / "stepline.json").write_text(json.dumps(data, indent=2))


def _deep_manifest(p):
    (p / "stepline.json").write_text("[" * 200_000)


def _deep_stat_cache(p):  # in a step with a file (a step whose pickle is inline has no files: no cache is read)
    pickle_to_file(p / "AddN", p)
    (p / "AddN" / ".stepline-verified.json").write_text("[" * 200_000)


def _nul_in_file_name(p):
    forge(p, lambda d: d["files"].update({"step\x00.pkl": {"size": 1, "blake3": "0" * 64}}))


def _python_is_int(p):  # on the inline pickle a tiny step's manifest holds
    forge(p, lambda d: d["inline"]["step.pkl"].update(python=3, by_value=["__main__.X"]))


def _python_is_int_on_a_file(p):
    pickle_to_file(p, p)
    forge(p, lambda d: d["files"]["step.pkl"].update(python=3, by_value=["__main__.X"]))


def _versions_is_str(p):
    forge(p, lambda d: d.update(versions="3.11"))


def _children_is_int(p):
    forge(p, lambda d: d.update(children=7))


def _child_is_dot(p):
    forge(p, lambda d: d.update(children=["."]))


def _savers_is_int(p):
    forge(p, lambda d: d.update(savers=5))


def _pickle_of_42(p):
    pickle_to_file(p, p)
    (p / "step.pkl").write_bytes(pickle.dumps(42))
    forge(p, lambda d: d["files"].update({"step.pkl": record_of(p / "step.pkl", d["files"]["step.pkl"])}))


def _fifo_stat_cache(p):
    pickle_to_file(p / "AddN", p)
    make_fifo(p / "AddN" / ".stepline-verified.json")


def _fifo_lock(p):
    make_fifo(p.parent / ".p.lock")


def _fifo_turn(p):
    make_fifo(p.parent / ".p.turn")


def _fifo_manifest(p):
    make_fifo(p / "AddN" / "stepline.json")


def _pickle_of_42_inline(p):
    write_inline(p, {"step.pkl": pickle.dumps(42)}, p)


def _folder_as_pickle(p):
    pickle_to_file(p / "AddN", p)
    (p / "AddN" / "step.pkl").unlink()
    (p / "AddN" / "step.pkl").mkdir()


def _fifo_journal(p):
    make_fifo(p.parent / ".p.journal")


def _lock_is_folder(p):
    (p.parent / ".p.lock").unlink(missing_ok=True)
    (p.parent / ".p.lock").mkdir()


# name -> (corruption of the dump p, error class, what the message must say besides the path)
CORPUS = {
    "no files": (_no_files, ManifestError, r"stepline.json.*'files'"),
    "edited by hand": (_edited_by_hand, ManifestError, r"stepline.json.*(edited|corrupt)"),
    "200 000 nested [ in the manifest": (_deep_manifest, ManifestError, r"stepline.json.*nest"),
    "200 000 nested [ in the stat cache": (_deep_stat_cache, CorruptFileError, r"stepline-verified.json.*nest"),
    "NUL byte in a file name": (_nul_in_file_name, ManifestError, r"stepline.json.*NUL"),
    '"python": 3': (_python_is_int, ManifestError, r"stepline.json.*'python'"),
    '"python": 3 on a step.pkl file': (_python_is_int_on_a_file, ManifestError, r"stepline.json.*'python'"),
    '"versions": "3.11"': (_versions_is_str, ManifestError, r"stepline.json.*'versions'"),
    "children: 7": (_children_is_int, ManifestError, r"stepline.json.*'children'"),
    'children: ["."]': (_child_is_dot, ManifestError, r"stepline.json.*child name '\.'"),
    "savers: 5": (_savers_is_int, ManifestError, r"stepline.json.*'savers'"),
    "a pickle of 42 as step.pkl": (_pickle_of_42, StepLoadError, r"step.pkl.*int.*not a step"),
    "a pickle of 42 inline": (_pickle_of_42_inline, StepLoadError, r"step.pkl \(inline in stepline.json\).*int.*not a step"),
    "FIFO as the stat cache": (_fifo_stat_cache, CorruptFileError, r"stepline-verified.json.*FIFO"),
    "FIFO as .p.lock": (_fifo_lock, CorruptFileError, r"\.p\.lock.*FIFO"),
    "FIFO as .p.turn": (_fifo_turn, CorruptFileError, r"\.p\.turn.*FIFO"),
    ".p.lock a folder": (_lock_is_folder, CorruptFileError, r"\.p\.lock.*folder"),
    "FIFO as .p.journal": (_fifo_journal, StepLoadError, r"\.p\.journal.*FIFO"),
    "FIFO as a child's stepline.json": (_fifo_manifest, StepLoadError, r"AddN/stepline.json.*FIFO"),
    "a folder as step.pkl": (_folder_as_pickle, CorruptFileError, r"AddN/step.pkl.*not a regular file"),
}


@pytest.mark.parametrize("case", CORPUS, ids=list(CORPUS))
def test_each_broken_dump_is_one_clear_error_from_load_and_inspect(case, tmp_path):
    corrupt, error_class, reason = CORPUS[case]
    corrupt(save_pipeline(tmp_path))
    outcome = load_in_subprocess(tmp_path, "p")
    assert outcome["error"] is not None, f"{case}: loaded without an error"
    assert issubclass(getattr(sys.modules["stepline.saving.errors"], outcome["error"]), error_class), outcome
    assert str(tmp_path) in outcome["message"] and re.search(reason, outcome["message"]), outcome["message"]
    result = inspect(tmp_path / "p")
    assert result.returncode == 2, f"{case}: inspect exited {result.returncode}\n{result.stdout}{result.stderr}"
    assert str(tmp_path) in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_root_that_is_a_file_is_a_clear_error(tmp_path):
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("hello")
    outcome = load_in_subprocess(not_a_folder, "p")
    assert outcome["error"] == "NotADumpError" and re.search(r"notes.txt.*a file, not a folder", outcome["message"])
    with pytest.raises(SaveError, match=r"notes.txt.*a file, not a folder"):
        MultiplyByN(2).set_name("m").save(CX(not_a_folder), full_dump=True)
    result = inspect(not_a_folder)
    assert result.returncode == 2 and "notes.txt" in result.stderr and "Traceback" not in result.stderr


def test_a_wrong_name_lists_the_dumps_that_are_there(tmp_path):
    save_pipeline(tmp_path)
    MultiplyByN(3).set_name("other").save(CX(tmp_path), full_dump=True)
    outcome = load_in_subprocess(tmp_path, "pp")
    assert outcome["error"] == "NotADumpError"
    assert re.search(r"pp.*no such dump.*other, p\b", outcome["message"]), outcome["message"]
    result = inspect(tmp_path / "pp")
    assert result.returncode == 2 and "other, p" in result.stderr


def test_saving_with_a_broken_lock_is_a_save_error(tmp_path):
    step = MultiplyByN(2).set_name("p")
    step.save(CX(tmp_path), full_dump=True)
    for corrupt, reason in ((_fifo_lock, "FIFO"), (_fifo_turn, "FIFO"), (_lock_is_folder, "folder"),
                            (_fifo_journal, "FIFO")):
        corrupt(tmp_path / "p")
        with pytest.raises(SaveError, match=rf"\.p\.(lock|turn|journal).*{reason}"):
            step.save(CX(tmp_path), full_dump=True)
        for name in (".p.lock", ".p.turn", ".p.journal"):
            path = tmp_path / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def flip_each_bit(manifest: Path, load, step: int = 1) -> None:
    """Flip each bit of ``manifest`` (every ``step``-th), one at a time; ``load()`` must raise
    a :class:`StepLoadError` for every one of them."""
    original = manifest.read_bytes()
    try:
        for index in range(0, len(original) * 8, step):
            flipped = bytearray(original)
            flipped[index // 8] ^= 1 << (index % 8)
            manifest.write_bytes(bytes(flipped))
            try:
                load()
            except StepLoadError:
                continue
            pytest.fail(f"{manifest}: bit {index} flipped ({original[index // 8:][:1]!r} -> "
                        f"{bytes(flipped[index // 8:][:1])!r}) loaded without an error")
    finally:
        manifest.write_bytes(original)


def test_every_single_bit_flip_of_the_root_manifest_is_caught(tmp_path):
    """The root manifest has no parent to hold its digest: its own digest catches every flip."""
    p = save_pipeline(tmp_path)
    flip_each_bit(p / "stepline.json", lambda: CX(tmp_path).load("p", verify=False))
    assert CX(tmp_path).load("p").transform(np.array([1.0])).tolist() == [3.0]


def test_every_single_bit_flip_of_a_child_manifest_is_caught(tmp_path):
    """Loaded on its own, by its own digest; loaded with its pipeline, by its parent's too."""
    p = save_pipeline(tmp_path)
    flip_each_bit(p / "AddN" / "stepline.json", lambda: CX(tmp_path).load("p/AddN", verify=False))
    flip_each_bit(p / "AddN" / "stepline.json", lambda: CX(tmp_path).load("p", verify=False), step=13)
    assert CX(tmp_path).load("p").transform(np.array([1.0])).tolist() == [3.0]


# ------------------------------------------------- read-only, other users, copies
def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs unshare -rm (user and mount namespaces)")
def test_a_copy_on_a_read_only_mount_loads_and_a_save_there_is_a_save_error(tmp_path):
    """A real read-only tmpfs mount (in a private mount namespace) holding a copied dump."""
    save_pipeline(tmp_path / "dump")
    mount = tmp_path / "ro"
    mount.mkdir()
    script = textwrap.dedent("""
        import sys
        from stepline import CX
        from stepline.saving import SaveError
        print(CX(sys.argv[1]).load("p").transform([1.0]).tolist())
        try:
            CX(sys.argv[1]).load("p").save(CX(sys.argv[1]), full_dump=True)
        except SaveError as error:
            print("SaveError:", error)
    """)
    shell = (f"mount -t tmpfs none {mount} && cp -r {tmp_path / 'dump'}/. {mount} && "
             f"mount -o remount,ro {mount} && {PY} -c '{script}' {mount}")
    result = subprocess.run(["unshare", "-rm", "sh", "-c", shell], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    loaded, saved = result.stdout.splitlines()
    assert loaded == "[3.0]"
    assert re.search(rf"SaveError: {mount}.*[Rr]ead-only file system", saved), saved


def _without_root_powers() -> list[str]:
    """A command prefix under which file permissions apply: as root, drop the capabilities
    that bypass them (``setpriv``); as another user, nothing."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be made to apply")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner"]


def test_saving_as_a_user_who_cannot_write_the_lock_file_is_a_save_error(tmp_path):
    save_pipeline(tmp_path)
    os.chmod(tmp_path / ".p.lock", 0o444)
    home = tmp_path / "home"
    home.mkdir()
    script = textwrap.dedent("""
        import sys
        from stepline import CX
        from stepline.saving import SaveError
        p = CX(sys.argv[1]).load("p")
        try:
            p.save(CX(sys.argv[1]), full_dump=True)
        except SaveError as error:
            print(error)
    """)
    env = {**os.environ, "STEPLINE_HOME": str(home), "HOME": str(home)}
    result = subprocess.run([*_without_root_powers(), PY, "-c", script, str(tmp_path)], capture_output=True,
                            text=True, timeout=TIMEOUT, env=env, cwd=home)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert re.search(r"\.p\.lock.*[Pp]ermission denied", result.stdout), result.stdout


class PauseWhileLoading(BaseSaver):
    """A saver whose load waits until the test lets it go (the load holds its lock meanwhile)."""

    started = threading.Event()
    release = threading.Event()

    def save_step(self, step, context):
        return step

    def can_load(self, step, context):
        return True

    def load_step(self, step, context):
        PauseWhileLoading.started.set()
        assert PauseWhileLoading.release.wait(TIMEOUT)
        return step


def test_a_dump_copied_without_its_lock_files_still_takes_turns_with_a_save(tmp_path):
    step = MultiplyByN(2).set_name("p")
    step.add_saver(PauseWhileLoading())
    step.save(CX(tmp_path / "orig"), full_dump=True)
    shutil.copytree(tmp_path / "orig" / "p", tmp_path / "copy" / "p")  # no .p.lock, no .p.turn
    loaded = []
    loader = threading.Thread(target=lambda: loaded.append(CX(tmp_path / "copy").load("p")))
    loader.start()
    try:
        assert PauseWhileLoading.started.wait(TIMEOUT)
        save = textwrap.dedent("""
            import logging, sys
            from stepline import CX
            from stepline.steps.numpy import MultiplyByN
            logging.basicConfig(level=logging.INFO, format="%(message)s")
            MultiplyByN(5).set_name("p").save(CX(sys.argv[1]), full_dump=True)
            print("saved", file=sys.stderr, flush=True)
        """)
        saver = subprocess.Popen([PY, "-c", save, str(tmp_path / "copy")], stderr=subprocess.PIPE, text=True)
        first = ""  # "waiting for ..." if it takes turns, "saved" if it does not
        while not first.startswith(("waiting for", "saved")) and (line := saver.stderr.readline()):
            first = line
    finally:
        PauseWhileLoading.release.set()
        loader.join(TIMEOUT)
    assert saver.wait(TIMEOUT) == 0
    assert first.startswith("waiting for another save or load"), first
    assert loaded and loaded[0].hyperparams["multiply_by"] == 2
    assert CX(tmp_path / "copy").load("p").hyperparams["multiply_by"] == 5


# ---------------------------------------------------------- the stat cache
class Holder(BaseStep):
    """Holds one array big enough for its own buffer file, and for the stat cache (>= 1 MiB)."""

    def __init__(self, name=None):
        super().__init__(name=name)

    def fit(self, data_inputs, expected_outputs=None):
        self.w_ = np.full(200_000, float(data_inputs[0]))
        return self

    def transform(self, data_inputs):
        return data_inputs


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs a tmpfs at /dev/shm")
def test_writes_through_an_r_plus_mapping_on_tmpfs_are_caught(tmp_path):
    root = Path(__import__("tempfile").mkdtemp(dir="/dev/shm", prefix="stepline-test-"))
    try:
        Holder(name="h").fit([1.0]).save(CX(root), full_dump=True)
        mapped = CX(root).load("h", mmap_mode="r+")
        assert mapped.w_.sum() == 200_000.0  # the pages are mapped (writable, on tmpfs) from here on
        mapped.w_[123] = 42.0  # so this write changes neither the mtime nor the ctime
        del mapped
        with pytest.raises(CorruptFileError, match=r"h/buffer-000.bin"):
            CX(root).load("h")
        with pytest.raises(CorruptFileError, match=r"h/buffer-000.bin"):
            CX(root).load("h")  # and still on every load after
    finally:
        shutil.rmtree(root)


class EditNeighbourInPlace(BaseSaver):
    """While its step is saved, edits the unchanged step ``a``'s buffer in place in the
    current dump (same size, mtime put back): the bytes change, the stat cache must not vouch."""

    def __init__(self, target):
        self.target = str(target)

    def save_step(self, step, context):
        before = os.stat(self.target)
        probe = Path(context.get_path()) / "probe"
        probe.touch()
        while os.stat(probe).st_ctime_ns <= before.st_ctime_ns:  # a clock tick after the link, at most
            os.utime(probe)
        probe.unlink()
        with open(self.target, "r+b") as f:
            f.seek(800)
            f.write(b"\x01" * 8)
        os.utime(self.target, ns=(before.st_atime_ns, before.st_mtime_ns))
        return step

    def can_load(self, step, context):
        return False

    def load_step(self, step, context):
        return step


def test_an_in_place_edit_during_a_changes_only_save_is_caught(tmp_path):
    p = Pipeline([Holder(name="a"), Holder(name="b")], name="p").fit([1.0])
    p.save(CX(tmp_path), full_dump=True)
    CX(tmp_path).load("p")  # the stat cache vouches for every file now
    p["b"].fit([2.0])
    p["b"].add_saver(EditNeighbourInPlace(tmp_path / "p" / "a" / "buffer-000.bin"))
    p.save(CX(tmp_path), full_dump=False)
    with pytest.raises(CorruptFileError, match=r"p/a/buffer-000.bin"):
        CX(tmp_path).load("p")


# ------------------------------------------------------------------ inspect
def test_inspect_json_gives_the_tree_and_names_the_wrapped_estimator(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from stepline.saving.manifest import root_digest
    from stepline.steps.sklearn import SKLearnWrapper
    x, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
    Pipeline([MultiplyByN(2), SKLearnWrapper(LogisticRegression(C=0.5), name="clf")], name="p").fit(x, y) \
        .save(CX(tmp_path), full_dump=True)
    pkl = pickle_to_file(tmp_path / "p" / "clf", tmp_path / "p")
    pkl.write_bytes(b"\x80\x05K*." .ljust(pkl.stat().st_size, b"!"))  # a plain 42: inspect must say so
    assert inspect(tmp_path / "p").returncode == 2
    write_inline(tmp_path / "p" / "clf", {"step.pkl": b"\x80\x05K*."}, tmp_path / "p")  # the same, inline
    result = inspect(tmp_path / "p")
    assert result.returncode == 2 and "clf/step.pkl (inline in stepline.json): holds a plain value" in result.stderr
    Pipeline([MultiplyByN(2), SKLearnWrapper(LogisticRegression(C=0.5), name="clf")], name="p").fit(x, y) \
        .save(CX(tmp_path), full_dump=True)
    result = inspect(tmp_path / "p", "--json")
    assert result.returncode == 0, result.stderr
    tree = json.loads(result.stdout)
    assert tree["root_digest"] == root_digest(tmp_path / "p") and tree["format_version"] == mf.FORMAT_VERSION
    step = tree["step"]
    assert (step["name"], step["class"]) == ("p", "stepline.pipeline.Pipeline")
    assert step["savers"] == ["stepline.saving.savers.ChildrenSaver"]
    assert [c["name"] for c in step["children"]] == ["MultiplyByN", "clf"]
    clf = step["children"][1]
    assert clf["info"] == {"estimator": "sklearn.linear_model._logistic.LogisticRegression"}
    assert isinstance(clf["hyperparams"], dict) and clf["files"] == {} and set(clf["inline"]) == {"step.pkl"}
    assert clf["inline"]["step.pkl"]["size"] == mf.read_manifest(tmp_path / "p" / "clf")["inline"]["step.pkl"]["size"]
    assert "base64" not in clf["inline"]["step.pkl"]  # the tree describes, it does not carry the bytes
    text = inspect(tmp_path / "p").stdout
    assert "estimator: sklearn.linear_model._logistic.LogisticRegression" in text
