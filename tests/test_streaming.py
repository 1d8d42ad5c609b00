"""Streaming pipelines: order, stage syntax, threads and processes, dumps, saving, failures, cleanup.

Every test has a timeout (a hang fails instead of blocking CI) and, through the
autouse fixture, checks that no worker process survives it.
"""
import gc
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import psutil
import pytest

from stepline import CX, Pipeline
from stepline.base import BaseSaver, BaseStep, NonFittableMixin
from stepline.distributed.streaming import (ParallelQueuedFeatureUnion, SequentialQueuedPipeline,
                                            _ProducerConsumerMixin, _ProducerConsumerStepSaver)
from stepline.distributed.streaming import StreamingSetupError, StreamingWorkerError

pytestmark = pytest.mark.timeout(60)  # every test; the failure tests set 30 s

MODES = [pytest.param(False, id="threads"), pytest.param(True, id="processes")]


# --------------------------------------------------------------------- steps
class Mul(NonFittableMixin, BaseStep):
    def __init__(self, k=2, name=None):
        super().__init__(hyperparams={"k": k}, name=name)

    def transform(self, data_inputs):
        return np.asarray(data_inputs) * self.hyperparams["k"]


class RandomDelay(NonFittableMixin, BaseStep):
    """Adds 1 after a pseudo-random delay (0-27 ms) that depends on the batch."""

    def transform(self, data_inputs):
        x = np.asarray(data_inputs)
        time.sleep(((int(x.flat[0]) * 7919) % 10) * 0.003 if x.size else 0)
        return x + 1


class Center(BaseStep):
    """Learns the mean of all it is fitted on."""

    def fit(self, data_inputs, expected_outputs=None):
        self.mean_ = float(np.mean(data_inputs))
        self.fit_pid_ = os.getpid()
        return self

    def transform(self, data_inputs):
        return np.asarray(data_inputs) - self.mean_


class Pid(NonFittableMixin, BaseStep):
    """Outputs the id of the process that ran it, one per row."""

    def transform(self, data_inputs):
        return np.full(len(data_inputs), os.getpid())


class Fails(NonFittableMixin, BaseStep):
    def __init__(self, bad=13, when="transform", name=None):
        super().__init__(hyperparams={"bad": bad}, name=name)
        self.when = when

    def setup(self, context=None):
        if self.when == "setup":
            raise OSError("no GPU here")
        return self

    def transform(self, data_inputs):
        x = np.asarray(data_inputs)
        time.sleep(0.005)
        if self.hyperparams["bad"] in x:
            raise ValueError(f"bad value {self.hyperparams['bad']} in batch")
        return x


class ExitsHard(NonFittableMixin, BaseStep):
    def transform(self, data_inputs):
        if 13 in np.asarray(data_inputs):
            os._exit(3)
        return data_inputs


class Slow(NonFittableMixin, BaseStep):
    def __init__(self, seconds=0.02, name=None):
        super().__init__(hyperparams={"seconds": seconds}, name=name)

    def transform(self, data_inputs):
        time.sleep(self.hyperparams["seconds"])
        return data_inputs


class UnpicklableOutput(NonFittableMixin, BaseStep):
    def transform(self, data_inputs):
        return [threading.Lock() for _ in data_inputs]


class StripResource(BaseSaver):
    """Strips ``resource`` (a queue or lock) from a dump; setup recreates it."""

    def save_step(self, step, context):
        step.resource = None
        return step

    def can_load(self, step, context):
        return True

    def load_step(self, step, context):
        step.resource = None
        return step


class HoldsResource(NonFittableMixin, BaseStep):
    """Holds what pickle cannot carry: a multiprocessing queue or a lock, made in setup."""

    def __init__(self, kind="queue", strip=True):
        super().__init__(savers=[StripResource()] if strip else [])
        self.kind = kind
        self.resource = None

    def setup(self, context=None):
        self.resource = multiprocessing.Queue() if self.kind == "queue" else threading.Lock()
        self.setup_pid = os.getpid()
        return self

    def teardown(self):
        if self.kind == "queue":
            self.resource.close()
            self.resource.join_thread()
        self.resource = None
        return self

    def transform(self, data_inputs):
        if self.kind == "queue":
            self.resource.put(np.asarray(data_inputs) * 2)
            return self.resource.get(timeout=5)
        with self.resource:
            return np.asarray(data_inputs) * 2


