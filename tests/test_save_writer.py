"""The writer thread of big saves (issue 14): manifests created off the saving thread.

A full save of at least ``writer.MIN_STEPS`` steps (200 by default; set here) hands each
finished manifest to one writer thread while the saving thread builds the next. These tests show that such a save
writes the same dump (each file once, folders in tree order on the saving thread), that
the ``os.stat`` a later changes-only save relies on comes back from the writer, that a
write failing on the writer thread surfaces from ``save`` as a ``SaveError`` naming the
file and leaves the previous dump whole, and that small saves start no thread.
Real files, real threads, real resource limits in a fresh process; no mocks.
"""
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from stepline import CX, Pipeline
from stepline.saving import writer
from stepline.saving.manifest import MANIFEST_NAME
from stepline.steps.numpy import MultiplyByN

from test_save_io import _is_read, recorded


BIG = 60  # steps of the saves handed to the writer here


@pytest.fixture(autouse=True)
def writer_from_big_saves(monkeypatch):
    monkeypatch.setattr(writer, "MIN_STEPS", BIG)


def tiny(n: int, value: int = 3) -> Pipeline:
    p = Pipeline([(f"m{i}", MultiplyByN(2)) for i in range(n)], name="tiny")
    for step in p.values():
        step.set_hyperparams({"multiply_by": value})
    return p


def _manifest_writes(events, under):
    """``{path: thread}`` of the manifests under ``under`` opened for writing."""
    return {path: thread for event, path, mode, flags, thread in events
            if event == "open" and path.startswith(os.fspath(under)) and not _is_read(mode, flags)
            and os.path.basename(path) == MANIFEST_NAME}


def test_a_big_full_save_hands_its_manifests_to_the_writer_thread_and_writes_the_same_dump(tmp_path):
    n = BIG
    p = tiny(n)
    with recorded() as events:
        p.save(CX(tmp_path), full_dump=True)
    me = threading.get_ident()
    manifests = _manifest_writes(events, tmp_path)
    assert len(manifests) == n + 1, "one manifest per step and the pipeline's, each created once"
    assert set(manifests.values()) != {me}, "the manifests are created by the writer thread"
    made = [(path, thread) for event, path, *_, thread in events if event == "os.mkdir" and "/m" in path]
    assert len(made) == n and {thread for _, thread in made} == {me}, "folders: on the saving thread"
    loaded = CX(tmp_path).load("tiny")
    assert [s.hyperparams["multiply_by"] for s in loaded.values()] == [3] * n
    assert sorted(os.listdir(tmp_path / "tiny" / "m7")) == [MANIFEST_NAME]


def test_the_stats_from_the_writer_let_an_unchanged_save_write_and_read_nothing(tmp_path):
    p = tiny(BIG)
    p.save(CX(tmp_path), full_dump=True)
    with recorded() as events:
        p.save(CX(tmp_path))  # nothing changed: each manifest's os.stat is what the writer saw
    opened = [path for event, path, *_ in events if event == "open" and path.startswith(os.fspath(tmp_path / "tiny"))]
    assert not opened, f"an unchanged save opened {opened[:3]}"
    p["m5"].set_hyperparams({"multiply_by": 9})
    p.save(CX(tmp_path))
    assert CX(tmp_path).load("tiny")["m5"].hyperparams["multiply_by"] == 9


WRITER_FAILS = """
import os, resource, signal, sys, threading
from stepline import CX, Pipeline
from stepline.base import BaseStep
from stepline.saving import SaveError, writer
from stepline.steps.numpy import MultiplyByN

class Noted(BaseStep):
    def __init__(self, note="", name=None):
        super().__init__(hyperparams={"note": note}, name=name)
    def transform(self, data_inputs):
        return data_inputs

writer.MIN_STEPS = 60

def build(value, note):
    steps = [(f"m{i}", MultiplyByN(value)) for i in range(60)]
    steps.insert(30, ("noted", Noted(note)))
    return Pipeline(steps, name="p")

root = sys.argv[1]
build(3, "short").save(CX(root), full_dump=True)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
try:
    build(5, "x" * 8000).save(CX(root), full_dump=True)  # the middle step's manifest: > 4 KiB
except SaveError as e:
    print("error:", e)
print("writer thread:", any(t.name == "stepline-manifest-writer" for t in threading.enumerate()))
print("leftovers:", sorted(n for n in os.listdir(root) if n.startswith(".p.") and n not in (".p.lock", ".p.turn")))
loaded = CX(root).load("p")
print("previous:", {s.hyperparams.get("multiply_by") for s in loaded.values()} - {None}, loaded["noted"].hyperparams["note"])
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
build(5, "x" * 8000).save(CX(root), full_dump=True)  # the same writer thread, the next save
print("next:", {s.hyperparams.get("multiply_by") for s in CX(root).load("p").values()} - {None})
"""


def test_a_write_failing_on_the_writer_thread_is_a_save_error_and_keeps_the_previous_dump(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(WRITER_FAILS))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "root")], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"error: {tmp_path / 'root' / 'p' / 'noted' / MANIFEST_NAME}: cannot write the manifest" in out, out
    assert "File too large" in out and ".p.tmp-" not in out.split("\n")[0], out
    assert "writer thread: True" in out, out  # the failure came from the writer thread
    assert "leftovers: []" in out, out  # the staged folder is gone, the writer done with it first
    assert "previous: {3} short" in out, out
    assert "next: {5}" in out, out


def test_small_saves_start_no_thread(tmp_path):
    body = """
        import sys, threading
        from stepline import CX, Pipeline
        from stepline.saving import writer
        from stepline.steps.numpy import MultiplyByN
        writer.MIN_STEPS = int(sys.argv[2])
        p = Pipeline([(f"m{i}", MultiplyByN(2)) for i in range(10)], name="p")
        before = {t.ident for t in threading.enumerate()}
        for value in range(3, 8):
            p["m3"].set_hyperparams({"multiply_by": value})
            p.save(CX(sys.argv[1]), full_dump=True)
        started = [t.name for t in threading.enumerate() if t.ident not in before]
        print("started:", [n for n in started if n != "stepline-cleanup_0"])
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(body), str(tmp_path), str(BIG)], capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert "started: []" in done.stdout, done.stdout  # (the one deletion thread aside, reused by every save)


@pytest.mark.parametrize("steps", [1, 3])
def test_the_writer_serves_saves_from_several_threads_at_once(tmp_path, monkeypatch, steps):
    monkeypatch.setattr(writer, "MIN_STEPS", 1)
    errors = []

    def save(k):
        try:
            for value in range(2, 6):
                tiny(steps + k, value).save(CX(tmp_path / f"root{k}"), full_dump=True)
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=save, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    for k in range(4):
        loaded = CX(tmp_path / f"root{k}").load("tiny")
        assert len(loaded) == steps + k and {s.hyperparams["multiply_by"] for s in loaded.values()} == {5}
