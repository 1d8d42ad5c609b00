"""Small pickles inside their step's manifest (format v3): one file per tiny step, not two.

A tiny step's stripped pickle (under ``INLINE_MAX_BYTES``) is stored base64 in its
manifest's ``inline`` field with its size and BLAKE3, so its folder holds the manifest
alone; bigger pickles, buffer files and custom savers' files stay files. Dumps of the
previous layout (``step.pkl`` files, format v2) still load: ``tests/fixtures/v2dump`` was
written by stepline before this change.
"""
import base64
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import blake3
import numpy as np
import pytest

from stepline import CX, Pipeline
from stepline.saving import (CorruptFileError, ManifestError, MixedDumpError, NotAStepError, StepLoadError,
                             VersionMismatchWarning)
from stepline.saving.inline import INLINE_MAX_BYTES
from stepline.saving.inspect import describe, describe_tree
from stepline.saving.manifest import FORMAT_VERSION, MANIFEST_NAME, encode_manifest
from stepline.steps.numpy import AddN, MultiplyByN

sys.path.insert(0, str(Path(__file__).parent))
from trust_tamper import edit_manifest  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "v2dump"


def tiny(n: int, name="tiny") -> Pipeline:
    p = Pipeline([(f"m{i}", MultiplyByN(2)) for i in range(n)], name=name)
    for step in p.values():
        step.set_hyperparams({"multiply_by": 3})
    return p


def manifest(folder) -> dict:
    return json.loads((Path(folder) / MANIFEST_NAME).read_bytes())


def test_a_tiny_steps_folder_holds_only_its_manifest(tmp_path):
    """The wrong result: each tiny step's folder held stepline.json and step.pkl (two files)."""
    tiny(3).save(CX(tmp_path), full_dump=True)
    dump = tmp_path / "tiny"
    for name in ("m0", "m1", "m2"):
        assert os.listdir(dump / name) == [MANIFEST_NAME]
    assert sorted(os.listdir(dump)) == sorted([MANIFEST_NAME, "stepline.sig", "m0", "m1", "m2"])
    loaded = CX(tmp_path).load("tiny")
    assert [s.hyperparams["multiply_by"] for s in loaded.values()] == [3, 3, 3]
    assert loaded.transform(np.array([1.0])).tolist() == [27.0]


def test_the_inline_payload_is_the_pickle_with_its_size_and_blake3(tmp_path):
    tiny(1).save(CX(tmp_path), full_dump=True)
    data = manifest(tmp_path / "tiny" / "m0")
    assert data["format_version"] == FORMAT_VERSION == 3
    assert "step.pkl" not in data["files"]
    record = data["inline"]["step.pkl"]
    raw = base64.b64decode(record["base64"], validate=True)
    assert record["size"] == len(raw) < INLINE_MAX_BYTES
    assert record["blake3"] == blake3.blake3(raw).hexdigest()
    assert b"MultiplyByN" in raw


class Holder(MultiplyByN):
    """A tiny step that can be made to hold a payload of any size."""


def test_a_pickle_of_the_threshold_or_more_stays_a_file(tmp_path):
    big = Holder(2).set_name("big")
    big.blob_ = b"x" * INLINE_MAX_BYTES  # pickled in band: the stream is over the threshold
    Pipeline([big], name="p").save(CX(tmp_path), full_dump=True)
    folder = tmp_path / "p" / "big"
    assert sorted(os.listdir(folder)) == sorted([MANIFEST_NAME, "step.pkl"])
    assert "inline" not in manifest(folder) or not manifest(folder)["inline"]
    assert manifest(folder)["files"]["step.pkl"]["size"] > INLINE_MAX_BYTES
    assert CX(tmp_path).load("p")["big"].blob_ == big.blob_


def test_a_small_pickle_beside_a_big_array_is_inline_and_the_array_a_mapped_file(tmp_path):
    step = Holder(2).set_name("arr")
    step.weights_ = np.arange(20_000, dtype=np.float64)  # 160 KB: out of band, a buffer file
    Pipeline([step], name="p").save(CX(tmp_path), full_dump=True)
    folder = tmp_path / "p" / "arr"
    assert sorted(os.listdir(folder)) == sorted([MANIFEST_NAME, "buffer-000.bin"])
    assert "step.pkl" in manifest(folder)["inline"]
    for mode in (None, "r"):
        loaded = CX(tmp_path).load("p", mmap_mode=mode)["arr"]
        assert np.array_equal(loaded.weights_, step.weights_)
    mapped = CX(tmp_path).load("p", mmap_mode="r")["arr"].weights_
    base = mapped.base
    while base is not None and not isinstance(base, np.memmap):
        base = getattr(base, "base", None)
    assert isinstance(base, np.memmap) and not mapped.flags.writeable


