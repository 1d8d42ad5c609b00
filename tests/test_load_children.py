"""Loading a pipeline's children: each child's folder and manifest checked as they are read
(never through a link, never a hang: FIFOs are tried in a subprocess with a timeout), whatever
is in their place refused with its clear StepLoadError naming the path; child names inside the
dump, and each child the step its folder is named for, before any of its savers runs."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stepline import CX, Pipeline
from stepline.base import BaseSaver
from stepline.saving import ManifestError, MixedDumpError, NotADumpError, StepLoadError
from stepline.saving.manifest import MANIFEST_NAME
from stepline.saving.savers import ChildPlaceholder, ChildrenSaver
from stepline.steps.numpy import AddN, MultiplyByN

PY = sys.executable
TIMEOUT = 60  # a blocking open would hang: a failed test, not a stuck suite


def saved(root: Path) -> Path:
    """A dump ``root/p`` of a pipeline with the children ``m`` and ``a``; returns ``root/p``."""
    Pipeline([("m", MultiplyByN(2)), ("a", AddN(1))]).set_name("p").save(CX(root), full_dump=True)
    return root / "p"


def _link_to_a_copy(child: Path) -> None:  # the very bytes the parent lists: only the link is wrong
    shutil.copytree(child, child.parent.parent / "m-copy")
    shutil.rmtree(child)
    child.symlink_to(child.parent.parent / "m-copy")


def _file(child: Path) -> None:
    shutil.rmtree(child)
    child.write_bytes(b"not a folder")


def _fifo(child: Path) -> None:
    shutil.rmtree(child)
    os.mkfifo(child)


def _missing(child: Path) -> None:
    shutil.rmtree(child)


def _manifest_linked(child: Path) -> None:
    manifest = child / MANIFEST_NAME
    manifest.rename(child.parent.parent / "real.json")
    manifest.symlink_to(child.parent.parent / "real.json")


def _manifest_fifo(child: Path) -> None:
    (child / MANIFEST_NAME).unlink()
    os.mkfifo(child / MANIFEST_NAME)


def _manifest_folder(child: Path) -> None:
    (child / MANIFEST_NAME).unlink()
    (child / MANIFEST_NAME).mkdir()


def _manifest_missing(child: Path) -> None:
    (child / MANIFEST_NAME).unlink()


def _manifest_of_another_save(child: Path) -> None:  # a well-formed manifest of a step named m
    Pipeline([("m", MultiplyByN(5))]).set_name("p").save(CX(child.parent.parent / "other"), full_dump=True)
    shutil.copy(child.parent.parent / "other" / "p" / "m" / MANIFEST_NAME, child / MANIFEST_NAME)


# what is put in place of the child ``m`` -> (error class, what its message says after the path)
IN_PLACE_OF_THE_CHILD = {
    "a link to a copy of it": (_link_to_a_copy, NotADumpError, r"p/m: is a symbolic link"),
    "a file": (_file, NotADumpError, r"p/m: a file, not a folder"),
    "a FIFO": (_fifo, NotADumpError, r"p/m: a FIFO"),
    "nothing": (_missing, NotADumpError, r"p/m: no such dump"),
    "a link as its manifest": (_manifest_linked, NotADumpError, r"p/m/stepline.json: is a symbolic link"),
    "a FIFO as its manifest": (_manifest_fifo, ManifestError, r"p/m/stepline.json: is a FIFO"),
    "a folder as its manifest": (_manifest_folder, ManifestError, r"p/m/stepline.json: is a folder"),
    "no manifest": (_manifest_missing, NotADumpError, r"p/m: not a stepline dump \(no stepline.json\)"),
    "the manifest of another save": (_manifest_of_another_save, MixedDumpError, r"p/m: this step folder is not"),
}

LOAD = """
import json, sys
from stepline import CX
try:
    CX(sys.argv[1]).load("p")
    print(json.dumps({"error": None}))
except Exception as e:
    print(json.dumps({"error": [c.__name__ for c in type(e).__mro__], "message": str(e)}))