class LifecycleFiles(NonFittableMixin, BaseStep):
    """Leaves a file per process on setup and on teardown."""

    def __init__(self, folder):
        super().__init__()
        self.folder = str(folder)

    def setup(self, context=None):
        open(os.path.join(self.folder, f"setup-{os.getpid()}"), "w").close()
        return self

    def teardown(self):
        open(os.path.join(self.folder, f"teardown-{os.getpid()}"), "w").close()
        return self

    def transform(self, data_inputs):
        return data_inputs


# -------------------------------------------------------------- leak checks
def _stray_children():
    """Our descendant processes, less multiprocessing's helpers (resource tracker, fork server)."""
    me = psutil.Process()
    stray = []
    for child in me.children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
            ppid = child.ppid()
        except psutil.Error:
            continue
        if "resource_tracker" in cmd or ("forkserver" in cmd and ppid == me.pid):
            continue
        stray.append(child)
    return stray


def _assert_no_workers_left():
    deadline = time.monotonic() + 3
    while (multiprocessing.active_children() or _stray_children()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert multiprocessing.active_children() == []
    assert _stray_children() == []
    threads = [t for t in threading.enumerate() if t.name.startswith("stepline:")]
    deadline = time.monotonic() + 3
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.is_alive() for t in threads)


@pytest.fixture(autouse=True)
def no_worker_survives():
    yield
    gc.collect()
    _assert_no_workers_left()


def _rows(n):
    return np.arange(float(n))


# -------------------------------------------------------------------- order
@pytest.mark.timeout(30)
@pytest.mark.parametrize("use_processes", MODES)
def test_order_kept_whatever_order_workers_finish_in(use_processes):
    p = SequentialQueuedPipeline([(3, RandomDelay()), ("times10", 2, Mul(10))], batch_size=2,
                                 use_processes=use_processes)
    x = _rows(41)  # 21 batches, the last one incomplete
    with p.setup():
        assert len(p.consumers) == 5
        np.testing.assert_array_equal(p.transform(x), (x + 1) * 10)
        np.testing.assert_array_equal(p.transform(x[::-1].copy()), (x[::-1] + 1) * 10)
    assert p.consumers == [] and p.input_queue is None


def test_stage_syntax_every_form():
    a, b, c, d = Mul(1), Mul(2), Mul(3), Mul(4)
    p = SequentialQueuedPipeline([a, ("named", b), (3, c), ("both", 2, d)], batch_size=4, n_workers_per_step=2)
    assert p.keys() == ["Mul", "named", "Mul_1", "both"]
    assert p.workers_per_stage == {"Mul": 2, "named": 2, "Mul_1": 3, "both": 2}
    assert p["named"] is b and p[2] is c
    p.append(("late", 4, Mul(5)))
    assert p.workers_per_stage["late"] == 4
    u = ParallelQueuedFeatureUnion([(2, Mul(1)), ("x", Mul(2))], batch_size=1)
    assert u.workers_per_stage == {"Mul": 2, "x": 1}
    assert p.consumers == [] and not p.is_initialized  # the constructor starts nothing


@pytest.mark.parametrize("stages, error", [
    ([(0, Mul())], ValueError), ([("a", -1, Mul())], ValueError), ([(True, Mul())], TypeError),
    ([("a", 2, Mul(), 1)], TypeError), ([lambda x: x], TypeError), ([(2.5, Mul())], TypeError),
])
def test_bad_stages_refused(stages, error):
    with pytest.raises(error, match="stage|workers"):
        SequentialQueuedPipeline(stages, batch_size=2)


@pytest.mark.parametrize("kwargs", [dict(batch_size=0), dict(batch_size=2, n_workers_per_step=0),
                                    dict(batch_size=2, max_queued_minibatches=0),
                                    dict(batch_size=2, start_method="teleport")])
