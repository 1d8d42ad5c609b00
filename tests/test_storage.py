"""Tests of the on-disk storage layer for step dumps (stepline.saving: objectfile, integrity,
manifest, atomic, errors). Real files in tmp_path, real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

from stepline.saving import integrity
from stepline.saving.atomic import atomic_folder, clean_leftovers, resolve_dump_folder, wait_for_cleanup
from stepline.saving.errors import (CorruptFileError, IncompatibleDumpError, InterruptedSaveWarning,
                                    ManifestError, MissingFileError, NotADumpError, StepLoadError,
                                    UnpicklingError, VersionMismatchWarning)
from stepline.saving.integrity import STAT_CACHE_NAME, cached_records
from stepline.saving.manifest import (FORMAT, FORMAT_VERSION, MANIFEST_NAME, read_manifest,
                                      runtime_versions, version_differences,
                                      warn_version_differences, write_manifest)
from stepline.saving.objectfile import BUFFER_MIN_BYTES, STREAM_NAME, read_object, write_object

BIG = 256 * 1024  # elements: 1 MiB of float32


# ---------------------------------------------------------------- helpers

def sample_object():
    rng = np.random.default_rng(42)
    c = rng.random((512, 512), dtype=np.float32)
    return {
        "c": c,
        "f": np.asfortranarray(rng.random((300, 200))),
        "strided": rng.random((600, 400))[::3, 1::2],
        "transposed": c.T,
        "small": np.arange(10, dtype=np.int16),
        "ints": rng.integers(0, 2**40, size=BIG, dtype=np.int64).reshape(-1, 16),
        "record": np.zeros(10_000, dtype=[("a", "<i4"), ("b", "<f8", (2,))]),
        "objects": np.array([{"k": 1}, "two", None], dtype=object),
        "nested": [{"x": (1, 2.5, "s")}, {3, 4}, b"bytes", None],
    }


def assert_same(loaded, original):
    assert loaded.keys() == original.keys()
    for key, value in original.items():
        got = loaded[key]
        if isinstance(value, np.ndarray):
            assert got.dtype == value.dtype and got.shape == value.shape, key
            assert got.flags.f_contiguous == value.flags.f_contiguous or not (
                value.flags.c_contiguous or value.flags.f_contiguous), key
            assert np.array_equal(got, value) if value.dtype != object else list(got) == list(value)
        else:
            assert got == value, key


def save_dump(obj, folder):
    files = write_object(obj, folder)
    write_manifest(folder, {"name": "d", "class": "builtins.dict", "files": files, "versions": runtime_versions()})
    return files


def load_dump(folder, **kwargs):
    manifest = read_manifest(folder)
    return read_object(folder, manifest["files"], **kwargs)


def flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def memmap_backed(arr) -> bool:
    base = arr
    while base is not None:
        if isinstance(base, np.memmap):
            return True
        base = getattr(base, "base", None)
    return False


@pytest.fixture(autouse=True, scope="module")
def _a_signing_key():
    """This user has a signing key, as anyone who saved a dump has: the stat cache's MAC is
    derived from it, and no cache vouches without one. (These tests write objects without
    saving a dump, which is what creates the key: run alone, without it, they failed.)"""
    from stepline.trust.keys import signing_key
    signing_key()


@pytest.fixture
def hash_calls(monkeypatch):
    """Spy on the file hash function: the list of paths hashed."""
    calls = []
    real = integrity.file_digest
    monkeypatch.setattr(integrity, "file_digest", lambda p, *a: calls.append(p) or real(p, *a))
    return calls


def run_python(code, cwd, check=True):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                          capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


# ---------------------------------------------------------------- round trip

def test_round_trip_preserves_values_dtypes_shapes_and_order(tmp_path):
    obj = sample_object()
    files = save_dump(obj, tmp_path / "d")
    assert_same(load_dump(tmp_path / "d"), obj)
    # the six arrays of >= 64 KiB went out of band; the small ones stayed in the stream
    buffers = sorted(n for n in files if n.startswith("buffer-"))
    assert buffers == [f"buffer-{i:03d}.bin" for i in range(6)]
    assert files[STREAM_NAME]["size"] < 64 * 1024
    assert all(set(r) == {"size", "blake3"} for r in files.values())
    assert STAT_CACHE_NAME not in files


def test_loaded_arrays_are_writable_and_independent(tmp_path):
    obj = {"a": np.ones(BIG, dtype=np.float32)}
    save_dump(obj, tmp_path / "d")
    loaded = load_dump(tmp_path / "d")
    loaded["a"][0] = 5
    assert load_dump(tmp_path / "d")["a"][0] == 1


def test_memmap_inside_the_object_goes_out_of_band_and_loads_as_an_array(tmp_path):
    mapped = np.memmap(tmp_path / "m.bin", dtype=np.float32, mode="w+", shape=(BIG,))
    mapped[:] = 3
    files = write_object({"m": mapped}, tmp_path / "d")
    assert files["buffer-000.bin"]["size"] == mapped.nbytes and files[STREAM_NAME]["size"] < 1000
    loaded = read_object(tmp_path / "d", files)["m"]
    assert type(loaded) is np.ndarray and loaded.shape == (BIG,) and (loaded == 3).all()


def test_out_of_band_threshold_is_64_kib(tmp_path):
    at = np.zeros(BUFFER_MIN_BYTES, dtype=np.uint8)
    below = np.zeros(BUFFER_MIN_BYTES - 1, dtype=np.uint8)
    assert "buffer-000.bin" in write_object(at, tmp_path / "at")
    files = write_object(below, tmp_path / "below")
    assert list(files) == [STREAM_NAME]
    assert np.array_equal(read_object(tmp_path / "below", files), below)


def test_file_records_match_the_files(tmp_path):
    import blake3
    files = write_object(sample_object(), tmp_path)
    for name, record in files.items():
        data = (tmp_path / name).read_bytes()
        assert record == {"size": len(data), "blake3": blake3.blake3(data).hexdigest()}


def test_mmap_load_gives_read_only_memmap_backed_arrays(tmp_path):
    obj = sample_object()
    save_dump(obj, tmp_path / "d")
    loaded = load_dump(tmp_path / "d", mmap_mode="r")
    assert_same(loaded, obj)
    for key in ("c", "f", "strided", "ints", "record"):
        assert memmap_backed(loaded[key]), key
        assert not loaded[key].flags.writeable, key
    assert not memmap_backed(loaded["small"])
    with pytest.raises(ValueError):
        loaded["c"][0, 0] = 1


def test_mmap_copy_on_write_leaves_the_file_alone(tmp_path):
    obj = {"a": np.ones(BIG, dtype=np.float32)}
    save_dump(obj, tmp_path / "d")
    loaded = load_dump(tmp_path / "d", mmap_mode="c")
    assert memmap_backed(loaded["a"])
    loaded["a"][:] = 7
    assert load_dump(tmp_path / "d", verify="full")["a"][0] == 1


def test_bad_arguments_are_rejected(tmp_path):
    files = save_dump({"a": 1}, tmp_path / "d")
    with pytest.raises(ValueError, match="mmap_mode"):
        read_object(tmp_path / "d", files, mmap_mode="w")
    with pytest.raises(ValueError, match="verify"):
        read_object(tmp_path / "d", files, verify="sometimes")


# ---------------------------------------------------------------- by value across processes

WRITER = """
import numpy as np
from stepline.saving.objectfile import write_object
from stepline.saving.manifest import write_manifest, runtime_versions