"""


@pytest.mark.parametrize("case", list(IN_PLACE_OF_THE_CHILD))
def test_whatever_is_in_place_of_a_child_or_its_manifest_gets_its_clear_error(tmp_path, case):
    corrupt, error, message = IN_PLACE_OF_THE_CHILD[case]
    corrupt(saved(tmp_path / "dump") / "m")
    result = subprocess.run([PY, "-c", LOAD, str(tmp_path / "dump")], capture_output=True, text=True,
                            timeout=TIMEOUT, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["error"] and error.__name__ in outcome["error"] and "StepLoadError" in outcome["error"], outcome
    assert str(tmp_path / "dump") in outcome["message"]
    assert re.search(message, outcome["message"]), outcome["message"]


class SwapsChildForALink(BaseSaver):
    """Runs before the ChildrenSaver on load: puts a link to an identical copy in place of
    the child ``m`` (same bytes, so only the link check can refuse it)."""

    def save_step(self, step, context):
        return step

    def can_load(self, step, context) -> bool:
        return True

    def load_step(self, step, context):
        _link_to_a_copy(context.get_path() / "m")
        return step


def test_a_child_folder_replaced_by_a_link_while_its_parent_loads_is_refused(tmp_path):
    p = Pipeline([("m", MultiplyByN(2)), ("a", AddN(1))]).set_name("p")
    p.set_savers([SwapsChildForALink(), ChildrenSaver()])  # on load: the swap, then the children
    p.save(CX(tmp_path), full_dump=True)
    with pytest.raises(NotADumpError, match=r"p/m: is a symbolic link"):
        CX(tmp_path).load("p")


def test_a_nested_pipeline_loads_whole_and_by_its_inner_path(tmp_path):
    inner = Pipeline([("m", MultiplyByN(3)), ("a", AddN(1))]).set_name("inner")
    outer = Pipeline([("first", AddN(2)), inner, ("last", MultiplyByN(2))]).set_name("outer")
    data = np.arange(4.0)
    expected = outer.transform(data)
    outer.save(CX(tmp_path), full_dump=True)
    loaded = CX(tmp_path).load("outer")
    assert np.array_equal(loaded.transform(data), expected)
    assert np.array_equal(CX(tmp_path).load("outer/inner").transform(data), inner.transform(data))
    assert list(loaded["inner"].keys()) == ["m", "a"] and not any(
        isinstance(c, ChildPlaceholder) for c in loaded["inner"].get_children())
    assert outer.save(CX(tmp_path)) is outer and CX(tmp_path).load("outer")["inner"]["m"].hyperparams == \
        inner["m"].hyperparams


@pytest.mark.parametrize("root", ["/tmp/x", "/", "relative/dir", "/tmp/x/", ".", "", "./rel", "//net/x", "a/./b"])
def test_get_folder_is_get_path_as_a_string(root):
    cx = CX(root).push(ChildPlaceholder("a")).push(ChildPlaceholder("b"))
    assert cx.get_folder() == os.fspath(cx.get_path())
    assert CX(root).get_folder() == os.fspath(CX(root).get_path())


@pytest.mark.parametrize("text", ['{"a": [1, 2.5, null, true, "é"]}', ' \n{"a": 1}', '{"a": 1}\n\t \r\n', '[]', '7',
                                  '"s"', 'NaN', '{"a": 1} x', '{"a": 1}{}', '', ' ', '{"a": }', '{"a": 1', 'nul',
                                  '[' * 100_000, '{"a": "\\ud800"}', '{"a": 1,}'])
def test_a_manifest_parses_as_json_loads_parses_it_or_fails_as_it_fails(text):
    from stepline.saving.manifest import parse_json
    raw = text.encode("utf-8", "surrogatepass")
    try:
        expected = json.loads(text)
    except RecursionError:
        with pytest.raises(ManifestError, match="x.json: the manifest is nested too deeply"):
            parse_json("x.json", raw, "the manifest", ManifestError)
        return
    except json.JSONDecodeError as e:
        with pytest.raises(ManifestError, match=re.escape(f"x.json: the manifest is not valid JSON ({e})")):
            parse_json("x.json", raw, "the manifest", ManifestError)
        return
    parsed = parse_json("x.json", raw, "the manifest", ManifestError)
    assert parsed == expected or (parsed != parsed and expected != expected)  # (NaN)


def test_a_manifest_that_is_not_utf8_is_refused():
    from stepline.saving.manifest import parse_json
    with pytest.raises(ManifestError, match=r"x.json: the manifest is not valid JSON \('utf-8' codec"):
        parse_json("x.json", b'{"a": "\xff"}', "the manifest", ManifestError)


SAVERS_RUN: list = []


class NotesItsLoad(BaseSaver):
    """A custom saver that notes each step it loads (it would read files by the step's name)."""

    def save_step(self, step, context):
        return step

    def can_load(self, step, context) -> bool:
        return True

    def load_step(self, step, context):
        SAVERS_RUN.append(step.name)
        return step


def test_a_folder_whose_pickle_holds_another_step_is_refused_before_that_steps_savers_run(tmp_path):
    """A saver finds the step's folder by the step's name: a pickle naming another step (here
    ``../x``) must be refused before any of its savers looks there."""
    import pickle
    sys.path.insert(0, str(Path(__file__).parent))
    from trust_tamper import write_inline
    root = saved(tmp_path / "dump")
    impostor = MultiplyByN(2).set_name("other")
    impostor.set_savers([NotesItsLoad()])
    impostor.name = "../x"  # (bypasses set_name, as a hand-made pickle would)
    write_inline(root / "m", {"step.pkl": pickle.dumps(impostor)}, root)
    SAVERS_RUN.clear()
    with pytest.raises(StepLoadError, match=r"p/m: holds step '../x', expected 'm'"):
        CX(tmp_path / "dump").load("p", trusted=True)
    assert SAVERS_RUN == []


class LoadsAChildByAPathOutOfItsFolder(BaseSaver):
    """A custom saver that asks for ``../m`` under the folder of its next sibling, whose
    manifest the load has not read yet (so no listing vouches for the name)."""

    def save_step(self, step, context):
        return step

    def can_load(self, step, context) -> bool:
        return True

    def load_step(self, step, context):
        from stepline.saving.procedure import load_child
        sibling = CX(context.root, parents=(ChildPlaceholder("p"), ChildPlaceholder("a")))
        load_child("../m", sibling)
        return step


def test_a_child_name_no_manifest_lists_is_still_one_folder_inside_the_dump(tmp_path):
    p = Pipeline([("m", MultiplyByN(2).set_savers([LoadsAChildByAPathOutOfItsFolder()])), ("a", AddN(1))])
    p.set_name("p").save(CX(tmp_path), full_dump=True)
    with pytest.raises(StepLoadError, match=r"p/a: '../m' is not the name of a child folder inside the dump"):
        CX(tmp_path).load("p")


@pytest.mark.parametrize("root", [".", "", "rel", "./rel/"])
def test_a_pipeline_loads_from_a_relative_root(tmp_path, monkeypatch, root):
    monkeypatch.chdir(tmp_path)
    saved(Path(root))
    loaded = CX(root).load("p")
    assert list(loaded.keys()) == ["m", "a"] and np.array_equal(loaded.transform(np.arange(3.0)), np.arange(3.0) * 2 + 1)
    assert np.array_equal(CX(root).load("p/m").transform(np.ones(2)), np.full(2, 2.0))
