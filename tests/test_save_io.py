"""The file-system work of saving and loading many small steps, counted with audit hooks.

Saving a pipeline of tiny steps is bound by per-step work (issue 14): these tests pin the
mechanisms that keep it at what the layout needs — each file of a dump written once and
read once, nothing re-read that the save has in memory, no thread hand-off per step.
Counted with ``sys.addaudithook`` (real ``open``/``os.mkdir``/``os.scandir`` events), not mocks.
"""
import json
import os
import re
import sys
import threading
from collections import Counter
from contextlib import contextmanager

import numpy as np
import pytest

from stepline import CX, Pipeline
from stepline.base import BaseSaver
from stepline.saving import CorruptFileError, SaveError
from stepline.saving.manifest import MANIFEST_NAME
from stepline.steps.numpy import MultiplyByN

_RECORDING: list = []  # the list events go to while a ``recorded`` block runs (audit hooks stay for ever)


def _hook(event, args):
    if _RECORDING and event in ("open", "os.mkdir", "os.scandir", "os.listdir"):
        path = args[0]
        if isinstance(path, int) and event in ("os.scandir", "os.listdir"):
            _RECORDING[-1].append((event, f"<fd {path}>", None, 0, threading.get_ident()))  # a folder opened first
        elif isinstance(path, (str, bytes, os.PathLike)):
            mode = args[1] if event == "open" and len(args) > 1 else None
            flags = args[2] if event == "open" and len(args) > 2 else 0
            _RECORDING[-1].append((event, os.fsdecode(path), mode, flags, threading.get_ident()))


sys.addaudithook(_hook)


@contextmanager
def recorded():
    events = []
    _RECORDING.append(events)
    try:
        yield events
    finally:
        _RECORDING.pop()


def _reads(events, under):
    """Files under ``under`` opened for reading, with how often."""
    under = os.fspath(under)
    return Counter(path for event, path, mode, flags, _ in events
                   if event == "open" and path.startswith(under) and _is_read(mode, flags)
                   and _is_dump_file(os.path.basename(path)))


def _is_dump_file(name: str) -> bool:
    """A file a step folder holds (not a lock, a journal looked for, or a folder being deleted)."""
    return name in (MANIFEST_NAME, "step.pkl", "stepline.sig") or name.startswith("buffer-")


def _is_read(mode, flags) -> bool:
    if isinstance(mode, str):
        return "r" in mode and "+" not in mode
    return (flags or 0) & (os.O_WRONLY | os.O_RDWR) == 0


def tiny(n: int) -> Pipeline:
    p = Pipeline([(f"m{i}", MultiplyByN(2)) for i in range(n)], name="tiny")
    for step in p.values():
        step.set_hyperparams({"multiply_by": 3})
    return p


def test_a_full_save_of_tiny_steps_reads_nothing_back_and_hands_nothing_to_threads(tmp_path):
    p = tiny(30)
    with recorded() as events:
        p.save(CX(tmp_path), full_dump=True)
    dump = tmp_path / "tiny"
    assert not _reads(events, tmp_path), "a save re-read files it had just written (their bytes are in memory)"
    writers = {thread for event, path, *_, thread in events if event == "open" and path.startswith(os.fspath(tmp_path))}
    assert writers == {threading.get_ident()}, "the files of tiny steps are written without thread hand-offs"
    listed = [path for event, path, *_ in events if event in ("os.scandir", "os.listdir")
              and os.path.basename(path).startswith("m")]
    assert not listed, f"the folders of steps with stepline's own savers are not listed: {listed[:3]}"
    made = Counter(path for event, path, *_ in events if event == "os.mkdir")
    assert all(count == 1 for count in made.values()), f"a folder created twice: {made.most_common(3)}"
    written = Counter(path for event, path, mode, flags, _ in events  # (in the staged copy of the dump)
                      if event == "open" and path.startswith(os.fspath(tmp_path)) and not _is_read(mode, flags)
                      and _is_dump_file(os.path.basename(path)))
    for name in ("m0", "m7", "m29"):  # its pickle is inline in the manifest (format 3): one file a step
        assert [os.path.basename(p) for p in written if os.path.basename(os.path.dirname(p)) == name] == [
            MANIFEST_NAME], written
    assert max(written.values()) == 1, written.most_common(3)
    assert CX(tmp_path).load("tiny")["m7"].hyperparams["multiply_by"] == 3
    assert sorted(os.listdir(dump / "m7")) == [MANIFEST_NAME]


def test_a_load_of_tiny_steps_opens_each_file_of_the_dump_once(tmp_path):
    p = tiny(30)
    p.save(CX(tmp_path), full_dump=True)
    with recorded() as events:
        loaded = CX(tmp_path).load("tiny")
    dump = tmp_path / "tiny"
    reads = _reads(events, dump)
    for name in ["m0", "m17", "m29"]:  # the pickle is inline: one file opened a step
        assert [p for p in reads if os.path.dirname(p) == os.fspath(dump / name)] == [
            os.fspath(dump / name / MANIFEST_NAME)]
    assert reads[os.fspath(dump / MANIFEST_NAME)] == 1
    assert max(reads.values()) == 1, reads.most_common(3)
    assert len(reads) == 32, reads  # 31 manifests and the signature
    listed = [path for event, path, *_ in events if event in ("os.scandir", "os.listdir") and path.startswith(os.fspath(dump))]
    assert not listed, f"a load lists no step folder (the manifests say what is there): {listed[:3]}"
    assert [s.hyperparams["multiply_by"] for s in loaded.values()] == [3] * 30


