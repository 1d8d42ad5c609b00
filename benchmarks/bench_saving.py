"""Saving and loading: one huge pipeline and many tiny steps, against their peers, in one run.

Rows (issue 14; medians over repeats, each peer measured in the same run):
  - full dump of ~1 GiB of float32 in 4 fitted steps vs ``np.save`` of the same arrays
    (the physical floor), ``np.save`` done atomically (into a new folder renamed into
    place, the old one deleted after: what any save that keeps the previous dump whole
    until it is replaced costs), ``joblib.dump`` and ``pickle`` protocol 5. None of them
    fsyncs. Medians of 7 runs at least (a 1 GiB save swings 0.25-1.5 s with write-back);
    then stepline and ``np.save`` again, each run 3 s after the last (this VM has handed the
    memory freed meanwhile back to its host: not a row, printed to show what a save after a
    pause costs);
  - its load with the stat cache warm vs ``np.load``; the same load with every byte read
    and hashed (``verify="full"``, back to back), also vs reading the same bytes and hashing
    them on one thread with no stepline (what a verify costs whose hash does not overlap
    its read); the first load of a *copied* dump (new inodes: no stat cache, every byte
    verified) vs ``np.load`` (warm: the issue's peer) and, in the same position (right
    after a copy of its own, one candidate per copy, in a set state of memory: held by the
    guest, or returned to the host; see ``copied_rows``), vs ``np.load`` of a fresh copy and
    vs merely filling fresh arrays of the same sizes (no file at all: what this VM charges
    for memory); the same first load with ``mmap_mode="c"`` (every byte still hashed, the
    arrays copy-on-write maps of the page cache, so no fresh memory). ``--only-copied``
    runs these rows alone (5 runs of each candidate in each state: ~2 min at 256 MiB,
    ~7 min at 1024, most of it copies and the 3 s pauses);
  - full save of 10 and of 1000 tiny fitted steps (``MultiplyByN``) over the destination's
    previous dump (a loop of saves: each rebuilds the spare tree, the folders and manifests
    of the dump before, in place) vs ``joblib.dump`` over its file; the same saved to a new
    destination each time (a first save: every folder and file new; the 1000 also with the
    writer thread's other setting) vs ``joblib.dump`` to a new file; load of the 1000 vs
    ``joblib.load``;
  - changes-only save of 1 changed step in a 100-step and a 1000-step pipeline;
  - the floors, the file-system work alone with no pickling, hashing or JSON: a folder and
    one small file per step (format 3: a tiny step's pickle is inline in its manifest)
    written new; the same folders listed and their file overwritten in place (a rebuild of
    the spare tree); for the load, that file of each step read back;
  - the cost of the Merkle root (issue 11) on a 10-step pipeline: reading and hashing the
    manifests whose digests the parents list (what a save and a load add for it).

Each candidate of the other rows runs its repeats back to back after a warm-up: on VMs that
hand freed memory back to the host, interleaving them makes each pay for the others' page
faults. Each save candidate starts from a clean page cache (``os.sync``: no dirty page
another left behind is written back during its runs; before this, ``np.save`` ran while
the disk wrote stepline's last dumps, and looked slower than it is), and the run prints how
much each kept dirty against the kernel's background write-back threshold, and how much the
disk wrote back meanwhile (``_writeback.py``): any save that keeps the previous dump whole
until it is replaced holds two of them, 2 GiB at 1 GiB, which on a 24 GiB machine is the
threshold itself.

    python benchmarks/bench_saving.py [--size-mb 1024] [--steps 4] [--repeats 3] [--tiny 1000] [--only-tiny | --only-copied]
"""
from __future__ import annotations

import argparse
import gc
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import joblib
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _timing import fmt_seconds, median_time, print_table  # noqa: E402
from _writeback import DirtyPeak, describe, settle  # noqa: E402

from stepline import CX, Pipeline  # noqa: E402
from stepline.base import BaseStep  # noqa: E402
from stepline.saving.manifest import root_digest  # noqa: E402
from stepline.steps.numpy import MultiplyByN  # noqa: E402