def test_bad_arguments_refused(kwargs):
    with pytest.raises(ValueError):
        SequentialQueuedPipeline([Mul()], **kwargs)


def test_incomplete_last_batch_empty_input_and_lists():
    p = SequentialQueuedPipeline([(2, Mul(2))], batch_size=3, use_processes=False)
    with p:
        np.testing.assert_array_equal(p.transform(_rows(10)), _rows(10) * 2)  # 3+3+3+1
        np.testing.assert_array_equal(p.transform(_rows(2)), _rows(2) * 2)  # batch larger than data
        assert p.transform(np.zeros(0)).shape == (0,)
        out = SequentialQueuedPipeline([Slow(0)], batch_size=2, use_processes=False)
        with out:
            assert out.transform([1, 2, 3, 4, 5]) == [1, 2, 3, 4, 5]  # a list comes back a list
    with pytest.raises(TypeError, match="len"):
        SequentialQueuedPipeline([Slow(0)], batch_size=2, use_processes=False).transform(5)


# ------------------------------------------------------ threads and processes
@pytest.mark.parametrize("use_processes", MODES)
def test_same_results_as_a_pipeline_and_fit_streams_non_learning_stages(use_processes):
    x = _rows(30)
    stages = lambda: [Mul(2), ("center", Center()), ("tail", 2, Mul(3))]  # noqa: E731
    plain, expected = Pipeline([s[-1] if isinstance(s, tuple) else s for s in stages()]).fit_transform(x)
    p = SequentialQueuedPipeline(stages(), batch_size=4, use_processes=use_processes)
    with p.setup():
        fitted, out = p.fit_transform(x)
        assert fitted is p
        np.testing.assert_allclose(out, expected)
        assert p["center"].mean_ == pytest.approx(np.mean(x * 2))  # fitted once, on all the data
        assert p["center"].fit_pid_ == os.getpid()  # a learning stage is fitted here
        np.testing.assert_allclose(p.transform(x), plain.transform(x))  # fitted state reached the workers
        p = p.fit(x + 1)
        assert p["center"].mean_ == pytest.approx(np.mean((x + 1) * 2))
        np.testing.assert_allclose(p.transform(x), (x * 2 - p["center"].mean_) * 3)


def test_fit_transform_streams_stages_that_learn_nothing_in_worker_processes():
    p = SequentialQueuedPipeline([(2, Pid()), Center()], batch_size=5)
    with p.setup():
        _, out = p.fit_transform(_rows(20))
        pids = {w.pid for w in p.consumers}
        worker_pids = set(np.round(out + p["Center"].mean_).astype(int))
        assert worker_pids and worker_pids <= pids and os.getpid() not in worker_pids


@pytest.mark.parametrize("use_processes", MODES)
def test_feature_union_joins_branches_in_order(use_processes):
    x = np.arange(24.0).reshape(12, 2)
    u = ParallelQueuedFeatureUnion([Mul(2), (2, RandomDelay()), ("center", Center())], batch_size=5,
                                   use_processes=use_processes)
    with u.setup():
        u, out = u.fit_transform(x, np.ones(12))
        expected = np.concatenate([x * 2, x + 1, x - x.mean()], axis=-1)
        np.testing.assert_allclose(out, expected)
        np.testing.assert_allclose(u.transform(x), expected)
        assert isinstance(u.input_queue, tuple) and len(u.input_queue) == 3
    flat = ParallelQueuedFeatureUnion([Mul(2), Mul(3)], batch_size=4, use_processes=False)
    with flat:  # 1-D branch outputs are feature columns
        np.testing.assert_array_equal(flat.transform(_rows(5)), np.stack([_rows(5) * 2, _rows(5) * 3], axis=1))


@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_other_start_methods(start_method):
    p = SequentialQueuedPipeline([Mul(2), Mul(5)], batch_size=3, start_method=start_method)
    try:
        with p:
            np.testing.assert_array_equal(p.transform(_rows(10)), _rows(10) * 10)
    finally:
        if start_method == "forkserver":  # the fork server outlives its workers: stop it for the next tests
            import multiprocessing.forkserver
            multiprocessing.forkserver._forkserver._stop()