def test_a_load_of_pickles_in_files_opens_each_file_of_the_dump_once(tmp_path, pickles_in_files):
    tiny(5).save(CX(tmp_path), full_dump=True)
    dump = tmp_path / "tiny"
    with recorded() as events:
        CX(tmp_path).load("tiny")
    reads = _reads(events, dump)
    for name in ["m0", "m4"]:
        assert reads[os.fspath(dump / name / "step.pkl")] == 1, "the pickle is hashed as it is read, once"
        assert reads[os.fspath(dump / name / MANIFEST_NAME)] == 1
    assert max(reads.values()) == 1, reads.most_common(3)


def test_the_pickle_read_once_is_still_checked_against_its_digest(tmp_path, pickles_in_files):
    tiny(3).save(CX(tmp_path), full_dump=True)
    pkl = tmp_path / "tiny" / "m1" / "step.pkl"
    raw = bytearray(pkl.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # same size: only the digest can tell
    pkl.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match=r"m1/step\.pkl"):
        CX(tmp_path).load("tiny")
    with pytest.raises(CorruptFileError, match=r"m1/step\.pkl"):
        CX(tmp_path).load("tiny", trusted=True)


def test_a_changes_only_save_of_one_step_reads_only_what_it_rewrites(tmp_path):
    p = tiny(30)
    p.save(CX(tmp_path), full_dump=True)
    p["m12"].set_hyperparams({"multiply_by": 5})
    with recorded() as events:
        p.save(CX(tmp_path))
    dump = tmp_path / "tiny"
    reads = _reads(events, tmp_path)
    assert not [name for name in reads if ".tiny.tmp-" in name], f"what the save wrote is not read back: {reads}"
    # the previous manifests of the steps rewritten (what files they listed, to delete the gone ones)
    assert set(reads) <= {os.fspath(dump / MANIFEST_NAME), os.fspath(dump / "m12" / MANIFEST_NAME)}, reads
    listed = [path for event, path, *_ in events if event in ("os.scandir", "os.listdir")
              and path.startswith(os.fspath(tmp_path)) and os.path.basename(path).startswith("m")
              and "m12" not in path]
    assert not listed, f"kept steps' folders are not listed: {listed[:3]}"
    assert CX(tmp_path).load("tiny")["m12"].hyperparams["multiply_by"] == 5


class _WeightsFileSaver(BaseSaver):
    """A custom saver that writes a file of its own and reports nothing about it."""

    def save_step(self, step, context):
        (context.get_path() / "weights.bin").write_bytes(b"w" * 100)
        return step

    def can_load(self, step, context):
        return True

    def load_step(self, step, context):
        return step


def test_a_file_a_custom_saver_writes_unreported_is_listed_and_verified(tmp_path):
    step = MultiplyByN(2).set_name("custom")
    step.set_savers([_WeightsFileSaver()])
    step.set_hyperparams({"multiply_by": 4})
    Pipeline([step], name="p").save(CX(tmp_path), full_dump=True)
    manifest = json.loads((tmp_path / "p" / "custom" / MANIFEST_NAME).read_text())
    assert manifest["files"]["weights.bin"]["size"] == 100
    assert CX(tmp_path).load("p")["custom"].hyperparams["multiply_by"] == 4
    (tmp_path / "p" / "custom" / "weights.bin").write_bytes(b"v" * 100)
    with pytest.raises(CorruptFileError, match=r"weights\.bin"):
        CX(tmp_path).load("p")


def test_the_replaced_dump_is_kept_as_the_spare_without_listing_what_the_new_save_expects_it_holds(tmp_path):
    from stepline.saving import atomic
    p = tiny(30)
    p.save(CX(tmp_path), full_dump=True)
    atomic.wait_for_cleanup()
    with recorded() as events:
        p.save(CX(tmp_path), full_dump=True)  # the same pipeline again: the replaced dump has its layout
        atomic.wait_for_cleanup()
    listed = [path for event, path, *_ in events if event in ("os.scandir", "os.listdir")
              and path not in (os.fspath(tmp_path), os.fspath(tmp_path / ".tiny.spare" / "tiny"))
              and not os.path.basename(str(path)).startswith(".tiny.tmp-")]  # (the container: one entry)
    assert not listed, f"the replaced dump's folders were listed: {listed[:3]}"
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith(".")) == [".tiny.lock", ".tiny.spare", ".tiny.turn"]
    kept = sorted(str(f.relative_to(tmp_path / ".tiny.spare")) for f in (tmp_path / ".tiny.spare").rglob("*")
                  if not f.is_dir())
    assert kept == sorted([f"tiny/{MANIFEST_NAME}"] + [f"tiny/m{i}/{MANIFEST_NAME}" for i in range(30)])


