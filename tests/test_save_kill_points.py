"""A save killed at *any* file-system operation leaves a dump that loads whole, old or new.

A forked process runs the save with every operation that changes the file system
patched to count itself (``os.rename``/``replace``/``link``/``unlink``/``rmdir``/
``mkdir``/``utime``, the atomic exchange, opening a file for writing and each write);
the run that reaches operation *k* ends with ``os._exit`` right there (a write is cut
half-way). A first run counts the operations; then every *k* from 1 to that count is
killed in turn, and after each the parent loads the dump and checks it is the previous
one or the new one, whole, with nothing of the other mixed in. A changes-only save
commits through a journal: kills after its commit are finished by that load.
"""
import builtins
import io
import os
import shutil

import numpy as np
import pytest

from stepline import CX, Pipeline
from stepline.base import BaseStep
from stepline.saving import atomic
from stepline.steps.numpy import AddN, MultiplyByN

X = np.arange(4.0)
pytestmark = [pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork"),
              pytest.mark.filterwarnings("ignore::stepline.saving.errors.InterruptedSaveWarning")]


class Offset(BaseStep):
    """Adds a fitted 32 KiB array (stored out of band, as its own buffer file)."""

    def __init__(self, value=0.0, name=None):
        super().__init__(name=name)
        self.value = value

    def fit(self, data_inputs, expected_outputs=None):
        self.offset_ = np.full(8192, self.value, dtype=np.float32) * 1.0
        self.offset_ = self.offset_.astype(np.float64)  # 64 KiB: out of band
        return self

    def transform(self, data_inputs):
        return np.asarray(data_inputs) + self.offset_[: len(data_inputs)]


def build(m, a, offset):
    p = Pipeline([("m", MultiplyByN(m)), ("inner", Pipeline([("o", Offset(offset)), ("a", AddN(a))]))],
                 name="p")
    return p.fit(X)


def expected(m, a, offset):
    return X * m + offset + a


