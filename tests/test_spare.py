"""A full save rebuilds the dump inside the spare tree of the one it replaced last time.

The spare (``.<name>.spare``, beside the dump) holds an earlier dump's folders and
manifests in its tree; the next full save reuses them in place instead of allocating new
inodes. These tests show it reuses them, leaves exactly what a fresh save leaves, never
writes a file a loaded step may map, never follows a link planted in the spare, leaves
alone what a save did not write, and keeps changes-only saves right across inode reuse;
and that the replaced dump's data, moved out of the tree, waits beside it for the next save
or load to free it as that starts (where the disk has room; a save waits for it where it
has not): a save on its own thread before it writes, unless the disk is writing it back.
"""
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from stepline import CX, Pipeline
from stepline.base import BaseStep
from stepline.saving.atomic import wait_for_cleanup
from stepline.saving.manifest import MANIFEST_NAME
from stepline.steps.numpy import AddN, MultiplyByN

X = np.arange(4.0)


class Weights(BaseStep):
    """Adds a fitted 1 MiB array (stored as its own buffer file)."""

    def __init__(self, value=0.0, name=None):
        super().__init__(name=name)
        self.value = value

    def fit(self, data_inputs, expected_outputs=None):
        self.w_ = np.full(1 << 17, self.value)
        return self

    def transform(self, data_inputs):
        return np.asarray(data_inputs) + self.w_[: len(data_inputs)]


def tiny(n=5, factor=2, name="p"):
    return Pipeline([(f"m{i}", MultiplyByN(factor)) for i in range(n)], name=name)


def save(p, root):
    p.save(CX(root), full_dump=True)
    wait_for_cleanup()  # (the replaced dump becomes the spare on a background thread)


def inodes(folder):
    """``{path relative to folder: inode}`` of every folder and manifest under ``folder``."""
    found = {}
    for here, dirs, files in os.walk(folder):
        for name in dirs + [f for f in files if f == MANIFEST_NAME]:
            path = os.path.join(here, name)
            found[os.path.relpath(path, folder)] = os.lstat(path).st_ino
    return found


def tree(folder):
    """Every path under ``folder``, relative, with a trailing slash on folders."""
    out = []
    for here, dirs, files in os.walk(folder):
        rel = os.path.relpath(here, folder)
        out += [os.path.normpath(os.path.join(rel, d)) + "/" for d in dirs]
        out += [os.path.normpath(os.path.join(rel, f)) for f in files]
    return sorted(out)


def test_the_same_pipeline_saved_again_reuses_every_folder_and_manifest(tmp_path):
    p = tiny(20)
    save(p, tmp_path)
    first = inodes(tmp_path / "p")
    save(p, tmp_path)  # the first dump becomes the spare
    assert (tmp_path / ".p.spare" / "p" / MANIFEST_NAME).is_file()
    p["m3"].set_hyperparams({"multiply_by": 9})
    save(p, tmp_path)  # rebuilt in the first dump's folders
    assert inodes(tmp_path / "p") == first
    loaded = CX(tmp_path).load("p", verify="full")
    assert loaded["m3"].hyperparams["multiply_by"] == 9
    np.testing.assert_array_equal(loaded.transform(X), X * 2 ** 19 * 9)


def test_another_pipeline_saved_over_the_spare_leaves_exactly_what_a_fresh_save_leaves(tmp_path):
    root, fresh = tmp_path / "root", tmp_path / "fresh"
    save(Pipeline([("a", Weights(1.0)), ("inner", Pipeline([("b", Weights(2.0)), ("c", AddN(1))])),
                   ("gone", MultiplyByN(3))], name="p").fit(X), root)
    save(tiny(3), root)  # the weights' dump becomes the spare
    last = Pipeline([("inner", Pipeline([("c", AddN(5)), ("d", Weights(4.0))])), ("a", MultiplyByN(7))],
                    name="p").fit(X)
    save(last, root)  # folders inner, inner/c and a reused, the rest removed or made
    save(last, fresh)
    assert tree(root / "p") == tree(fresh / "p")
    np.testing.assert_array_equal(CX(root).load("p", verify="full").transform(X), last.transform(X))