class Scaler:
    def __init__(self, factor):
        self.factor = factor
        self.weights = np.arange(100_000, dtype=np.float64)
    def transform(self, x):
        return x * self.factor + self.weights[:3].sum()

files = write_object({"step": Scaler(3), "fn": lambda x: x + 1}, "dump")
write_manifest("dump", {"name": "dump", "class": "builtins.dict", "files": files, "versions": runtime_versions()})
"""

READER = """
import sys
from stepline.saving.manifest import read_manifest
from stepline.saving.objectfile import read_object
assert "Scaler" not in dir(sys.modules["__main__"])
obj = read_object("dump", read_manifest("dump")["files"])
print(type(obj["step"]).__name__, obj["step"].transform(2), obj["fn"](1))
"""


def test_main_class_is_stored_by_value_and_loads_in_another_process(tmp_path):
    (tmp_path / "script.py").write_text(WRITER)
    subprocess.run([sys.executable, "script.py"], cwd=tmp_path, check=True, timeout=60)
    (tmp_path / "script.py").unlink()  # the source is gone
    out = run_python(READER, cwd=tmp_path).stdout.split()
    assert out == ["Scaler", "9.0", "2"]
    record = read_manifest(tmp_path / "dump")["files"][STREAM_NAME]
    assert "__main__.Scaler" in record["by_value"]
    assert record["python"].split(".")[:2] == [str(v) for v in sys.version_info[:2]]


def test_by_value_code_from_another_python_minor_is_refused(tmp_path):
    class Local:  # a local class: pickled by value
        pass

    files = write_object(Local(), tmp_path)
    assert files[STREAM_NAME]["by_value"]
    files[STREAM_NAME]["python"] = "3.1.4"
    with pytest.raises(IncompatibleDumpError) as err:
        read_object(tmp_path, files)
    assert str(tmp_path / STREAM_NAME) in str(err.value) and "3.1.4" in str(err.value)


def test_importable_classes_are_not_marked_by_value(tmp_path):
    files = write_object({"x": np.float64(1.0), "f": os.path.join}, tmp_path)
    assert "by_value" not in files[STREAM_NAME]


# ---------------------------------------------------------------- integrity errors

def _flip_stream(folder):
    flip_byte(folder / STREAM_NAME, 20)
    return STREAM_NAME, CorruptFileError, "BLAKE3 mismatch"


def _flip_buffer(folder):
    flip_byte(folder / "buffer-001.bin", 12345)
    return "buffer-001.bin", CorruptFileError, "BLAKE3 mismatch"


def _truncate(folder):
    path = folder / "buffer-000.bin"
    os.truncate(path, path.stat().st_size - 1)
    return "buffer-000.bin", CorruptFileError, "truncated"


def _append(folder):
    with open(folder / STREAM_NAME, "ab") as f:
        f.write(b"\0")
    return STREAM_NAME, CorruptFileError, "size"


def _delete(folder):
    (folder / "buffer-002.bin").unlink()
    return "buffer-002.bin", MissingFileError, "missing"


def _replace_with_folder(folder):
    (folder / "buffer-002.bin").unlink()
    (folder / "buffer-002.bin").mkdir()
    return "buffer-002.bin", CorruptFileError, "not a regular file"


@pytest.mark.parametrize("damage", [_flip_stream, _flip_buffer, _truncate, _append, _delete,
                                    _replace_with_folder])
@pytest.mark.parametrize("mmap_mode", [None, "r"])
def test_damaged_file_is_never_unpickled(tmp_path, monkeypatch, damage, mmap_mode):
    folder = tmp_path / "d"
    save_dump(sample_object(), folder)
    name, error, reason = damage(folder)
    unpickled = []
    monkeypatch.setattr("pickle.loads", lambda *a, **k: unpickled.append(1))
    with pytest.raises(error, match=reason) as err:
        load_dump(folder, mmap_mode=mmap_mode)
    assert str(folder / name) in str(err.value)
    assert isinstance(err.value, StepLoadError) and not unpickled


def test_sha_mismatch_message_names_both_hashes(tmp_path):
    files = save_dump(sample_object(), tmp_path)
    flip_byte(tmp_path / "buffer-000.bin", 0)
    with pytest.raises(CorruptFileError) as err:
        load_dump(tmp_path)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'buffer-000.bin'}: BLAKE3 mismatch (manifest ")
    assert files["buffer-000.bin"]["blake3"][:12] in message and "modified or corrupted" in message


def test_missing_folder(tmp_path):
    with pytest.raises(NotADumpError, match="no such dump") as err:
        read_manifest(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)
    with pytest.raises(NotADumpError):
        read_object(tmp_path / "nowhere", {STREAM_NAME: {"size": 1, "blake3": "0" * 64}})


def test_garbage_folder_is_not_a_dump(tmp_path):
    garbage = tmp_path / "garbage"
    (garbage / "sub").mkdir(parents=True)
    (garbage / "step.pkl").write_bytes(os.urandom(100))
    (garbage / "notes.txt").write_text("hello")
    with pytest.raises(NotADumpError, match="not a stepline dump") as err:
        read_manifest(garbage)
    assert str(garbage) in str(err.value)


def test_parent_folder_error_names_the_dumps_inside(tmp_path):
    save_dump({"a": 1}, tmp_path / "pipeline")
    with pytest.raises(NotADumpError, match="pipeline"):
        read_manifest(tmp_path)


def test_a_file_is_not_a_dump(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADumpError, match="not a folder"):
        read_manifest(tmp_path / "f")


def test_stray_files_in_a_dump_are_ignored(tmp_path):
    save_dump({"a": np.ones(BIG)}, tmp_path)
    (tmp_path / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "extra").mkdir()
    assert load_dump(tmp_path)["a"].sum() == BIG


@pytest.mark.parametrize("content, reason", [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe\x00garbage", "not valid JSON"),
    (b'{"name": "my-package", "version": "1.0.0"}', "not a stepline manifest"),
    (b'[1, 2, 3]', "not a stepline manifest"),
    (json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION + 1}).encode(), "newer"),
    (json.dumps({"format": FORMAT, "format_version": "1"}).encode(), "unknown format version"),
    (json.dumps({"format": FORMAT, "format_version": 1, "name": "d", "class": "c",
                 "files": {"step.pkl": {"size": 1}}}).encode(), "malformed record"),
    (json.dumps({"format": FORMAT, "format_version": 1, "name": "d", "class": "c",
                 "files": {"../../etc/passwd": {"size": 1, "blake3": "0" * 64}}}).encode(),
     "invalid file name"),
])
def test_bad_manifest(tmp_path, content, reason):
    (tmp_path / MANIFEST_NAME).write_bytes(content)
    with pytest.raises(ManifestError, match=reason) as err:
        read_manifest(tmp_path)
    assert str(tmp_path / MANIFEST_NAME) in str(err.value)


def test_manifest_without_the_stream(tmp_path):
    with pytest.raises(ManifestError, match=STREAM_NAME):
        read_object(tmp_path, {})


class _FailsToLoad:
    def __init__(self):
        self.state = 1

    def __setstate__(self, state):
        raise ValueError("boom in setstate")


def test_unpickling_failure_is_wrapped_and_chained(tmp_path):
    files = write_object(_FailsToLoad(), tmp_path)
    with pytest.raises(UnpicklingError, match="boom in setstate") as err:
        read_object(tmp_path, files)
    assert str(tmp_path / STREAM_NAME) in str(err.value)
    assert isinstance(err.value.__cause__, ValueError)


def test_missing_module_says_which_and_how_to_fix(tmp_path):
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    (module_dir / "vanishing_steps.py").write_text("class Step:\n    pass\n")
    sys.path.insert(0, str(module_dir))
    try:
        import vanishing_steps
        files = write_object(vanishing_steps.Step(), tmp_path / "d")
    finally:
        sys.path.remove(str(module_dir))
        sys.modules.pop("vanishing_steps", None)
    assert "by_value" not in files[STREAM_NAME]
    with pytest.raises(UnpicklingError) as err:
        read_object(tmp_path / "d", files)
    message = str(err.value)
    assert str(tmp_path / "d" / STREAM_NAME) in message
    assert "vanishing_steps" in message and "importable" in message and "__main__" in message
    assert isinstance(err.value.__cause__, ModuleNotFoundError)


def test_missing_class_says_which_and_how_to_fix(tmp_path):
    (tmp_path / "script.py").write_text(textwrap.dedent("""
        import pickle
        class Gone: pass
        # a plain pickler stores __main__.Gone by reference
        open("stream", "wb").write(pickle.dumps(Gone(), protocol=5))
    """))
    subprocess.run([sys.executable, "script.py"], cwd=tmp_path, check=True, timeout=60)
    (tmp_path / "d").mkdir()
    shutil.move(tmp_path / "stream", tmp_path / "d" / STREAM_NAME)
    files = cached_records(tmp_path / "d", [STREAM_NAME])
    with pytest.raises(UnpicklingError, match="Gone") as err:
        read_object(tmp_path / "d", files)
    assert "importable" in str(err.value) and isinstance(err.value.__cause__, AttributeError)


# ---------------------------------------------------------------- stat cache

def test_load_after_write_does_not_hash(tmp_path, hash_calls, cache_small_files):
    save_dump(sample_object(), tmp_path)
    load_dump(tmp_path)
    load_dump(tmp_path, mmap_mode="r")
    assert hash_calls == []


def test_touched_file_is_rehashed_once_then_trusted_again(tmp_path, hash_calls, cache_small_files):
    save_dump(sample_object(), tmp_path)
    os.utime(tmp_path / "buffer-001.bin")
    time.sleep(0.02)  # leave the clock tick of the touch
    load_dump(tmp_path)
    assert [p.name for p in hash_calls] == ["buffer-001.bin"]
    hash_calls.clear()
    load_dump(tmp_path)
    assert hash_calls == []


def test_flipped_byte_right_after_write_is_caught_by_the_cached_load(tmp_path, hash_calls, cache_small_files):
    save_dump(sample_object(), tmp_path)
    path = tmp_path / "buffer-003.bin"
    before = path.stat()
    flip_byte(path, 100)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # hide it from mtime
    with pytest.raises(CorruptFileError, match="BLAKE3 mismatch"):
        load_dump(tmp_path)
    assert [p.name for p in hash_calls] == ["buffer-003.bin"]


def test_copied_dump_is_fully_hashed(tmp_path, hash_calls):
    files = save_dump(sample_object(), tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # copies the cache too, with new inodes
    load_dump(tmp_path / "b")
    assert sorted(p.name for p in hash_calls) == sorted(files)


def test_verify_full_always_hashes_and_false_only_checks_sizes(tmp_path, hash_calls):
    files = save_dump(sample_object(), tmp_path)
    load_dump(tmp_path, verify="full")
    assert len(hash_calls) == len(files)
    hash_calls.clear()
    flip_byte(tmp_path / "buffer-000.bin", 0)
    load_dump(tmp_path, verify=False)  # contents unchecked, on request
    assert hash_calls == []
    os.truncate(tmp_path / "buffer-000.bin", 10)
    with pytest.raises(CorruptFileError, match="truncated"):
        load_dump(tmp_path, verify=False)


@pytest.mark.parametrize("cache", [b"[]", b'{"format": "other", "files": {}}',
                                   b'{"format": "stepline-stat-cache", "files": {"step.pkl": 3}}'])
def test_unreadable_cache_falls_back_to_hashing(tmp_path, hash_calls, cache):
    files = save_dump(sample_object(), tmp_path)
    (tmp_path / STAT_CACHE_NAME).write_bytes(cache)
    load_dump(tmp_path)
    assert len(hash_calls) == len(files)


def test_cache_with_a_different_hash_than_the_manifest_is_not_trusted(tmp_path, hash_calls, cache_small_files):
    files = write_object(sample_object(), tmp_path)
    files["buffer-000.bin"]["blake3"] = "0" * 64
    with pytest.raises(CorruptFileError, match="buffer-000.bin"):
        read_object(tmp_path, files)
    assert [p.name for p in hash_calls] == ["buffer-000.bin"]


def test_racy_cache_entries_are_not_trusted(tmp_path, hash_calls):
    files = write_object({"a": np.ones(BIG)}, tmp_path)
    cache = tmp_path / STAT_CACHE_NAME
    oldest = min(os.stat(tmp_path / n).st_ctime_ns for n in files)
    os.utime(cache, ns=(oldest, oldest))  # cache no newer than the files: racy
    read_object(tmp_path, files)
    assert len(hash_calls) == len(files)


def test_cached_records_hash_new_files_once_and_reuse_the_cache(tmp_path, hash_calls, cache_small_files):
    files = write_object({"a": np.ones(BIG)}, tmp_path)
    (tmp_path / "weights.bin").write_bytes(os.urandom(3000))
    records = cached_records(tmp_path, [*files, "weights.bin"])
    assert [p.name for p in hash_calls] == ["weights.bin"]  # write_object's files are cached
    assert records == {**files, "weights.bin": {"size": 3000, "blake3": records["weights.bin"]["blake3"]}}
    hash_calls.clear()
    integrity.verify_files(tmp_path, records)
    assert hash_calls == []
    (tmp_path / "weights.bin").write_bytes(b"new")
    assert cached_records(tmp_path, ["weights.bin"])["weights.bin"]["size"] == 3


# ---------------------------------------------------------------- atomic folder

def entries(folder):
    """What a folder holds, bar the lock files that saves to ``step`` take turns on
    (once the background deletion of replaced dumps is done)."""
    wait_for_cleanup()
    return sorted(p.name for p in folder.iterdir() if p.name not in (".step.lock", ".step.turn"))


def _content(folder):
    return sorted((p.name, p.read_text()) for p in folder.iterdir())


def test_atomic_folder_creates_and_replaces(tmp_path):
    final = tmp_path / "step"
    with atomic_folder(final) as tmp:
        assert tmp.name == "step" and tmp.parent.parent == tmp_path and not final.exists()
        assert tmp.parent.name.startswith(".step.tmp-")
        (tmp / "v").write_text("1")
    assert _content(final) == [("v", "1")]
    with atomic_folder(final) as tmp:
        (tmp / "v").write_text("2")
        assert _content(final) == [("v", "1")]  # untouched until the end
    assert _content(final) == [("v", "2")]
    assert entries(tmp_path) == ["step"]


def test_atomic_folder_exception_keeps_the_previous_content(tmp_path):
    final = tmp_path / "step"
    with atomic_folder(final) as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(KeyError):
        with atomic_folder(final) as tmp:
            (tmp / "v").write_text("2")
            raise KeyError("saver failed")
    assert _content(final) == [("v", "1")]
    assert entries(tmp_path) == ["step"]


def test_process_killed_inside_the_save_leaves_the_previous_dump_loadable(tmp_path):
    final = tmp_path / "step"
    with atomic_folder(final) as tmp:
        save_dump({"version": 1, "a": np.ones(BIG)}, tmp)
    proc = run_python(f"""
        import os, numpy as np
        from stepline.saving.atomic import atomic_folder
        from stepline.saving.objectfile import write_object
        with atomic_folder({str(final)!r}) as tmp:
            write_object({{"version": 2, "a": np.zeros(1 << 20)}}, tmp)
            os._exit(1)
    """, cwd=tmp_path, check=False)
    assert proc.returncode == 1
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".step.tmp-")]
    assert len(leftovers) == 1
    loaded = load_dump(resolve_dump_folder(final))
    assert loaded["version"] == 1 and loaded["a"].sum() == BIG
    with atomic_folder(final) as tmp:  # the next save cleans the leftover
        save_dump({"version": 3}, tmp)
    assert entries(tmp_path) == ["step"]
    assert load_dump(final)["version"] == 3


def test_dump_left_between_the_two_renames_is_put_back(tmp_path):
    """Where RENAME_EXCHANGE is missing, a save dying between its two renames leaves ``.old-``."""
    final = tmp_path / "step"
    old = tmp_path / ".step.old-1234abcd"
    save_dump({"version": 1}, old)
    (tmp_path / ".step.old-deadbeef").mkdir()  # incomplete: no manifest
    with pytest.warns(InterruptedSaveWarning, match="interrupted"):
        found = resolve_dump_folder(final)
    assert found == final and not old.exists() and load_dump(found)["version"] == 1
    with atomic_folder(final) as tmp:
        save_dump({"version": 2}, tmp)
    clean_leftovers(tmp_path, "step")
    wait_for_cleanup()  # the replaced dump is deleted in the background, not by clean_leftovers
    assert entries(tmp_path) == ["step"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_dump_folder(final) == final


def test_missing_dump_without_leftovers_resolves_to_itself(tmp_path):
    assert resolve_dump_folder(tmp_path / "nothing") == tmp_path / "nothing"


def test_clean_leftovers_keeps_other_names_and_old_dumps_without_final(tmp_path):
    for name in (".step.tmp-1", ".step.old-2", ".steps.tmp-3", ".other.tmp-4"):
        (tmp_path / name).mkdir()
    removed = clean_leftovers(tmp_path, "step")
    assert [p.name for p in removed] == [".step.tmp-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-4", ".step.old-2", ".steps.tmp-3"]


def test_cache_survives_the_atomic_swap(tmp_path, hash_calls, cache_small_files):
    final = tmp_path / "step"
    with atomic_folder(final) as tmp:
        save_dump(sample_object(), tmp)
    load_dump(final)
    assert hash_calls == []


# ---------------------------------------------------------------- manifest and versions

def test_write_manifest_adds_format_and_is_plain_json(tmp_path):
    written = write_manifest(tmp_path, {"name": "p", "class": "c", "files": {}, "step": "Pipeline",
                                        "hp": {"lr": np.float32(0.5)}, "format": "ignored"})
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert data == written
    assert data["format"] == FORMAT and data["format_version"] == FORMAT_VERSION
    assert data["created"] and data["step"] == "Pipeline" and data["hp"] == {"lr": 0.5}
    assert read_manifest(tmp_path).items() <= data.items()  # less its own digest
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST_NAME]


def test_write_manifest_refuses_unserialisable_values(tmp_path):
    with pytest.raises(TypeError, match="object"):
        write_manifest(tmp_path, {"bad": object()})
    assert not (tmp_path / MANIFEST_NAME).exists()
    assert list(tmp_path.iterdir()) == []


def test_runtime_versions_lists_the_main_packages_without_importing_torch(tmp_path):
    out = run_python("""
        import sys, json
        from stepline.saving.manifest import runtime_versions
        v = runtime_versions()
        print(json.dumps([v, "torch" in sys.modules, "sklearn" in sys.modules]))
    """, cwd=tmp_path).stdout
    versions, torch_imported, sklearn_imported = json.loads(out)
    assert {"python", "stepline", "numpy", "joblib", "cloudpickle"} <= set(versions)
    assert versions["numpy"] == np.__version__
    assert not torch_imported and not sklearn_imported and "torch" not in versions


def test_runtime_versions_lists_imported_optional_packages():
    pytest.importorskip("sklearn")
    assert "scikit-learn" in runtime_versions()


def test_version_differences():
    current = runtime_versions()
    assert version_differences(current) == []
    lines = version_differences({**current, "numpy": "1.0.0", "no-such-package-xyz": "1.2"})
    assert lines == ["no-such-package-xyz: saved with 1.2, not installed",
                     f"numpy: saved with 1.0.0, running {np.__version__}"]


def test_warn_version_differences_warns_per_package(tmp_path):
    with pytest.warns(VersionMismatchWarning) as record:
        warn_version_differences({"numpy": "1.0.0", "joblib": "0.1"}, tmp_path)
    assert len(record) == 2 and all(str(tmp_path) in str(w.message) for w in record)


def test_settle_waits_until_the_cache_is_newer_than_the_files(tmp_path):
    path = tmp_path / "cache"
    path.write_text("{}")
    newest = path.stat().st_mtime_ns + 5_000_000  # a file changed 5 ms "from now"
    integrity._settle(path, newest)
    assert path.stat().st_mtime_ns > newest


def test_small_files_get_no_stat_cache_and_are_hashed_on_each_load(tmp_path, monkeypatch):
    from stepline.saving import integrity
    files = save_dump({"small": np.arange(10)}, tmp_path)
    assert not (tmp_path / integrity.STAT_CACHE_NAME).exists()
    calls = []
    real = integrity.file_digest
    monkeypatch.setattr(integrity, "file_digest", lambda p, *a: calls.append(p) or real(p, *a))
    load_dump(tmp_path)
    load_dump(tmp_path)
    assert len(calls) == 2 * len(files) and not (tmp_path / integrity.STAT_CACHE_NAME).exists()