class Fitted(BaseStep):
    """A fitted step holding one big float32 array."""

    def __init__(self, n_floats=0, name=None):
        super().__init__(hyperparams={"n_floats": n_floats}, name=name)

    def fit(self, data_inputs, expected_outputs=None):
        self.weights_ = np.random.default_rng(0).random(self.hyperparams["n_floats"], dtype=np.float32)
        return self

    def transform(self, data_inputs):
        return data_inputs


def build(size_mb: int, steps: int) -> Pipeline:
    n = size_mb * 2**20 // 4 // steps
    big = [(f"big{i}", Fitted(n)) for i in range(steps)]
    return Pipeline(big + [("small", Fitted(16))], name="bench").fit(None)


def tiny(n: int) -> Pipeline:
    """``n`` tiny fitted steps (``MultiplyByN``, changed by setting a hyperparameter)."""
    p = Pipeline([(f"m{i}", MultiplyByN(2)) for i in range(n)], name="tiny")
    for step in p.values():
        step.set_hyperparams({"multiply_by": 3})
    return p


def fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


#: np.load of a copy made the way the copied dump is (copy + sync right before each load): on
#: VMs that hand freed memory back to the host, the pause makes any loader fault fresh pages in.
COPY_PEER = "np.load of a fresh copy"
#: Filling fresh arrays of the dump's sizes after the same copy + sync: no file read at all.
MEMORY_PEER = "fresh arrays after the same pause"
#: np.save into a new folder that then replaces the previous one (rename), which is then deleted.
ATOMIC_PEER = "np.save, atomically"
#: The first load of a copied dump, every byte hashed, arrays mapped copy-on-write (no fresh memory).
COPY_MAPPED = "stepline first load of a copied dump, mmap_mode='c'"
#: Repeats of the big save rows at least (each median over this many runs after a warm-up).
SAVE_REPEATS = 7
#: Repeats of the big load rows (but the copied dump's) at least: a warm 1 GiB load takes
#: 0.09 s, and one run in four or five took 0.25-0.65 s, np.load's as stepline's (the VM's
#: memory); of 3, the median was now and then one of those.
LOAD_REPEATS = 7
#: A full dump, then np.save, each ``RETURN_PAUSE_S`` after its previous run (memory returned to the host).
PAUSED_SAVE, PAUSED_PEER = "stepline full dump, 3 s after the last", "np.save (floor), 3 s after the last"
#: A load that reads and hashes every byte (no stat cache), back to back: no pause.
FULL_VERIFY = "stepline load, verify='full'"
#: The same files read into fresh arrays and hashed (BLAKE3) on one thread, 1 MiB at a time,
#: no stepline: what a verify costs that does not overlap the hash with the read.
SERIAL_HASH_PEER = "read + BLAKE3 on one thread, no stepline"