def _copy_fixture(tmp_path) -> Path:
    shutil.copytree(FIXTURE, tmp_path / "v2dump")
    return tmp_path


def test_a_dump_in_the_v2_layout_written_by_the_previous_stepline_still_loads(tmp_path):
    root = _copy_fixture(tmp_path)
    assert manifest(root / "v2dump")["format_version"] == 2
    assert (root / "v2dump" / "m" / "step.pkl").is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VersionMismatchWarning)  # recorded versions may differ from the running ones
        loaded = CX(root).load("v2dump")
        assert loaded["m"].hyperparams["multiply_by"] == 5
        assert loaded.transform(np.array([1.0])).tolist() == [6.0]
        assert CX(root).load("v2dump/inner/a").transform(np.array([1.0])).tolist() == [2.0]
        assert describe(root / "v2dump")["format_version"] == 2


def test_a_changes_only_save_over_a_v2_dump_rewrites_the_changed_step_inline(tmp_path):
    root = _copy_fixture(tmp_path)
    kept = (root / "v2dump" / "inner" / "a" / "step.pkl").stat()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VersionMismatchWarning)
        loaded = CX(root).load("v2dump")
        loaded["m"].set_hyperparams({"multiply_by": 7})
        loaded.save(CX(root))
        assert os.listdir(root / "v2dump" / "m") == [MANIFEST_NAME]  # its step.pkl went with the old manifest
        again = CX(root).load("v2dump")
    assert again["m"].hyperparams["multiply_by"] == 7
    assert again.transform(np.array([1.0])).tolist() == [8.0]
    assert (root / "v2dump" / "inner" / "a" / "step.pkl").stat().st_ino == kept.st_ino  # not touched


def _payload_span(raw: bytes) -> tuple[int, int]:
    start = raw.index(b'"base64": "') + len(b'"base64": "')
    return start, raw.index(b'"', start)


class _Unpickled:
    """Classes the unpickler looked up, from the ``pickle.find_class`` audit event."""

    def __init__(self):
        self.names = []
        sys.addaudithook(self._hook)
        self.active = False

    def _hook(self, event, args):
        if self.active and event == "pickle.find_class":
            self.names.append(f"{args[0]}.{args[1]}")


_UNPICKLED = _Unpickled()


