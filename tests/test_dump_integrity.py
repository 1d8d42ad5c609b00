"""A dump as a Merkle tree (format v2): BLAKE3 file digests, child manifests' digests, the root digest."""
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import blake3
import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from stepline import CX, Pipeline
from stepline.saving import CorruptFileError, MixedDumpError, StepLoadError
from stepline.saving.manifest import FORMAT_VERSION, MANIFEST_NAME, encode_manifest, root_digest
from stepline.steps.numpy import AddN, MultiplyByN
from stepline.steps.sklearn import SKLearnWrapper

sys.path.insert(0, str(Path(__file__).parent))
from trust_tamper import pickles_to_files  # noqa: E402

PY = sys.executable


def scaled_pipeline(data):
    p = Pipeline([("scaler", SKLearnWrapper(StandardScaler())), ("inner", Pipeline([("m", MultiplyByN(2))])),
                  ("a", AddN(1))], name="p")
    return p.fit(np.asarray(data, dtype=float).reshape(-1, 1))


def manifest(folder):
    return json.loads((folder / MANIFEST_NAME).read_text())


def test_manifests_list_children_with_the_blake3_of_their_manifest(tmp_path):
    scaled_pipeline([1, 2, 3]).save(CX(tmp_path), full_dump=True)
    root = tmp_path / "p"
    top = manifest(root)
    assert top["format_version"] == FORMAT_VERSION == 3
    assert [c["name"] for c in top["children"]] == ["scaler", "inner", "a"]
    for child in top["children"]:
        assert child["manifest"] == blake3.blake3((root / child["name"] / MANIFEST_NAME).read_bytes()).hexdigest()
    inner = manifest(root / "inner")
    assert inner["children"][0]["manifest"] == root_digest(root / "inner" / "m")
    for name, record in manifest(root / "scaler")["files"].items():
        assert record["blake3"] == blake3.blake3((root / "scaler" / name).read_bytes()).hexdigest()
        assert "sha256" not in record


def test_root_digest_is_the_blake3_of_the_root_manifest_and_changes_with_any_leaf(tmp_path):
    scaled_pipeline([1, 2, 3]).save(CX(tmp_path / "one"), full_dump=True)
    scaled_pipeline([1, 2, 30]).save(CX(tmp_path / "two"), full_dump=True)
    one, two = tmp_path / "one" / "p", tmp_path / "two" / "p"
    assert root_digest(one) == blake3.blake3((one / MANIFEST_NAME).read_bytes()).hexdigest()
    assert len(root_digest(one)) == 64
    assert root_digest(one) != root_digest(two)  # only the scaler's fitted state differs


def test_child_folder_copied_in_from_another_save_is_a_clear_error(tmp_path):
    """The wrong result: copying p/scaler from an older save of the same pipeline loaded silently."""
    scaled_pipeline([1, 2, 3]).save(CX(tmp_path / "old"), full_dump=True)
    scaled_pipeline([10, 20, 30]).save(CX(tmp_path / "new"), full_dump=True)
    shutil.rmtree(tmp_path / "new" / "p" / "scaler")
    shutil.copytree(tmp_path / "old" / "p" / "scaler", tmp_path / "new" / "p" / "scaler")
    with pytest.raises(MixedDumpError, match=r"p/scaler.*another save"):
        CX(tmp_path / "new").load("p")
    with pytest.raises(MixedDumpError, match="scaler"):
        CX(tmp_path / "new").load("p/scaler")


def test_grandchild_from_another_save_is_caught_through_the_chain(tmp_path):
    old = Pipeline([("inner", Pipeline([("m", MultiplyByN(2))]))], name="p")
    new = Pipeline([("inner", Pipeline([("m", MultiplyByN(3))]))], name="p")
    old.save(CX(tmp_path / "old"), full_dump=True)
    new.save(CX(tmp_path / "new"), full_dump=True)
    shutil.rmtree(tmp_path / "new" / "p" / "inner" / "m")
    shutil.copytree(tmp_path / "old" / "p" / "inner" / "m", tmp_path / "new" / "p" / "inner" / "m")
    with pytest.raises(MixedDumpError, match="inner/m"):
        CX(tmp_path / "new").load("p")
    with pytest.raises(MixedDumpError):
        CX(tmp_path / "new").load("p/inner/m")


def _downgrade_to_v1(folder):
    """Rewrite a dump as v1 wrote it: pickles in files, SHA-256 records, children as plain names."""
    pickles_to_files(folder)
    data = manifest(folder)
    for name, record in data["files"].items():
        record.pop("blake3")
        record["sha256"] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    data["format_version"] = 1
    data["children"] = [c["name"] for c in data["children"]]
    (folder / MANIFEST_NAME).write_text(json.dumps(data))
    (folder / ".stepline-verified.json").unlink(missing_ok=True)
    for child in data["children"]:
        _downgrade_to_v1(folder / child)


def test_v1_dumps_with_sha256_still_load_and_are_verified(tmp_path):
    scaled_pipeline([1, 2, 3]).save(CX(tmp_path), full_dump=True)
    _downgrade_to_v1(tmp_path / "p")
    x = np.array([[1.0], [5.0]])
    expected = scaled_pipeline([1, 2, 3]).transform(x)
    np.testing.assert_allclose(CX(tmp_path).load("p").transform(x), expected)
    np.testing.assert_allclose(CX(tmp_path).load("p", verify="full").transform(x), expected)
    pkl = tmp_path / "p" / "scaler" / "step.pkl"
    raw = bytearray(pkl.read_bytes())
    raw[-3] ^= 1
    pkl.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match="SHA256 mismatch"):
        CX(tmp_path).load("p")


def test_inspect_prints_the_root_digest(tmp_path):
    scaled_pipeline([1, 2, 3]).save(CX(tmp_path), full_dump=True)
    out = subprocess.run([PY, "-m", "stepline", "inspect", str(tmp_path / "p")], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert f"root digest: {root_digest(tmp_path / 'p')}" in out


def test_inspect_flags_a_child_from_another_save(tmp_path):
    scaled_pipeline([1, 2, 3]).save(CX(tmp_path / "old"), full_dump=True)
    scaled_pipeline([10, 20, 30]).save(CX(tmp_path / "new"), full_dump=True)
    shutil.rmtree(tmp_path / "new" / "p" / "scaler")
    shutil.copytree(tmp_path / "old" / "p" / "scaler", tmp_path / "new" / "p" / "scaler")
    result = subprocess.run([PY, "-m", "stepline", "inspect", str(tmp_path / "new" / "p")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "p/scaler" in result.stderr and "another save" in result.stderr


def test_a_manifest_child_outside_the_dump_is_refused(tmp_path):
    Pipeline([("a", AddN(1))], name="p").save(CX(tmp_path), full_dump=True)
    (tmp_path / "x").mkdir()
    shutil.copy(tmp_path / "p" / "a" / MANIFEST_NAME, tmp_path / "x" / MANIFEST_NAME)
    data = manifest(tmp_path / "p")
    data["children"] = [{"name": "../x", "manifest": root_digest(tmp_path / "x")}]
    (tmp_path / "p" / MANIFEST_NAME).write_bytes(encode_manifest(data))  # a forger's: its own digest matches
    with pytest.raises(StepLoadError, match=r"invalid child name '\.\./x'"):
        CX(tmp_path).load("p")
    result = subprocess.run([PY, "-m", "stepline", "inspect", str(tmp_path / "p")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "invalid child name" in result.stdout + result.stderr