def test_a_spare_holding_more_than_the_next_save_needs_is_cleared_without_following_links(tmp_path):
    from stepline.saving import atomic
    tiny(30).save(CX(tmp_path), full_dump=True)
    (tmp_path / "tiny" / "m3" / "notes.txt").write_text("a file the dump's manifests do not list")
    os.symlink(tmp_path / "outside", tmp_path / "tiny" / "m4" / "link")  # never followed
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "keep.txt").write_text("outside the dump")
    tiny(5).save(CX(tmp_path), full_dump=True)  # other steps: m5…m29 and the extra files are not expected
    atomic.wait_for_cleanup()
    assert (tmp_path / ".tiny.spare" / "tiny" / "m3" / "notes.txt").exists()  # (kept until a save reuses m3)
    small = tiny(5)
    small["m3"].set_hyperparams({"multiply_by": 7})
    small.save(CX(tmp_path), full_dump=True)  # rebuilt in the spare: m5…m29, notes.txt and the link removed
    atomic.wait_for_cleanup()
    assert (tmp_path / "outside" / "keep.txt").read_text() == "outside the dump"
    assert sorted(os.listdir(tmp_path / "tiny")) == sorted([MANIFEST_NAME, "stepline.sig"] + [f"m{i}" for i in range(5)])
    assert all(os.listdir(tmp_path / "tiny" / f"m{i}") == [MANIFEST_NAME] for i in range(5))
    assert CX(tmp_path).load("tiny", verify="full")["m3"].hyperparams["multiply_by"] == 7


class _SignatureNameSaver(BaseSaver):
    """A custom saver that writes a file with the name of the dump's signature."""

    def save_step(self, step, context):
        (context.get_path() / "stepline.sig").write_text("not a signature")
        return step

    def can_load(self, step, context):
        return True

    def load_step(self, step, context):
        return step


def test_a_saver_file_in_the_place_of_the_signature_is_a_save_error_and_the_previous_dump_stays(tmp_path):
    p = tiny(3)
    p.save(CX(tmp_path), full_dump=True)
    p.set_savers([*p.savers, _SignatureNameSaver()])
    p["m1"].set_hyperparams({"multiply_by": 7})
    where = re.escape(f"{tmp_path / 'tiny' / 'stepline.sig'}: cannot write the dump's signature")
    with pytest.raises(SaveError, match=where):
        p.save(CX(tmp_path), full_dump=True)
    assert CX(tmp_path).load("tiny")["m1"].hyperparams["multiply_by"] == 3
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]


_FREEING: list = []  # (thread name, what) of each file-system call that would drop a dump file's last link


def _freeing_hook(event, args):
    if not _FREEING or event not in ("os.rename", "os.remove", "os.rmdir", "shutil.rmtree"):
        return
    watched, found = _FREEING[-1]
    path = os.fsdecode(args[1] if event == "os.rename" else args[0]) if not isinstance(args[0], int) else ""
    if not path.startswith(watched):
        return
    try:
        st = os.lstat(path)
    except OSError:
        return  # (nothing there: a rename onto a new name frees nothing)
    if event in ("os.rmdir", "shutil.rmtree") or st.st_nlink < 2:
        found.append((threading.current_thread().name, event, path))


sys.addaudithook(_freeing_hook)


class _Weights(MultiplyByN):
    """A tiny step that may hold an array big enough for a file of its own."""


def test_a_changes_only_save_frees_no_file_of_the_dump_on_the_saving_thread(tmp_path):
    """On a disk mounted with ``discard`` (this machine's), every block freed is a request to
    the device, synchronous where the file system has no journal: 0.1-4 ms each. A
    changes-only save replaces manifests and deletes the files a step no longer has; the last
    link of each goes on the background thread, with the overlay's container."""
    from stepline.saving.atomic import wait_for_cleanup
    p = Pipeline([("a", _Weights(2)), ("b", MultiplyByN(2)), ("c", MultiplyByN(2))], name="p")
    p["a"].big_ = np.arange(100_000, dtype=np.float64)  # its own buffer file
    p.invalidate()
    p.save(CX(tmp_path), full_dump=True)
    wait_for_cleanup()
    assert any(n.startswith("buffer-") for n in os.listdir(tmp_path / "p" / "a"))
    p["a"].big_ = None  # the buffer file goes
    p["a"].invalidate()
    p["b"].set_hyperparams({"multiply_by": 7})  # its manifest is replaced
    found = []
    _FREEING.append((os.fspath(tmp_path / "p"), found))
    try:
        p.save(CX(tmp_path))
    finally:
        _FREEING.pop()
        wait_for_cleanup()
    on_the_save_path = [f for f in found if not f[0].startswith("stepline-cleanup")]
    assert on_the_save_path == []
    loaded = CX(tmp_path).load("p")
    assert loaded["a"].big_ is None and loaded["b"].hyperparams["multiply_by"] == 7
    assert not any(n.startswith("buffer-") for n in os.listdir(tmp_path / "p" / "a"))
    assert sorted(n for n in os.listdir(tmp_path) if not n.endswith((".lock", ".turn"))) == ["p"]