def big_rows(base: Path, size_mb: int, steps: int, r: int):
    pipeline = build(size_mb, steps)
    arrays = [s.weights_ for s in pipeline.values()]
    ours, raw, jl, pk, atomic = base / "ours", base / "raw", base / "joblib", base / "pickle", base / "atomic"

    def save_raw():
        fresh(raw)
        for i, a in enumerate(arrays):
            np.save(raw / f"{i}.npy", a)

    def save_raw_atomically():
        new, old = fresh(base / "atomic-new"), base / "atomic-old"
        for i, a in enumerate(arrays):
            np.save(new / f"{i}.npy", a)
        if atomic.exists():
            atomic.rename(old)
        new.rename(atomic)
        shutil.rmtree(old, ignore_errors=True)

    def save_joblib():
        joblib.dump(pipeline, fresh(jl) / "p.joblib")

    def save_pickle():
        with open(fresh(pk) / "p.pkl", "wb") as f:
            pickle.dump(pipeline, f, protocol=5)

    rs = max(r, SAVE_REPEATS)  # (a 1 GiB save swings 0.25-1.5 s with the VM's write-back: more repeats)
    saves = [(label, _settled(label, lambda: median_time(fn, rs))) for label, fn in [
        ("stepline full dump", lambda: pipeline.save(CX(ours), full_dump=True)),
        ("np.save (floor)", save_raw), (ATOMIC_PEER, save_raw_atomically), ("joblib.dump", save_joblib),
        ("pickle protocol 5", save_pickle)]]
    saves += [(PAUSED_SAVE, _settled(PAUSED_SAVE, lambda: _median_after_pause(
                  lambda: pipeline.save(CX(ours), full_dump=True), rs))),
              (PAUSED_PEER, _settled(PAUSED_PEER, lambda: _median_after_pause(save_raw, rs)))]
    settle()  # (the loads start with nothing the saves left dirty)

    def load_raw():
        return [np.load(raw / f"{i}.npy") for i in range(len(arrays))]

    def read_and_hash_serially():
        return [_read_hashing(raw / f"{i}.npy") for i in range(len(arrays))]

    after_copy = copied_rows(ours, raw, arrays, base, max(r, 5))
    rl = max(r, LOAD_REPEATS)
    loads = [("stepline load, stat cache warm", median_time(lambda: CX(ours).load("bench"), rl)),
             (FULL_VERIFY, median_time(lambda: CX(ours).load("bench", verify="full"), rl)),
             (SERIAL_HASH_PEER, median_time(read_and_hash_serially, rl)),
             *after_copy,
             ("np.load (floor)", median_time(load_raw, rl)),
             ("joblib.load", median_time(lambda: joblib.load(jl / "p.joblib"), rl)),
             ("stepline load, mmap_mode='r'", median_time(lambda: CX(ours).load("bench", mmap_mode="r"), rl))]
    loaded = CX(ours).load("bench")
    assert all(np.array_equal(a, b.weights_) for a, b in zip(arrays, loaded.values()))
    return saves, loads


#: Per save candidate, the most bytes of dirty page cache seen during its runs (``_writeback``).
DIRTY_PEAKS: dict = {}


def _settled(label: str, measure):
    """``measure()`` from a clean page cache (``settle``: no other candidate's dirty pages
    left to be written back during its runs), noting the peak of dirty pages it reached."""
    settle()
    with DirtyPeak() as peak:
        result = measure()
    DIRTY_PEAKS[label] = peak.peak
    return result


def _median_after_pause(save, r: int) -> float:
    """Median seconds of ``save()`` run ``RETURN_PAUSE_S`` after the previous one ended (after
    one warm-up): by then this VM has handed the memory freed meanwhile back to its host."""
    save()
    runs = []
    for _ in range(r):
        time.sleep(RETURN_PAUSE_S)
        start = time.perf_counter()
        save()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def _read_hashing(path: Path, chunk: int = 1 << 20):
    """The file in a fresh array, each chunk hashed (BLAKE3, one thread) right after it is read."""
    import blake3
    out = np.empty(os.path.getsize(path), np.uint8)
    view, digest, done = memoryview(out), blake3.blake3(), 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view[done:done + chunk]):
            digest.update(view[done:done + n])
            done += n
    return out, digest.hexdigest()


#: The first load of a copied dump (new inodes: no stat cache, every byte read and hashed).
COPY_LOAD = "stepline first load of a copied dump"
#: How long freed memory stays with this VM's guest before the kernel reports it to the host
#: (free page reporting, virtio-balloon: 2 s after it is freed), with a margin.
RETURN_PAUSE_S = 3.0
#: The two states of memory a first-after-copy run starts in (see ``copied_rows``).
HELD, RETURNED = "memory held", "memory returned"
#: Seconds of each first-after-copy run, per (candidate, state), in the order run.
FIRST_AFTER_COPY: dict = {}