def test_nested_in_a_pipeline_follows_its_lifecycle():
    inner = SequentialQueuedPipeline([(2, Mul(3))], batch_size=2, use_processes=False, name="inner")
    outer = Pipeline([Mul(2), inner])
    with outer.setup():
        assert len(inner.consumers) == 2
        _, out = outer.fit_transform(_rows(7))
        np.testing.assert_array_equal(out, _rows(7) * 6)
    assert inner.consumers == [] and not inner.is_initialized


# ------------------------------------------------------------------ dumps
@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["queue", "lock"])
def test_step_holding_a_queue_or_lock_runs_in_processes_through_a_dump(kind):
    step = HoldsResource(kind).setup()  # now it holds what pickle cannot carry
    with pytest.raises((TypeError, RuntimeError)):  # "cannot pickle '_thread.lock'", "Queue objects..."
        pickle.dumps(step)
    p = SequentialQueuedPipeline([(2, step)], batch_size=3)
    with p.setup():
        assert p._runtime.stages[0].payload_kind == "dump"
        np.testing.assert_array_equal(p.transform(_rows(11)), _rows(11) * 2)
        assert step.resource is not None and step.setup_pid == os.getpid()  # the live step kept it
    assert step.resource is None  # the pipeline's teardown tears its steps down


def test_use_savers_sends_dumps_and_workers_run_setup_and_teardown(tmp_path):
    p = SequentialQueuedPipeline([(2, LifecycleFiles(tmp_path))], batch_size=2, use_savers=True)
    with p.setup():
        assert p._runtime.stages[0].payload_kind == "dump"
        pids = {w.pid for w in p.consumers}
        assert p.transform([1, 2, 3]) == [1, 2, 3]
    names = set(os.listdir(tmp_path))
    assert names == {f"setup-{pid}" for pid in pids} | {f"teardown-{pid}" for pid in pids}
    assert f"setup-{os.getpid()}" not in names  # nothing was set up here


@pytest.mark.timeout(30)
def test_workers_of_an_aborted_call_still_tear_down(tmp_path):
    p = SequentialQueuedPipeline([(2, LifecycleFiles(tmp_path)), ("checker", Fails(3))], batch_size=1)
    with p.setup():
        pids = {w.pid for w in p.consumers[:2]}
        while len(os.listdir(tmp_path)) < 2:  # both workers set up
            p.transform(_rows(2))
        with pytest.raises(StreamingWorkerError, match="'checker'"):
            p.transform(_rows(10))
    names = set(os.listdir(tmp_path))
    assert names == {f"setup-{pid}" for pid in pids} | {f"teardown-{pid}" for pid in pids}


def test_picklable_step_travels_pickled_by_default():
    p = SequentialQueuedPipeline([Mul(2)], batch_size=2)
    with p.setup():
        assert p._runtime.stages[0].payload_kind == "pickle"
        assert p.transform([1, 2, 3]).tolist() == [2, 4, 6]


def test_step_that_can_neither_pickle_nor_dump_fails_setup_clearly():
    step = HoldsResource("lock", strip=False).setup()
    p = SequentialQueuedPipeline([Mul(2), ("locked", step)], batch_size=2)
    with pytest.raises(StreamingSetupError, match="'locked'.*cannot be sent to worker processes"):
        p.setup()
    assert not p.is_initialized and p.consumers == []


# ---------------------------------------------------------- save and load
@pytest.mark.timeout(30)
def test_save_and_load_a_running_streaming_pipeline(tmp_path):
    x = _rows(20)
    p = SequentialQueuedPipeline([("double", 2, Mul(2)), ("center", Center())], batch_size=3, name="stream")
    assert any(isinstance(s, _ProducerConsumerStepSaver) for s in p.savers)
    with p.setup():
        p, expected = p.fit_transform(x)
        p.save(CX(tmp_path), full_dump=True)
        assert len(p.consumers) == 3 and p.input_queue is not None  # saving never touched the live step
        np.testing.assert_allclose(p.transform(x), expected)
        loaded = CX(tmp_path).load("stream")
    assert isinstance(loaded, SequentialQueuedPipeline) and isinstance(loaded, _ProducerConsumerMixin)
    assert loaded.consumers == [] and loaded.input_queue is None and loaded._runtime is None
    assert not loaded.is_initialized and loaded.workers_per_stage == {"double": 2, "center": 1}
    with loaded.setup():
        assert len(loaded.consumers) == 3 and all(w.is_alive() for w in loaded.consumers)
        np.testing.assert_allclose(loaded.transform(x), expected)


