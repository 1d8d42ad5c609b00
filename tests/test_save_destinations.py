"""Changes-only saves decide per destination; a save never deletes what it did not write."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from stepline import CX, Pipeline
from stepline.saving import SaveError, atomic
from stepline.saving.manifest import MANIFEST_NAME, root_digest
from stepline.steps.numpy import AddN, MultiplyByN

PY = sys.executable
X = np.array([1.0, 2.0])


def pipeline(m, a):
    return Pipeline([("m", MultiplyByN(m)), ("a", AddN(a))]).set_name("p")


def test_a_new_pipeline_saved_over_an_old_dump_is_written(tmp_path):
    pipeline(2, 1).save(CX(tmp_path))
    pipeline(5, 7).save(CX(tmp_path))
    loaded = CX(tmp_path).load("p")
    assert loaded["m"].hyperparams["multiply_by"] == 5 and loaded["a"].hyperparams["add"] == 7
    np.testing.assert_array_equal(loaded.transform(X), X * 5 + 7)


def test_an_unchanged_pipeline_saved_to_a_second_root_is_written_there(tmp_path):
    p = pipeline(3, 4)
    p.save(CX(tmp_path / "one"))
    p.save(CX(tmp_path / "two"))
    np.testing.assert_array_equal(CX(tmp_path / "two").load("p").transform(X), X * 3 + 4)


def test_a_deleted_child_folder_is_restored_by_the_next_changes_only_save(tmp_path):
    p = pipeline(3, 4)
    p.save(CX(tmp_path))
    shutil.rmtree(tmp_path / "p" / "a")
    p.save(CX(tmp_path))
    np.testing.assert_array_equal(CX(tmp_path).load("p").transform(X), X * 3 + 4)


def test_an_unchanged_save_to_the_same_folder_writes_nothing(tmp_path):
    p = pipeline(3, 4)
    p.save(CX(tmp_path))
    before = root_digest(tmp_path / "p"), os.stat(tmp_path / "p" / MANIFEST_NAME).st_ino
    p.save(CX(tmp_path))
    assert (root_digest(tmp_path / "p"), os.stat(tmp_path / "p" / MANIFEST_NAME).st_ino) == before


def test_a_loaded_pipeline_saved_back_where_it_came_from_writes_nothing(tmp_path):
    pipeline(3, 4).save(CX(tmp_path))
    loaded = CX(tmp_path).load("p")
    inode = os.stat(tmp_path / "p" / MANIFEST_NAME).st_ino
    loaded.save(CX(tmp_path))
    assert os.stat(tmp_path / "p" / MANIFEST_NAME).st_ino == inode
    loaded.save(CX(tmp_path / "elsewhere"))  # another destination: written
    np.testing.assert_array_equal(CX(tmp_path / "elsewhere").load("p").transform(X), X * 3 + 4)


def test_only_the_changed_step_is_rewritten(tmp_path):
    p = pipeline(3, 4)
    p.save(CX(tmp_path))
    m_manifest = os.stat(tmp_path / "p" / "m" / MANIFEST_NAME).st_ino
    p["a"].set_hyperparams({"add": 10})
    p.save(CX(tmp_path))
    assert os.stat(tmp_path / "p" / "m" / MANIFEST_NAME).st_ino == m_manifest  # linked, not rewritten
    np.testing.assert_array_equal(CX(tmp_path).load("p").transform(X), X * 3 + 10)


def test_a_never_changed_pipeline_with_no_dump_there_writes_nothing(tmp_path):
    pipeline(3, 4)["m"].save(CX(tmp_path))
    assert not (tmp_path / "m").exists()


def test_a_dump_rewritten_by_another_process_is_not_mixed_with_ours(tmp_path):
    """A saves full, B saves full, A changes step b and saves changes-only: A's a and b, not B's a."""
    script = tmp_path / "b.py"
    script.write_text(textwrap.dedent(f"""
        from stepline import CX, Pipeline
        from stepline.steps.numpy import AddN, MultiplyByN
        Pipeline([("a", MultiplyByN(100)), ("b", AddN(100))]).set_name("p").save(CX({str(tmp_path)!r}), full_dump=True)
    """))
    ours = Pipeline([("a", MultiplyByN(2)), ("b", AddN(1))]).set_name("p")
    ours.save(CX(tmp_path), full_dump=True)
    subprocess.run([PY, str(script)], check=True, timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    ours["b"].set_hyperparams({"add": 3})
    ours.save(CX(tmp_path))
    loaded = CX(tmp_path).load("p")
    assert loaded["a"].hyperparams["multiply_by"] == 2 and loaded["b"].hyperparams["add"] == 3


def test_saving_over_a_folder_that_is_not_a_dump_is_refused_and_keeps_it(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "thesis.tex").write_text("years of work")
    with pytest.raises(SaveError, match=r"p: is a folder that is not a stepline dump .*thesis\.tex"):
        pipeline(2, 1).save(CX(tmp_path), full_dump=True)
    assert (tmp_path / "p" / "thesis.tex").read_text() == "years of work"
    atomic.wait_for_cleanup()
    assert sorted(os.listdir(tmp_path)) == [".p.lock", ".p.turn", "p"]


def test_saving_over_a_regular_file_is_refused_and_keeps_it(tmp_path):
    (tmp_path / "p").write_text("my notes")
    with pytest.raises(SaveError, match=r"p: is a file, not a stepline dump"):
        pipeline(2, 1).save(CX(tmp_path), full_dump=True)
    assert (tmp_path / "p").read_text() == "my notes"


def test_saving_over_an_empty_folder_is_fine(tmp_path):
    (tmp_path / "p").mkdir()
    pipeline(2, 1).save(CX(tmp_path), full_dump=True)
    assert CX(tmp_path).load("p")["m"].hyperparams["multiply_by"] == 2


def test_the_root_may_hold_a_signature_file_that_no_check_refuses(tmp_path):
    pipeline(2, 1).save(CX(tmp_path), full_dump=True)
    (tmp_path / "p" / "stepline.sig").write_text("signature")
    CX(tmp_path).load("p")
    pipeline(5, 1).save(CX(tmp_path))  # a dump with a signature is still ours to replace
    assert "stepline.sig" not in json.loads((tmp_path / "p" / MANIFEST_NAME).read_text())["files"]