class _Killer:
    """Counts file-system operations; ``os._exit`` at operation ``kill_at``."""

    def __init__(self, kill_at: int, count_file: str, raw: bool = False):
        self.kill_at, self.count_file, self.count, self.raw = kill_at, count_file, 0, raw

    def tick(self, cut=None):
        self.count += 1
        if self.count == self.kill_at:
            if cut is not None:
                cut()
            os._exit(17)

    def install(self):
        for name in ("rename", "replace", "link", "unlink", "remove", "rmdir", "mkdir", "utime", "symlink", "ftruncate"):
            setattr(os, name, self._counted(getattr(os, name)))
        atomic.exchange_paths = self._counted(atomic.exchange_paths)
        real_open = io.open

        def counted_open(file, mode="r", *args, **kwargs):
            if not any(c in mode for c in "wax+"):
                return real_open(file, mode, *args, **kwargs)
            self.tick()
            return _CountedFile(real_open(file, mode, *args, **kwargs), self)

        builtins.open = io.open = counted_open
        if self.raw:  # also files written through descriptors (manifests, by the writer thread too)
            self._count_raw_writes()

    def _count_raw_writes(self):
        real_open, real_write = os.open, os.write

        def counted_os_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                self.tick()
            return real_open(path, flags, *args, **kwargs)

        def counted_os_write(fd, data):
            self.tick(cut=lambda: real_write(fd, bytes(data)[: len(data) // 2]))
            return real_write(fd, data)
        os.open, os.write = counted_os_open, counted_os_write

    def _counted(self, function):
        def counted(*args, **kwargs):
            self.tick()
            return function(*args, **kwargs)
        return counted

    def report(self):
        with open(self.count_file, "w") as f:  # after install: count it too, harmlessly
            f.write(str(self.count))


class _CountedFile:
    def __init__(self, f, killer):
        self._f, self._killer = f, killer

    def write(self, data):
        self._killer.tick(cut=lambda: self._f.write(data[: len(data) // 2]) and self._f.flush())
        return self._f.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._f, name)


def _run_killed(save, kill_at: int, count_file, raw: bool = False) -> int:
    """Fork; in the child run ``save()`` with the killer installed; return the exit status."""
    pid = os.fork()
    if pid == 0:
        try:
            killer = _Killer(kill_at, str(count_file), raw)
            killer.install()
            save()
            atomic.wait_for_cleanup()  # the replaced dump's deletion (a background thread) counts too, always
            killer.kill_at = -1
            killer.report()
        except BaseException:
            import traceback
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _enumerate_kill_points(tmp_path, old, new_save, raw: bool = False, with_spare: bool = False,
                           spare_holds_data: bool = False):
    """Kill ``new_save`` at every operation; after each, the dump is ``old`` or the new one.
    ``raw``: also at each ``os.open`` for writing and each ``os.write``. ``with_spare``: the
    destination also holds the spare tree of an earlier dump (other steps, other values),
    which a full save rebuilds in place; ``spare_holds_data``: and, beside it, that dump's
    data, which the save frees as it starts."""
    count_file, root, pristine = tmp_path / "count", tmp_path / "root", tmp_path / "pristine"
    if with_spare:
        _earlier().save(CX(root), full_dump=True)
    old_pipeline = build(*old)
    old_pipeline.save(CX(root), full_dump=True)
    atomic.wait_for_cleanup()
    kept = [n for n in (".p.spare", "p") if (root / n).exists()]
    assert (".p.spare" in kept) == with_spare
    held = [n for n in os.listdir(root / ".p.spare") if n.startswith(".moved-")] if with_spare else []
    assert bool(held) == spare_holds_data
    for name in kept:  # same bytes, same digests: old_pipeline's records hold
        shutil.copytree(root / name, pristine / name)

    def reset():
        atomic.wait_for_cleanup()  # (the check's load hands a spare's data to this process's background thread)
        for name in os.listdir(root):
            if name not in (".p.lock", ".p.turn"):
                shutil.rmtree(root / name) if (root / name).is_dir() else os.unlink(root / name)
        for name in kept:
            shutil.copytree(pristine / name, root / name)

    spare_inode = os.stat(root / ".p.spare" / "p" / "inner").st_ino if with_spare else None
    assert _run_killed(lambda: new_save(old_pipeline), 0, count_file, raw) == 0
    total = int(count_file.read_text())
    if with_spare:  # the save rebuilt the spare's folders in place
        assert os.stat(root / "p" / "inner").st_ino == spare_inode
        assert sorted(os.listdir(root / "p")) == ["inner", "m", "stepline.json", "stepline.sig"]
    assert total > 12  # the enumeration covers a real save, not a no-op
    outcomes, recovered = [], []
    for kill_at in range(1, total + 1):
        reset()
        status = _run_killed(lambda: new_save(old_pipeline), kill_at, count_file, raw)
        assert status in (17, 0), f"operation {kill_at}: the save failed instead of being killed ({status})"
        recovered.append((root / ".p.journal").exists())  # killed after the commit: the load finishes it
        out = CX(root).load("p", verify="full").transform(X)
        outcomes.append("old" if np.array_equal(out, expected(*old)) else "new")
        assert outcomes[-1] == "old" or np.array_equal(out, new_save.expected), f"operation {kill_at}: mixed dump"
        leftovers = [n for n in os.listdir(root) if n.startswith(".p.") and n not in (".p.lock", ".p.turn", ".p.spare")]
        assert all(n.startswith((".p.tmp-", ".p.journal.tmp-")) for n in leftovers), leftovers
    assert "old" in outcomes and "new" in outcomes  # kill points on both sides of the commit
    build(*old).save(CX(root), full_dump=True)  # the next save cleans what the last kill left
    atomic.wait_for_cleanup()
    assert sorted(n for n in os.listdir(root) if n.startswith(".p")) in ([".p.lock", ".p.turn"],
                                                                          [".p.lock", ".p.spare", ".p.turn"])
    return total, any(recovered)


def _earlier():
    """An earlier dump of ``p`` with other steps and files: its spare has folders the next
    save must remove (``old``, ``inner/gone``) and lacks one it must create (``inner/a``)."""
    p = Pipeline([("m", MultiplyByN(3)), ("old", AddN(1)),
                  ("inner", Pipeline([("o", Offset(9.0)), ("gone", Offset(8.0))]))], name="p")
    return p.fit(X)


def test_a_full_save_killed_at_every_operation_leaves_a_whole_dump(tmp_path):
    def new_save(_old):
        build(5, 7, 3.0).save(CX(tmp_path / "root"), full_dump=True)
    new_save.expected = expected(5, 7, 3.0)
    _enumerate_kill_points(tmp_path, (2, 1, 1.0), new_save)


def test_a_full_save_rebuilding_the_spare_tree_killed_at_every_operation_leaves_a_whole_dump(tmp_path):
    def new_save(_old):
        build(5, 7, 3.0).save(CX(tmp_path / "root"), full_dump=True)
    new_save.expected = expected(5, 7, 3.0)
    _enumerate_kill_points(tmp_path, (2, 1, 1.0), new_save, with_spare=True)


def test_a_full_save_over_a_spare_holding_the_data_it_kept_killed_at_every_operation_leaves_a_whole_dump(
        tmp_path, monkeypatch):
    """The same where the spare also holds the data of the dump it replaced (moved out of its
    tree), which the save frees as it starts (``spare.release_data``): kept whatever its size here."""
    from stepline.saving import spare
    monkeypatch.setattr(spare, "KEEP_DATA_MIN_BYTES", 0)

    def new_save(_old):
        build(5, 7, 3.0).save(CX(tmp_path / "root"), full_dump=True)
    new_save.expected = expected(5, 7, 3.0)
    _enumerate_kill_points(tmp_path, (2, 1, 1.0), new_save, with_spare=True, spare_holds_data=True)


def test_a_changes_only_save_killed_at_every_operation_leaves_a_whole_dump(tmp_path):
    def new_save(old):
        old["inner"]["a"].set_hyperparams({"add": 9})
        old["inner"]["o"].value = 4.0
        old["inner"]["o"].fit(X)
        old.save(CX(tmp_path / "root"))
    new_save.expected = expected(2, 9, 4.0)
    _, recovered = _enumerate_kill_points(tmp_path, (2, 1, 1.0), new_save)
    assert recovered  # some kill points fall between the journal's commit and its end


def test_a_full_save_through_the_writer_thread_killed_at_every_operation_leaves_a_whole_dump(tmp_path, monkeypatch):
    """The same with the manifests created by the writer thread (a big save's; here every
    save's), counting each manifest's creation and write too: a kill on either thread;
    into a fresh staged tree and into the spare tree rebuilt in place."""
    from stepline.saving import writer
    monkeypatch.setattr(writer, "MIN_STEPS", 1)  # (the forked saves inherit it)

    for base, with_spare in ((tmp_path / "fresh", False), (tmp_path / "spare", True)):
        def new_save(_old, root=base / "root"):
            build(5, 7, 3.0).save(CX(root), full_dump=True)
        new_save.expected = expected(5, 7, 3.0)
        _enumerate_kill_points(base, (2, 1, 1.0), new_save, raw=True, with_spare=with_spare)


def test_a_fallback_save_killed_between_its_two_renames_still_loads(tmp_path, monkeypatch):
    """Where RENAME_EXCHANGE is missing, the old dump steps aside first; a load puts it back."""
    monkeypatch.setattr(atomic, "exchange_paths", lambda a, b: False)
    build(2, 1, 1.0).save(CX(tmp_path), full_dump=True)
    real_rename = os.rename

    def rename_then_die(src, dst):
        real_rename(src, dst)
        if ".p.old-" in str(dst):
            raise KeyboardInterrupt  # as if killed right after moving the old dump aside
    monkeypatch.setattr(os, "rename", rename_then_die)
    with pytest.raises(KeyboardInterrupt):
        build(5, 7, 3.0).save(CX(tmp_path), full_dump=True)
    monkeypatch.setattr(os, "rename", real_rename)
    assert not (tmp_path / "p").exists()
    with pytest.warns(UserWarning, match="interrupted"):
        out = CX(tmp_path).load("p").transform(X)
    np.testing.assert_array_equal(out, expected(2, 1, 1.0))
    assert (tmp_path / "p").is_dir()