def test_pickling_a_running_pipeline_leaves_out_the_workers():
    p = SequentialQueuedPipeline([Mul(2)], batch_size=2)
    with p.setup():
        copy = pickle.loads(pickle.dumps(p))
        assert copy.consumers == [] and copy.input_queue is None and copy._runtime is None
        assert len(p.consumers) == 1
    saver = _ProducerConsumerStepSaver()
    stripped = saver.save_step(SequentialQueuedPipeline([Mul(2)], batch_size=2), None)
    assert stripped.input_queue is None and stripped.consumers == [] and saver.can_load(stripped, None)


def test_changed_hyperparameters_reach_the_workers():
    p = SequentialQueuedPipeline([Mul(2)], batch_size=2)
    with p.setup():
        assert p.transform([1, 2]).tolist() == [2, 4]
        before = {w.pid for w in p.consumers}
        p.set_hyperparams({"Mul__k": 5})
        assert p.transform([1, 2]).tolist() == [5, 10]
        assert {w.pid for w in p.consumers}.isdisjoint(before)


# ------------------------------------------------------------------ failures
@pytest.mark.timeout(30)
@pytest.mark.parametrize("use_processes", MODES)
def test_exception_in_a_worker_raises_with_its_type_message_traceback_and_step(use_processes):
    p = SequentialQueuedPipeline([Mul(1), ("checker", 2, Fails(13))], batch_size=2, use_processes=use_processes)
    with p.setup():
        p.transform(_rows(4))  # the workers are up
        start = time.monotonic()
        with pytest.raises(StreamingWorkerError) as info:
            p.transform(_rows(400))
        assert time.monotonic() - start < 2.0
        err = info.value
        assert err.step_name == "checker" and err.exc_type == "ValueError" and err.phase == "transform"
        assert err.exc_message == "bad value 13 in batch" and err.batch_index == 6
        assert "in transform" in err.worker_traceback and "test_streaming.py" in err.worker_traceback
        assert "ValueError: bad value 13 in batch" in str(err) and "'checker'" in str(err)
        assert isinstance(err.__cause__, ValueError)
        assert p.consumers == []
        _assert_no_workers_left()
        np.testing.assert_array_equal(p.transform(_rows(12)), _rows(12))  # fresh workers next time


@pytest.mark.timeout(30)
def test_error_in_a_worker_setup_is_reported():
    p = SequentialQueuedPipeline([("gpu", Fails(when="setup"))], batch_size=2)
    with p.setup(), pytest.raises(StreamingWorkerError, match="'gpu'.*setup.*OSError: no GPU here") as info:
        p.transform(_rows(4))
    assert info.value.phase == "setup" and isinstance(info.value.__cause__, OSError)


@pytest.mark.timeout(30)
def test_output_that_cannot_be_pickled_raises_instead_of_hanging():
    p = SequentialQueuedPipeline([UnpicklableOutput()], batch_size=2)
    with p.setup(), pytest.raises(StreamingWorkerError, match="sending the output of.*lock"):
        p.transform(_rows(4))


@pytest.mark.timeout(30)
def test_worker_that_exits_with_os_exit_raises():
    p = SequentialQueuedPipeline([Mul(1), ("exits", 2, ExitsHard())], batch_size=2)
    with p.setup():
        p.transform(_rows(4))
        start = time.monotonic()
        with pytest.raises(StreamingWorkerError, match="'exits'.*exited with code 3") as info:
            p.transform(_rows(40))
        assert time.monotonic() - start < 2.0
        assert info.value.exitcode == 3 and info.value.step_name == "exits"
        assert p.consumers == []
        _assert_no_workers_left()