def _flip_each_payload_bit(path: Path, load, expected) -> None:
    original = path.read_bytes()
    start, end = _payload_span(original)
    assert end - start > 300
    try:
        for index in range(start * 8, end * 8):
            flipped = bytearray(original)
            flipped[index // 8] ^= 1 << (index % 8)
            path.write_bytes(bytes(flipped))
            _UNPICKLED.names.clear()
            _UNPICKLED.active = True
            try:
                load()
            except expected as error:
                assert str(path.parent) in str(error)
            else:
                pytest.fail(f"{path}: bit {index} of the inline payload flipped, loaded without an error")
            finally:
                _UNPICKLED.active = False
            assert not [n for n in _UNPICKLED.names if n.endswith("MultiplyByN")], "the flipped payload was unpickled"
    finally:
        path.write_bytes(original)


def test_every_single_bit_flip_of_a_childs_inline_payload_is_caught_before_unpickling(tmp_path):
    tiny(1).save(CX(tmp_path), full_dump=True)
    child = tmp_path / "tiny" / "m0" / MANIFEST_NAME
    _flip_each_payload_bit(child, lambda: CX(tmp_path).load("tiny", verify=False), MixedDumpError)
    assert CX(tmp_path).load("tiny")["m0"].hyperparams["multiply_by"] == 3


def test_every_single_bit_flip_of_the_roots_inline_payload_is_caught_before_unpickling(tmp_path):
    step = MultiplyByN(2).set_name("solo")
    step.set_hyperparams({"multiply_by": 4})
    step.save(CX(tmp_path), full_dump=True)
    _flip_each_payload_bit(tmp_path / "solo" / MANIFEST_NAME, lambda: CX(tmp_path).load("solo"), ManifestError)
    assert CX(tmp_path).load("solo").hyperparams["multiply_by"] == 4


def _rewrite_payload(record: dict, raw: bytes) -> None:
    record["base64"] = base64.b64encode(raw).decode("ascii")


def test_a_payload_whose_digest_differs_from_its_record_is_never_unpickled(tmp_path):
    """The manifest's digests recomputed (up to the root), the payload's own record not."""
    p = tiny(1)
    p.append(("m1", Holder(2)))
    p.save(CX(tmp_path), full_dump=True)
    root, folder = tmp_path / "tiny", tmp_path / "tiny" / "m1"
    raw = bytearray(base64.b64decode(manifest(folder)["inline"]["step.pkl"]["base64"]))
    raw[len(raw) // 2] ^= 0x01  # same size: only the payload's digest can tell
    edit_manifest(folder, lambda m: _rewrite_payload(m["inline"]["step.pkl"], bytes(raw)), root)
    for trusted in (None, True):
        _UNPICKLED.names.clear()
        _UNPICKLED.active = True
        try:
            with pytest.raises(CorruptFileError, match=r"m1/step\.pkl \(inline in stepline\.json\).*BLAKE3 mismatch"):
                CX(tmp_path).load("tiny", trusted=trusted)
        finally:
            _UNPICKLED.active = False
        assert not [n for n in _UNPICKLED.names if n.endswith("Holder")]
    with pytest.raises(CorruptFileError, match=r"m1/step\.pkl"):
        CX(tmp_path).load("tiny/m1", trusted=True)


@pytest.mark.parametrize("change, error, message", [
    (lambda r: r.update(size=r["size"] + 1), CorruptFileError, r"size"),
    (lambda r: r.update(base64=r["base64"][:-4] + "!!!!"), ManifestError, r"not base64"),
    (lambda r: r.update(base64=7), ManifestError, r"'inline'"),
    (lambda r: r.pop("blake3"), ManifestError, r"'inline'"),
])
def test_a_malformed_inline_record_is_one_clear_error(tmp_path, change, error, message):
    tiny(1).save(CX(tmp_path), full_dump=True)
    root, folder = tmp_path / "tiny", tmp_path / "tiny" / "m0"
    edit_manifest(folder, lambda m: change(m["inline"]["step.pkl"]), root)
    for trusted in (None, True):
        with pytest.raises(error, match=message) as caught:
            CX(tmp_path).load("tiny", trusted=trusted)
        assert str(folder) in str(caught.value)
    with pytest.raises(StepLoadError):
        describe(root) if error is ManifestError else CX(tmp_path).load("tiny/m0")


def test_a_step_folder_with_both_a_pickle_file_and_an_inline_pickle_is_refused(tmp_path):
    tiny(1).save(CX(tmp_path), full_dump=True)
    root, folder = tmp_path / "tiny", tmp_path / "tiny" / "m0"
    (folder / "step.pkl").write_bytes(b"x")
    edit_manifest(folder, lambda m: m["files"].update({"step.pkl": {"size": 1, "blake3": "0" * 64}}), root)
    with pytest.raises(ManifestError, match=r"step\.pkl.*both"):
        CX(tmp_path).load("tiny", trusted=True)
    with pytest.raises(ManifestError, match=r"step\.pkl.*both"):
        describe(root)


def test_an_inline_pickle_of_a_plain_value_is_not_a_step_for_load_and_inspect(tmp_path):
    tiny(1).save(CX(tmp_path), full_dump=True)
    root, folder = tmp_path / "tiny", tmp_path / "tiny" / "m0"

    def plain(m):
        raw = b"\x80\x05K*."  # pickle of 42
        m["inline"]["step.pkl"].update(size=len(raw), blake3=blake3.blake3(raw).hexdigest())
        _rewrite_payload(m["inline"]["step.pkl"], raw)
    edit_manifest(folder, plain, root)
    with pytest.raises(NotAStepError, match=r"m0/step\.pkl \(inline in stepline\.json\)"):
        CX(tmp_path).load("tiny", trusted=True)
    with pytest.raises(CorruptFileError, match=r"m0/step\.pkl \(inline in stepline\.json\): holds a plain value"):
        describe(root)


def test_inspect_shows_inline_pickles_without_unpickling_them(tmp_path):
    p = Pipeline([("m", MultiplyByN(2)), ("a", AddN(1))], name="p")
    p["m"].set_hyperparams({"multiply_by": 4})
    p.save(CX(tmp_path), full_dump=True)
    text = "\n".join(describe_tree(tmp_path / "p"))
    assert "stepline-dump v3" in text
    size = manifest(tmp_path / "p" / "m")["inline"]["step.pkl"]["size"]
    assert f"m: stepline.steps.numpy.MultiplyByN  [{size} B inline]" in text
    node = describe(tmp_path / "p")["step"]["children"][0]
    assert node["inline"]["step.pkl"]["size"] == size and "base64" not in node["inline"]["step.pkl"]


def test_a_manifest_of_a_newer_format_names_the_version(tmp_path):
    tiny(1).save(CX(tmp_path), full_dump=True)
    path = tmp_path / "tiny" / MANIFEST_NAME
    data = json.loads(path.read_bytes())
    data["format_version"] = FORMAT_VERSION + 1
    path.write_bytes(encode_manifest(data))
    with pytest.raises(ManifestError, match=r"format version 4 is newer"):
        CX(tmp_path).load("tiny")