def copied_rows(ours: Path, raw: Path, arrays, base: Path, each: int) -> list[tuple[str, float]]:
    """Median seconds of the copied-dump load and its peers, each measured in the same position.

    Every run copies the dump and the peer's ``.npy`` files afresh (new inodes: no stat cache
    vouches for them), flushes the copies (``os.sync``: their write-back is not the load's to
    pay for), with what the previous run held freed, sets the state of memory, then runs
    **one** candidate; the candidates take turns, ``each`` runs apiece in each state, after
    one warm-up run each. (Several candidates after one copy measure their order as much as
    themselves.)

    The state of memory is set, not left to chance (see :func:`first_after_copy`): this VM
    hands memory that has been free for 2 s back to its host (free page reporting), and a
    GiB faulted in again from the host costs 1-2 s against ~0.1 s for memory the guest holds.
    """
    copied, copied_raw = base / "copied", base / "copied-raw"
    nbytes = sum(a.nbytes for a in arrays)

    def remove_copies() -> None:
        for folder in (copied, copied_raw):
            shutil.rmtree(folder, ignore_errors=True)

    def copy_both() -> None:  # the dump as it travels (its folder, not the spare beside it), and the .npy files
        shutil.copytree(ours / "bench", copied / "bench")
        shutil.copytree(raw, copied_raw)

    candidates = [
        (COPY_LOAD, lambda: CX(copied).load("bench")),
        (COPY_MAPPED, lambda: CX(copied).load("bench", mmap_mode="c")),
        (COPY_PEER, lambda: [np.load(copied_raw / f"{i}.npy") for i in range(len(arrays))]),
        (MEMORY_PEER, lambda: [np.ones(a.shape, a.dtype) for a in arrays]),  # no file read at all
    ]
    for _, load in candidates:  # warm-up (imports, the first calls' caches)
        first_after_copy(remove_copies, copy_both, HELD, nbytes, load)
    FIRST_AFTER_COPY.clear()
    for turn in range(len(candidates) * each):
        label, load = candidates[turn % len(candidates)]
        for state in (HELD, RETURNED):
            seconds = first_after_copy(remove_copies, copy_both, state, nbytes, load)
            FIRST_AFTER_COPY.setdefault((label, state), []).append(seconds)
    return [(copied_label(label, state), statistics.median(values))
            for (label, state), values in sorted(FIRST_AFTER_COPY.items(), key=lambda kv: kv[0][1])]


def copied_label(label: str, state: str) -> str:
    return f"{label}, {state}"


def first_after_copy(remove, copy, state: str, nbytes: int, load) -> float:
    """Seconds of ``load()`` right after ``copy()`` and ``os.sync``, in a set state of memory;
    what it returned is freed before this returns.

    ``memory held`` (what a machine without a balloon gives any loader): ``RETURN_PAUSE_S``
    after everything earlier was freed (``remove()``: the old copies' page cache; the
    previous run's arrays), so that no report of it falls in the run, the copy is made, and
    a scratch array of ``nbytes`` is filled and freed right before the load, which then gets
    memory the guest holds. ``memory returned``: the load starts ``RETURN_PAUSE_S`` after
    the copy, when everything freed is back with the host.
    """
    gc.collect()
    remove()
    if state == HELD:
        time.sleep(RETURN_PAUSE_S)
    copy()
    os.sync()
    if state == HELD:
        np.ones(nbytes, np.uint8)  # (freed at once: the memory stays with the guest for 2 s)
    else:
        time.sleep(RETURN_PAUSE_S)
    start = time.perf_counter()
    result = load()
    seconds = time.perf_counter() - start
    del result
    gc.collect()
    return seconds


