"""Names and paths: checked when saved; load and inspect stay inside the root; no links."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stepline import CX, Pipeline
from stepline.saving import SaveError, StepLoadError, atomic
from stepline.steps.numpy import AddN, MultiplyByN

sys.path.insert(0, str(Path(__file__).parent))
from trust_tamper import pickle_to_file  # noqa: E402

PY = sys.executable


def pipeline():
    return Pipeline([("m", MultiplyByN(2)), ("a", AddN(1))]).set_name("p")


def tree(path):
    atomic.wait_for_cleanup()  # the replaced dump is deleted in the background
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("name", ["../..", "../escape", "..", ".", "", ".hidden", "a/b", "nul\0byte",
                                  "x" * 300, "stepline.json", "step.pkl", "buffer-000.bin", "stepline.sig"])
def test_a_bad_child_name_set_by_assignment_is_refused_before_anything_is_written(tmp_path, name):
    root = tmp_path / "root"
    (root / "other").mkdir(parents=True)
    (root / "other" / "keep.txt").write_text("someone else's")
    p = pipeline()
    p.save(CX(root), full_dump=True)
    before = tree(tmp_path)
    p["a"].name = name  # bypasses set_name
    with pytest.raises(SaveError, match="cannot save step"):
        p.save(CX(root), full_dump=True)
    assert tree(tmp_path) == before
    np.testing.assert_array_equal(CX(root).load("p").transform(np.ones(2)), [3.0, 3.0])


@pytest.mark.parametrize("name", ["../..", "../escape", "..", "x" * 300, "a/b"])
def test_a_bad_root_name_is_refused_and_writes_nothing_outside(tmp_path, name):
    root = tmp_path / "a" / "b"
    root.mkdir(parents=True)
    (tmp_path / "a" / "mine.txt").write_text("keep")
    p = pipeline()
    p.name = name
    before = tree(tmp_path)
    with pytest.raises(SaveError, match="cannot save step"):
        p.save(CX(root), full_dump=True)
    assert tree(tmp_path) == before


def test_a_long_name_is_a_save_error_not_a_raw_os_error(tmp_path):
    p = pipeline()
    p["m"].name = "m" * 300
    with pytest.raises(SaveError, match="bytes long"):
        p.save(CX(tmp_path), full_dump=True)


def test_a_sibling_clash_is_refused_and_both_steps_are_kept(tmp_path):
    p = pipeline()
    p.save(CX(tmp_path), full_dump=True)
    p["a"].name = "m"  # two children named "m"
    with pytest.raises(SaveError, match="two children of step 'p' are named 'm'"):
        p.save(CX(tmp_path), full_dump=True)
    loaded = CX(tmp_path).load("p")
    assert list(loaded.keys()) == ["m", "a"]


@pytest.mark.parametrize("path", ["../outside/p", "p/../../outside/p", "/abs/p", ".p.old-1234"])
def test_load_stays_inside_the_root(tmp_path, path):
    pipeline().save(CX(tmp_path / "outside"), full_dump=True)
    root = tmp_path / "root"
    root.mkdir()
    if path.startswith("/"):
        path = str(tmp_path / "outside" / "p")
    with pytest.raises(StepLoadError, match="not the path of a step inside"):
        CX(root).load(path)


def test_a_symlink_to_a_dump_outside_the_root_is_refused(tmp_path):
    pipeline().save(CX(tmp_path / "outside"), full_dump=True)
    (tmp_path / "root").mkdir()
    os.symlink(tmp_path / "outside" / "p", tmp_path / "root" / "p")
    with pytest.raises(StepLoadError, match="symbolic link"):
        CX(tmp_path / "root").load("p")


def test_a_symlinked_child_folder_or_file_inside_a_dump_is_refused(tmp_path):
    pipeline().save(CX(tmp_path / "a"), full_dump=True)
    pipeline().save(CX(tmp_path / "b"), full_dump=True)
    child = tmp_path / "b" / "p" / "m"
    os.rename(child, tmp_path / "b" / "m-real")
    os.symlink(tmp_path / "b" / "m-real", child)
    with pytest.raises(StepLoadError, match="symbolic link"):
        CX(tmp_path / "b").load("p")
    pkl = pickle_to_file(tmp_path / "a" / "p" / "a", tmp_path / "a" / "p")  # (a tiny step's pickle is inline)
    os.rename(pkl, tmp_path / "a" / "real.pkl")
    os.symlink(tmp_path / "a" / "real.pkl", pkl)
    with pytest.raises(StepLoadError, match="symbolic link"):
        CX(tmp_path / "a").load("p")


def test_inspect_refuses_a_symlinked_child(tmp_path):
    pipeline().save(CX(tmp_path), full_dump=True)
    child = tmp_path / "p" / "m"
    os.rename(child, tmp_path / "m-real")
    os.symlink(tmp_path / "m-real", child)
    result = subprocess.run([PY, "-m", "stepline", "inspect", str(tmp_path / "p")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "p/m" in result.stderr and "symbolic link" in result.stderr