@pytest.mark.timeout(30)
def test_worker_killed_by_a_signal_raises():
    p = SequentialQueuedPipeline([("slow", 2, Slow(0.02))], batch_size=1)
    with p.setup():
        p.transform(_rows(2))
        victim = p.consumers[1].pid
        timer = threading.Timer(0.3, os.kill, (victim, signal.SIGKILL))
        timer.start()
        start = time.monotonic()
        with pytest.raises(StreamingWorkerError, match=f"pid {victim}.*killed by signal SIGKILL") as info:
            p.transform(_rows(500))
        timer.join()
        assert time.monotonic() - start < 2.0
        assert info.value.exitcode == -signal.SIGKILL and info.value.pid == victim
        _assert_no_workers_left()


@pytest.mark.timeout(30)
def test_worker_that_died_between_calls_is_replaced_and_teardown_still_works():
    p = SequentialQueuedPipeline([(2, Mul(3))], batch_size=2)
    with p.setup():
        victim = p.consumers[0]
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(5)
        with pytest.warns(RuntimeWarning, match="stopped between calls"):
            np.testing.assert_array_equal(p.transform(_rows(5)), _rows(5) * 3)
        assert victim not in p.consumers and all(w.is_alive() for w in p.consumers)
        os.kill(p.consumers[1].pid, signal.SIGKILL)  # teardown copes with a dead worker
        p.consumers[1].join(5)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("use_processes", MODES)
def test_keyboard_interrupt_stops_every_worker(use_processes):
    p = SequentialQueuedPipeline([(2, Slow(0.02)), Mul(1)], batch_size=1, use_processes=use_processes)
    with p.setup():
        p.transform(_rows(2))
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            p.transform(_rows(1000))
        timer.join()
        assert p.consumers == []
        _assert_no_workers_left()


@pytest.mark.timeout(30)
def test_with_block_leaves_no_process_also_after_an_error():
    p = SequentialQueuedPipeline([(2, Mul(2)), Mul(3)], batch_size=2)
    with pytest.raises(RuntimeError, match="user code"):
        with p.setup():
            assert len(multiprocessing.active_children()) == 3
            p.transform(_rows(5))
            raise RuntimeError("user code failed")
    assert not p.is_initialized and p.consumers == []
    assert multiprocessing.active_children() == [] and _stray_children() == []


@pytest.mark.timeout(30)
def test_workers_exit_when_their_parent_process_dies(tmp_path):
    script = tmp_path / "owner.py"
    script.write_text(textwrap.dedent("""
        import os, signal
        from stepline.base import Identity
        from stepline.distributed.streaming import SequentialQueuedPipeline
        if __name__ == "__main__":
            p = SequentialQueuedPipeline([(2, Identity())], batch_size=2).setup()
            p.transform([1, 2, 3])
            print(" ".join(str(w.pid) for w in p.consumers), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # no teardown, no exit hooks
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    pids = [int(pid) for pid in proc.stdout.split()]
    assert len(pids) == 2, proc.stderr

    def running(pid):
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + 10
    while any(map(running, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(running, pids))


@pytest.mark.timeout(30)
def test_forgotten_pipeline_stops_its_workers_when_collected():
    p = SequentialQueuedPipeline([(2, Mul(2))], batch_size=2)
    p.transform(_rows(3))  # workers start lazily
    assert len(multiprocessing.active_children()) == 2
    del p
    gc.collect()
    _assert_no_workers_left()


# ------------------------------------------------------------------ progress
def test_progress_callback_and_bar(capsys):
    seen = []
    p = SequentialQueuedPipeline([Mul(2)], batch_size=3, use_processes=False,
                                 show_progress=lambda done, total: seen.append((done, total)))
    with p:
        p.transform(_rows(10))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    bar = SequentialQueuedPipeline([Mul(2)], batch_size=3, use_processes=False, show_progress=True, name="bar")
    with bar:
        bar.transform(_rows(10))
    err = capsys.readouterr().err
    assert "bar [" in err and "4/4 batches" in err