def tiny_rows(base: Path, n_big: int, r: int):
    """The tiny-step rows: ``(rows, changes, floors)``. A full save over the destination's
    previous dump (what a loop of saves does: after the second, each rebuilds the spare tree
    in place, :mod:`stepline.saving.spare`), and a first save to a new destination each
    time, against ``joblib.dump`` over its file and to a new file; the layout's floors."""
    r = max(r, 7)  # (each takes milliseconds)
    rows = []
    for n in (10, n_big):
        p = tiny(n)
        folder, jl = base / f"tiny{n}", base / f"tiny{n}.joblib"
        p.save(CX(folder), full_dump=True)  # (the warm-up's save then has a dump to replace: a spare after it)
        rows.append((f"full save, {n} tiny steps", median_time(lambda: p.save(CX(folder), full_dump=True), r),
                     median_time(lambda: joblib.dump(p, jl), r), "joblib.dump"))
    floors = {f"new {n}": median_time(lambda: _layout_floor(base / "floor", n + 1), r) for n in (10, n_big)}
    for n in (10, n_big):
        rebuilt = _layout_floor(base / "floor-rebuilt", n + 1)
        floors[f"again {n}"] = median_time(lambda: _rebuild_floor(rebuilt), r)
    folder, jl = base / f"tiny{n_big}", base / f"tiny{n_big}.joblib"
    rows.append((f"load, {n_big} tiny steps", median_time(lambda: CX(folder).load("tiny"), r),
                 median_time(lambda: joblib.load(jl), r), "joblib.load"))
    written = _layout_floor(base / "floor-read", n_big + 1)
    floors[f"load {n_big}"] = median_time(lambda: _read_floor(written), r)
    changes = []
    for n in (100, n_big):
        p = tiny(n)
        folder = base / f"changes{n}"
        p.save(CX(folder), full_dump=True)
        values = iter(range(10, 10 ** 9))

        def change_one_and_save():
            p[f"m{n // 2}"].set_hyperparams({"multiply_by": next(values)})
            p.save(CX(folder))

        changes.append((f"changes-only save, 1 of {n} steps changed", median_time(change_one_and_save, max(r, 5))))
        assert CX(folder).load("tiny")[f"m{n // 2}"].hyperparams["multiply_by"] == next(values) - 1
    for n in (10, n_big):  # (last, and kept until the end: deleting thousands of folders makes the next
        # allocations on a journal-less ext4 walk past every inode freed (docs/saving.md, eighth round)
        rows.append(_to_new_destinations(base, tiny(n), f"full save, {n} tiny steps, new destination", r))
    rows.append(_with_writer_thread(base, n_big, r))
    return rows, changes, floors


def _to_new_destinations(base: Path, p: Pipeline, label: str, r: int):
    """``p`` saved to a new folder each time (a first save: nothing to replace, no spare)
    against ``joblib.dump`` to a new file each time."""
    runs = iter(range(10 ** 9))
    ours = median_time(lambda: p.save(CX(base / "new" / str(next(runs))), full_dump=True), r)
    peer = median_time(lambda: joblib.dump(p, base / "new" / f"{next(runs)}.joblib"), r)
    return label, ours, peer, "joblib.dump, new file"


def _with_writer_thread(base: Path, n: int, r: int):
    """The ``n``-step first save to new destinations with the writer thread's setting the
    default does not use (``stepline.saving.writer.MIN_STEPS``: a save into a new tree of
    ``n`` steps from 200 on hands its manifests to the writer thread)."""
    from stepline.saving import writer
    default = writer.MIN_STEPS
    uses_it = default is not None and n >= default
    writer.MIN_STEPS = None if uses_it else 1
    try:
        how = "no writer thread" if uses_it else "writer thread"
        return _to_new_destinations(base, tiny(n), f"full save, {n} tiny steps, new destination, {how}", r)
    finally:
        writer.MIN_STEPS = default


_floor_runs = iter(range(10 ** 9))
#: The files of a tiny step's folder, and their sizes (format 3: the pickle inline in the manifest).
LAYOUT = {"stepline.json": 1080}


def _layout_floor(folder: Path, n: int, layout: dict = LAYOUT) -> Path:
    """mkdir + the small files of ``layout`` per step into a fresh folder: the file-system
    operations a save of this layout into a new tree needs, with no pickling, hashing, JSON
    or deletion of the previous copy (a save hands that to a background thread)."""
    tmp = folder.with_name(f"{folder.name}-{next(_floor_runs)}")
    tmp.mkdir(parents=True)
    for i in range(n):
        step = tmp / f"m{i}"
        step.mkdir()
        for name, size in layout.items():
            (step / name).write_bytes(b"x" * size)
    return tmp


def _rebuild_floor(folder: Path, layout: dict = LAYOUT) -> None:
    """Per step folder that :func:`_layout_floor` wrote: list it and overwrite its small files
    in place — the file-system operations a save that rebuilds the spare tree needs."""
    for i in range(sum(1 for _ in os.scandir(folder))):
        step = os.path.join(folder, f"m{i}")
        with os.scandir(step) as entries:
            list(entries)
        for name, size in layout.items():
            fd = os.open(os.path.join(step, name), os.O_WRONLY)
            os.write(fd, b"y" * size)
            os.close(fd)