def test_no_file_a_loaded_step_maps_is_ever_written_again(tmp_path):
    save(Pipeline([("w", Weights(1.0))], name="p").fit(X), tmp_path)
    mapped = CX(tmp_path).load("p", mmap_mode="r")["w"].w_
    for value in (2.0, 3.0, 4.0):  # the mapped dump becomes the spare, then is rebuilt
        save(Pipeline([("w", Weights(value))], name="p").fit(X), tmp_path)
        spared = tree(tmp_path / ".p.spare")  # its tree: folders and manifests; beside it, the data moved out
        assert [f for f in spared if not f.endswith(("/", MANIFEST_NAME)) and not f.startswith(".moved-")] == []
    assert float(mapped.min()) == float(mapped.max()) == 1.0
    assert float(CX(tmp_path).load("p")["w"].w_[0]) == 4.0


def test_a_rebuilt_manifest_moves_its_mtime_forward_even_past_a_clock_set_back(tmp_path):
    p = tiny(3)
    save(p, tmp_path)
    save(p, tmp_path)
    future = time.time_ns() + 86_400 * 10**9  # as if the clock had stepped back by a day since
    spared = tmp_path / ".p.spare" / "p"
    for folder in (spared, *(spared / f"m{i}" for i in range(3))):
        os.utime(folder / MANIFEST_NAME, ns=(future, future))
    save(p, tmp_path)
    for folder in (tmp_path / "p", *(tmp_path / "p" / f"m{i}" for i in range(3))):
        assert os.stat(folder / MANIFEST_NAME).st_mtime_ns > future


def test_a_changes_only_save_after_another_pipeline_reused_its_inodes_still_writes_its_steps(tmp_path):
    mine = tiny(5, factor=2)
    save(mine, tmp_path)  # mine's records: the inodes of this dump
    other = tiny(5, factor=3)
    save(other, tmp_path)
    save(other, tmp_path)  # rebuilt in mine's inodes, same sizes
    mine.save(CX(tmp_path))  # changes only: nothing of mine changed, but the folders hold other's
    assert {s.hyperparams["multiply_by"] for s in CX(tmp_path).load("p", verify="full").values()} == {2}


def test_a_copy_made_with_hard_links_is_never_written_through(tmp_path):
    """``cp -al`` / ``rsync --link-dest`` / a DVC cache: the copy's manifests are the dump's
    inodes; rebuilding the spare in place must not write what the copy holds."""
    root, backup = tmp_path / "root", tmp_path / "backup"
    p = tiny(4)
    save(p, root)
    for here, _, files in os.walk(root / "p"):
        os.makedirs(backup / os.path.relpath(here, root), exist_ok=True)
        for name in files:
            os.link(os.path.join(here, name), backup / os.path.relpath(here, root) / name)
    before = {f: (backup / f).read_bytes() for f in tree(backup) if not f.endswith("/")}
    for factor in (5, 6):
        save(tiny(4, factor=factor), root)  # the linked dump becomes the spare, then is rebuilt
    assert {f: (backup / f).read_bytes() for f in before} == before
    assert {s.hyperparams["multiply_by"] for s in CX(root).load("p", verify="full").values()} == {6}
    assert {s.hyperparams["multiply_by"] for s in CX(backup).load("p", verify="full").values()} == {2}