def _read_floor(folder: Path, layout: dict = LAYOUT) -> None:
    """Read the small files of each step folder that :func:`_layout_floor` wrote: the
    file-system work any load of this layout needs, with no parsing, hashing or unpickling."""
    for i in range(sum(1 for _ in os.scandir(folder))):
        step = os.path.join(folder, f"m{i}")
        for name in layout:
            with open(os.path.join(step, name), "rb") as f:
                f.read()


def merkle_row(base: Path, r: int) -> float:
    """Seconds to read and hash the 10 manifests a 10-step pipeline's Merkle root covers."""
    p = tiny(10)
    p.save(CX(base / "merkle"), full_dump=True)
    folders = [base / "merkle" / "tiny"] + [base / "merkle" / "tiny" / name for name in p.keys()]
    return median_time(lambda: [root_digest(f) for f in folders], max(r, 20))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", type=int, default=1000, help="steps of the big tiny-step pipeline")
    parser.add_argument("--only-tiny", action="store_true", help="only the tiny-step, changes-only and Merkle rows")
    parser.add_argument("--only-copied", action="store_true",
                        help="only the copied-dump rows (5 runs each right after a copy), with np.load")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="stepline-bench-saving-"))
    r = args.repeats
    if args.only_copied:
        return _main_copied(base, args)
    try:
        saves, loads = ([], []) if args.only_tiny else big_rows(base, args.size_mb, args.steps, r)
        tiny_table, changes, floors = tiny_rows(base, args.tiny, r)
        merkle = merkle_row(base, r)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"machine: {os.cpu_count()} cores; medians of {r} repeats (big saves: of {max(r, SAVE_REPEATS)}; "
          f"big loads: of {max(r, LOAD_REPEATS)}; changes-only: of {max(r, 5)})")
    if saves:
        print(f"\n{args.steps} fitted steps holding {args.size_mb} MiB of float32 (+1 small step)")
        print_table("save", saves, "np.save (floor)")
        print_table("load", loads, "np.load (floor)")
        print("", *describe(DIRTY_PEAKS), sep="\n")
    t = dict(saves + loads)
    print("\ntiny steps")
    for label, ours, peer, peer_name in tiny_table:
        print(f"  {label:<58} {fmt_seconds(ours)}  {fmt_seconds(peer)} {peer_name:<22} {ours / peer:6.1f}×")
    for key, seconds in floors.items():
        kind, n = key.split()
        print(f"  {_FLOOR_LABELS[kind].format(n=n):<58} {fmt_seconds(seconds)}")
    for label, seconds in changes:
        print(f"  {label:<40} {fmt_seconds(seconds)}")
    print(f"  Merkle root of a 10-step pipeline (11 manifests read + BLAKE3) {fmt_seconds(merkle)}")
    print("\ntargets (issue 14, issue 11):")
    if saves:
        _print_big_targets(t)
    _print_tiny_targets(tiny_table, changes, floors, merkle)


def _print_big_targets(t: dict) -> None:
    print(f"  full dump / np.save           = {t['stepline full dump'] / t['np.save (floor)']:.2f} (≤ 1.3); "
          f"/ {ATOMIC_PEER} = {t['stepline full dump'] / t[ATOMIC_PEER]:.2f}")
    print(f"  full dump / np.save, each 3 s after its last = {t[PAUSED_SAVE] / t[PAUSED_PEER]:.2f} (not a row: "
          f"np.save deletes its old files first and writes into the memory they freed; stepline keeps the "
          f"previous dump whole until the exchange, so its writes take memory this VM has handed back)")
    print(f"  warm load / np.load           = {t['stepline load, stat cache warm'] / t['np.load (floor)']:.2f} (≤ 1.2)")
    _print_copied_targets(t)
    print(f"  verify='full' load / np.load  = {t[FULL_VERIFY] / t['np.load (floor)']:.2f} "
          f"(what the copied-dump load costs without the pause); / {SERIAL_HASH_PEER} = "
          f"{t[FULL_VERIFY] / t[SERIAL_HASH_PEER]:.2f} (the hash overlapping the read)")


def _print_copied_targets(t: dict) -> None:
    """The copied-dump row's ratios: each candidate's median run right after a copy, per
    state of memory, against the issue's peer (a warm ``np.load``) and the same-position one."""
    warm = t["np.load (floor)"]
    for state in (HELD, RETURNED):
        ours, mapped, same, memory = (t[copied_label(c, state)] for c in (COPY_LOAD, COPY_MAPPED, COPY_PEER, MEMORY_PEER))
        print(f"  {state}:")
        print(f"    copied-dump load / np.load (warm: the issue's peer) = {ours / warm:.2f} (≤ 2); "
              f"/ {COPY_PEER} (same position) = {ours / same:.2f}; / {MEMORY_PEER} = {ours / memory:.2f}")
        print(f"    copied-dump load, mmap_mode='c' / np.load = {mapped / warm:.2f}; / {COPY_PEER} = "
              f"{mapped / same:.2f} (every byte hashed; arrays copy-on-write maps of the page cache)")
        print(f"    {COPY_PEER} / np.load = {same / warm:.2f} (what a fresh copy costs np.load itself)")
        print(f"    {MEMORY_PEER} / np.load = {memory / warm:.2f} (no file at all: the floor of any load "
              f"into fresh memory in this state)")
    for (label, state), values in FIRST_AFTER_COPY.items():
        print(f"    each run, {state}: {label:<52} {', '.join(fmt_seconds(v).strip() for v in values)}")


def copied_only(base: Path, size_mb: int, steps: int, r: int) -> list[tuple[str, float]]:
    """The copied-dump rows alone (``--only-copied``), with the warm ``np.load`` they are read against."""
    pipeline = build(size_mb, steps)
    arrays = [s.weights_ for s in pipeline.values()]
    ours, raw = base / "ours", fresh(base / "raw")
    pipeline.save(CX(ours), full_dump=True)
    for i, a in enumerate(arrays):
        np.save(raw / f"{i}.npy", a)
    del pipeline
    rows = copied_rows(ours, raw, arrays, base, max(r, 5))
    return rows + [("np.load (floor)", median_time(lambda: [np.load(raw / f"{i}.npy") for i in range(len(arrays))], r))]


_FLOOR_LABELS = {"new": "layout floor, {n} steps: a folder + 1 small file each",
                 "again": "rebuild floor, {n} steps: list + overwrite 1 small file each",
                 "load": "read floor, {n} steps' load: 1 small file read each"}


def _floor_of(label: str):
    """The floor a tiny row compares with: its key in ``floors``."""
    n = label.split(", ")[1].split(" ")[0]
    if label.startswith("load"):
        return f"load {n}"
    return f"new {n}" if "new destination" in label else f"again {n}"


def _print_tiny_targets(tiny_table, changes, floors, merkle) -> None:
    for label, ours, peer, peer_name in tiny_table:
        key = _floor_of(label)
        floor = (f"; {ours / floors[key]:.1f}× its floor, the floor alone {floors[key] / peer:.1f}× {peer_name}"
                 if key in floors else "")
        print(f"  {label + ' / ' + peer_name:<80} = {ours / peer:.1f} (≤ 5){floor}")
    for (label, seconds), target in zip(changes, ("10 ms", "20 ms")):
        print(f"  {label:<29} = {seconds * 1e3:.1f} ms (≤ {target})")
    print(f"  Merkle root, 10 steps         = {merkle * 1e3:.3f} ms (< 1 ms)")


def _main_copied(base: Path, args) -> None:
    try:
        rows = copied_only(base, args.size_mb, args.steps, args.repeats)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    each = len(next(iter(FIRST_AFTER_COPY.values())))
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; {args.steps} fitted steps holding "
          f"{args.size_mb} MiB of float32 (+1 small step); medians of {each} runs right after a copy each, "
          f"np.load of {args.repeats}")
    print_table("load", rows, "np.load (floor)")
    print("\ntargets (issue 14):")
    _print_copied_targets(dict(rows))


if __name__ == "__main__":
    main()