def test_a_link_planted_in_the_spare_is_never_followed(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    p = tiny(3)
    save(p, root)
    save(p, root)
    (outside / "m1").mkdir(parents=True)
    (outside / "m1" / MANIFEST_NAME).write_text("outside the dump")
    (outside / "m1" / "keep.txt").write_text("outside the dump")
    victim = root / ".p.spare" / "p" / "m1"
    for entry in victim.iterdir():
        entry.unlink()
    victim.rmdir()
    victim.symlink_to(outside / "m1")
    save(p, root)
    assert (outside / "m1" / MANIFEST_NAME).read_text() == "outside the dump"
    assert (outside / "m1" / "keep.txt").read_text() == "outside the dump"
    assert not (root / "p" / "m1").is_symlink() and (root / "p" / "m1" / MANIFEST_NAME).is_file()
    assert len(CX(root).load("p", verify="full")) == 3


@pytest.mark.parametrize("what", ["file", "folder", "link"])
def test_something_else_named_like_the_spare_is_left_alone(tmp_path, what):
    root, outside = tmp_path / "root", tmp_path / "outside"
    p = tiny(3)
    save(p, root)
    (outside / "p").mkdir(parents=True)
    (outside / "p" / MANIFEST_NAME).write_text("not stepline's")
    spare = root / ".p.spare"
    if what == "file":
        spare.write_text("a user's notes")
    elif what == "folder":
        (spare / "p").mkdir(parents=True)
        (spare / "p" / "notes.txt").write_text("a user's notes")
    else:
        spare.symlink_to(outside)
    save(p, root)
    save(p, root)
    if what == "file":
        assert spare.read_text() == "a user's notes"
    elif what == "folder":
        assert (spare / "p" / "notes.txt").read_text() == "a user's notes"
    else:
        assert spare.is_symlink() and (outside / "p" / MANIFEST_NAME).read_text() == "not stepline's"
    assert len(CX(root).load("p", verify="full")) == 3


def test_a_spare_made_by_another_process_is_reused(tmp_path):
    code = ("import sys; from stepline import CX, Pipeline; from stepline.steps.numpy import MultiplyByN\n"
            "from stepline.saving.atomic import wait_for_cleanup\n"
            "p = Pipeline([(f'm{i}', MultiplyByN(2)) for i in range(5)], name='p')\n"
            "for _ in range(2):\n    p.save(CX(sys.argv[1]), full_dump=True); wait_for_cleanup()\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=120)
    spared = inodes(tmp_path / ".p.spare" / "p")
    save(tiny(5, factor=4), tmp_path)
    assert inodes(tmp_path / "p") == spared
    assert {s.hyperparams["multiply_by"] for s in CX(tmp_path).load("p").values()} == {4}


class Big(BaseStep):
    """A fitted step holding ``mib`` MiB of float64 (one buffer file)."""

    def __init__(self, mib=10, value=0.0, name=None):
        super().__init__(name=name)
        self.mib, self.value = mib, value

    def fit(self, data_inputs, expected_outputs=None):
        self.w_ = np.full(self.mib << 17, self.value)
        return self

    def transform(self, data_inputs):
        return data_inputs


def big(value, mib=10):
    return Pipeline([("a", Big(mib, value)), ("b", Big(mib, value + 1))], name="p").fit(X)


def moved_beside(root):
    """``{name: size}`` of the data kept beside the spare's tree (moved out of it)."""
    spare = root / ".p.spare"
    return {e.name: e.stat(follow_symlinks=False).st_size for e in os.scandir(spare) if e.name.startswith(".moved-")}


def _frees_and_writes(tmp_path, p):
    """Save ``p`` to ``tmp_path``; return, in order, ``(thread name, "free" or "write", name)``
    for each kept entry deleted and each buffer file written (audit hooks: no patching)."""
    seen, spare_fd_names = [], {}

    def hook(event, args):
        if event == "os.remove" and str(args[0]).startswith(".moved-"):
            seen.append((threading.current_thread().name, "free", str(args[0])))
        elif event == "open" and str(args[0]).endswith(".bin") and "w" in str(args[1]):
            seen.append((threading.current_thread().name, "write", os.path.basename(str(args[0]))))

    _HOOK[:] = [hook]
    try:
        save(p, tmp_path)
        wait_for_cleanup()
    finally:
        _HOOK[:] = []
    return seen


_HOOK: list = []
sys.addaudithook(lambda event, args: _HOOK and _HOOK[0](event, args))


def test_the_replaced_dumps_data_is_kept_until_the_next_save_frees_it_as_it_writes(tmp_path):
    """Freed right after the save that replaced it, a GiB of page cache went back to this
    VM's host 2 s later, and a save after a pause faulted every page of its files in again
    (2.2-3.3 s against 0.25 s): the data waits beside the spare for the next save, which
    frees it on its own thread as it writes, each big write preceded by the free of as much
    (as np.save frees its old file: its writes then take the very pages freed; freed on
    another core, they now and then came too late; freed all before the first write, the
    other core idled meanwhile). What is left (small files) it frees once it has written: the
    next save, finding the background thread still at them, would leave it all its freeing."""
    save(big(1.0), tmp_path)
    save(big(2.0), tmp_path)
    first = moved_beside(tmp_path)
    assert sorted(v for v in first.values() if v >= 1 << 20) == [10 << 20, 10 << 20]  # the first dump's buffers
    # (and its small files: the signature, the stat caches)
    seen = _frees_and_writes(tmp_path, big(3.0))
    assert sorted(name for _, kind, name in seen if kind == "free") == sorted(first)
    here = threading.current_thread().name
    writes = [i for i, (_, kind, _) in enumerate(seen) if kind == "write"]
    assert len(writes) == 2  # (the new dump's two 10 MiB buffers)
    for n, i in enumerate(writes):
        freed_here = [name for thread, kind, name in seen[:i] if kind == "free" and thread == here]
        assert [first[name] for name in freed_here] == [10 << 20] * (n + 1)  # (just one more before each)
    assert {thread for thread, kind, _ in seen} == {here}
    rest = [name for _, kind, name in seen[writes[-1]:] if kind == "free"]
    assert rest and all(first[name] < 1 << 20 for name in rest)  # (the small files, once written)
    second = moved_beside(tmp_path)
    assert sorted(v for v in second.values() if v >= 1 << 20) == [10 << 20, 10 << 20]
    assert not set(second) & set(first)
    assert float(CX(tmp_path).load("p", verify="full")["b"].w_[0]) == 4.0


@pytest.mark.parametrize("written_back", ["all", "the biggest"])
def test_data_the_disk_is_writing_back_is_freed_by_the_background_thread(tmp_path, monkeypatch, written_back):
    """Deleting pages the disk is writing back waits for the disk: those files are left to
    the background thread, the others freed by the save as it writes."""
    from stepline.saving import pagecache
    save(big(1.0), tmp_path)
    save(big(2.0), tmp_path)
    first = moved_beside(tmp_path)
    waiting = set(first) if written_back == "all" else {max(first, key=first.get)}
    real = pagecache.freed_without_waiting
    monkeypatch.setattr(pagecache, "freed_without_waiting",  # (what the kernel says of files it is writing back)
                        lambda fd, name: name not in waiting and real(fd, name))
    seen = _frees_and_writes(tmp_path, big(3.0))
    assert sorted(name for _, kind, name in seen if kind == "free") == sorted(first)
    background = {name for thread, kind, name in seen if kind == "free" and thread.startswith("stepline-cleanup")}
    assert background == waiting
    first_write = next(i for i, (_, kind, _) in enumerate(seen) if kind == "write")
    here = [(i, name) for i, (thread, kind, name) in enumerate(seen) if kind == "free" and thread == "MainThread"]
    assert {name for _, name in here} | background == set(first) and not {name for _, name in here} & waiting
    big_here = [i for i, name in here if first[name] >= 1 << 20]
    assert big_here == ([] if written_back == "all" else [big_here[0]]) and all(i < first_write for i in big_here)
    assert float(CX(tmp_path).load("p", verify="full")["a"].w_[0]) == 3.0


def test_a_changes_only_save_leaves_it_to_the_background_thread(tmp_path):
    """A changes-only save writes only what changed: it needs none of those pages, and
    deleting them on its thread would cost it more than its own work."""
    save(big(1.0), tmp_path)
    p = big(2.0)
    save(p, tmp_path)
    first = moved_beside(tmp_path)
    p["a"].value = 3.0
    p["a"].fit(X)  # ("a" changed: refitted)
    seen = []
    _HOOK[:] = [lambda event, args: event == "os.remove" and str(args[0]).startswith(".moved-")
                and seen.append(threading.current_thread().name)]
    try:
        p.save(CX(tmp_path))  # (changes only: "a" changed)
        wait_for_cleanup()
    finally:
        _HOOK[:] = []
    assert len(seen) == len(first) and all(thread.startswith("stepline-cleanup") for thread in seen)
    assert float(CX(tmp_path).load("p", verify="full")["a"].w_[0]) == 3.0


def test_a_load_frees_it_too_if_it_comes_first(tmp_path):
    """Whichever of the next save or load of the destination comes first frees the data
    (its arrays then take the pages it frees); loading needs no disk, so it never waits."""
    save(big(1.0), tmp_path)
    save(big(2.0), tmp_path)
    assert moved_beside(tmp_path)
    loaded = CX(tmp_path).load("p")
    wait_for_cleanup()
    assert moved_beside(tmp_path) == {}
    assert float(loaded["b"].w_[0]) == 3.0
    save(big(3.0), tmp_path)  # nothing left to free: the save goes on as after a first save
    assert float(CX(tmp_path).load("p", verify="full")["a"].w_[0]) == 3.0


def test_what_is_beside_something_else_named_like_the_spare_is_never_freed(tmp_path):
    theirs = tmp_path / ".p.spare"
    theirs.mkdir()
    (theirs / ".moved-0123456789abcdef").write_bytes(b"mine")  # not a spare: no dump's root manifest
    save(big(1.0, mib=1), tmp_path)
    save(big(2.0, mib=1), tmp_path)
    CX(tmp_path).load("p")
    wait_for_cleanup()
    assert (theirs / ".moved-0123456789abcdef").read_bytes() == b"mine"


def test_no_data_is_kept_beside_the_spare_where_the_disk_lacks_room_for_it(tmp_path, monkeypatch):
    from stepline.saving import spare
    monkeypatch.setattr(spare, "KEEP_DATA_IF_FREE", 1e12)  # (no disk has that much free)
    save(big(1.0), tmp_path)
    save(big(2.0), tmp_path)
    assert moved_beside(tmp_path) == {}
    assert float(CX(tmp_path).load("p")["a"].w_[0]) == 2.0


def test_nor_small_data(tmp_path):
    save(big(1.0, mib=1), tmp_path)  # 2 MiB in all: under KEEP_DATA_MIN_BYTES
    save(big(2.0, mib=1), tmp_path)
    assert moved_beside(tmp_path) == {}


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs (needs the right to mount: skipped elsewhere)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield folder
    finally:
        wait_for_cleanup()
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_save_where_the_kept_data_leaves_too_little_room_waits_for_it_to_be_freed(small_disk, monkeypatch):
    from stepline.saving import spare
    monkeypatch.setattr(spare, "KEEP_DATA_IF_FREE", 1.0)
    save(big(1.0), small_disk)  # 20 MiB
    save(big(2.0), small_disk)  # 20 more; the first 20 kept beside the spare: 24 MiB free
    assert 20 << 20 <= sum(moved_beside(small_disk).values()) < 21 << 20
    (small_disk / "other-file").write_bytes(b"x" * (12 << 20))  # something else fills the disk: 12 MiB free
    from stepline.saving.removal import run_in_background
    busy = threading.Event()
    run_in_background(small_disk / ".busy", lambda _: busy.wait(1))  # the background thread is busy for 1 s
    save(big(3.0), small_disk)  # needs 20 MiB: it must wait until the kept data is freed (else: disk full)
    assert float(CX(small_disk).load("p", verify="full")["b"].w_[0]) == 4.0
