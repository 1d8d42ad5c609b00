"""DaskPipeline on a real Dask cluster on loopback: fit here, transform on the workers."""
import glob
import logging
import multiprocessing
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
pytest.importorskip("sklearn")

from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from stepline import CX, Pipeline  # noqa: E402
from stepline.base import BaseSaver, BaseStep, NonFittableMixin  # noqa: E402
from stepline.distributed.dask import DaskPipeline, DaskStepError, dump_bytes, load_bytes, loaded_on_worker  # noqa: E402
from stepline.steps.sklearn import SKLearnWrapper  # noqa: E402



@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0", silence_logs=logging.ERROR) as cluster:
        yield cluster


@pytest.fixture
def client(cluster):
    with distributed.Client(cluster) as client:
        yield client


def iris_like(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    return X, y


def classifier():
    return Pipeline([("scale", SKLearnWrapper(StandardScaler())),
                     ("clf", SKLearnWrapper(LogisticRegression()))], name="clf")


class Times(NonFittableMixin, BaseStep):
    def __init__(self, factor=2.0, name=None):
        super().__init__(hyperparams={"factor": factor}, name=name)

    def transform(self, data_inputs):
        return np.asarray(data_inputs) * self.hyperparams["factor"]


class FailsOn(NonFittableMixin, BaseStep):
    """Raises on a sentinel value, or kills its worker process with ``os._exit``."""

    def __init__(self, sentinel, how="raise", name=None):
        super().__init__(name=name)
        self.sentinel, self.how = sentinel, how

    def transform(self, data_inputs):
        if self.sentinel in np.asarray(data_inputs):
            if self.how == "exit":
                os._exit(7)
            raise ValueError(f"bad value {self.sentinel}")
        return data_inputs


class QueueHolder(NonFittableMixin, BaseStep):
    """Holds a multiprocessing.Queue (pickle cannot carry it): its saver strips it, setup
    recreates it, as in the seed's example."""

    def __init__(self, name=None):
        super().__init__(name=name, savers=[StripQueue()])
        self.queue = multiprocessing.Queue()

    def setup(self, context=None):
        if self.queue is None:
            self.queue = multiprocessing.Queue()
        self.setups = getattr(self, "setups", 0) + 1
        return self

    def transform(self, data_inputs):
        assert self.queue is not None
        self.calls = getattr(self, "calls", 0) + 1
        return np.asarray(data_inputs) + self.setups * 1000  # shows setup ran once per worker


class StripQueue(BaseSaver):
    def save_step(self, step, context):
        step.queue = None
        return step

    def can_load(self, step, context):
        return True

    def load_step(self, step, context):
        return step


def test_same_outputs_as_running_here_in_input_order(client):
    X, y = iris_like()
    local = classifier().fit(X, y)
    expected = local.predict(X)
    with DaskPipeline(classifier(), batch_size=37, client=client) as d:
        d = d.fit(X, y)
        np.testing.assert_array_equal(d.predict(X), expected)
        np.testing.assert_array_equal(d.transform(X[:5]), expected[:5])  # one short batch


def test_fit_transform_fits_here_and_transforms_there_like_a_pipeline(client):
    x = np.arange(12.0)
    expected = Pipeline([Times(2.0), Times(3.0, name="t3")]).fit_transform(x)[1]
    with DaskPipeline([Times(2.0), Times(3.0, name="t3")], batch_size=5, client=client) as d:
        fitted, out = d.fit_transform(x)
        assert fitted is d
        np.testing.assert_array_equal(out, expected)


def test_each_worker_loads_the_dump_once_and_sets_it_up_there(client):
    x = np.arange(40)
    with DaskPipeline([QueueHolder(name="q")], batch_size=3, client=client) as d:
        for _ in range(3):
            np.testing.assert_array_equal(d.transform(x), x + 1000)  # one setup on each worker
        held = client.run(loaded_on_worker)
        assert len(held) == 2 and all(len(keys) <= 1 for keys in held.values())
        from stepline.distributed import dask as on_worker
        calls = client.run(lambda: [e[0]["q"].calls for e in on_worker._LOADED.values()])
        assert sum(sum(c) for c in calls.values()) == 3 * 14  # every minibatch, on copies loaded once
        assert d.wrapped["q"].queue is not None  # the live step keeps its queue
    assert all(keys == [] for keys in client.run(loaded_on_worker).values())  # teardown drops them


def test_progress_reports_each_minibatch(client):
    seen = []
    with DaskPipeline([Times(2.0)], batch_size=3, client=client,
                      show_progress=lambda done, total: seen.append((done, total))) as d:
        d.transform(np.arange(10.0))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_a_changed_step_is_shipped_again(client):
    x = np.arange(10.0)
    with DaskPipeline([Times(2.0, name="t")], batch_size=4, client=client) as d:
        np.testing.assert_array_equal(d.transform(x), x * 2)
        d.set_hyperparams({"Pipeline__t__factor": 3.0})
        np.testing.assert_array_equal(d.transform(x), x * 3)
        assert sum(len(k) for k in client.run(loaded_on_worker).values()) <= 2  # the old one dropped


def test_a_worker_error_names_the_step_and_the_minibatch_and_the_next_call_works(client):
    x = np.arange(20)
    d = DaskPipeline([FailsOn(13, name="picky")], batch_size=5, client=client)
    with d:
        with pytest.raises(DaskStepError, match=r"step 'Pipeline' failed on minibatch 2 .*ValueError: bad value 13"):
            d.transform(x)
        np.testing.assert_array_equal(d.transform(np.arange(10)), np.arange(10))


def test_a_killed_worker_raises_instead_of_hanging():
    import dask
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address=":0", silence_logs=logging.CRITICAL) as cluster:
            with distributed.Client(cluster) as client:
                with DaskPipeline([FailsOn(3, how="exit")], batch_size=2, client=client) as d:
                    with pytest.raises(DaskStepError, match="a Dask worker died while running step"):
                        d.transform(np.arange(6))
                    client.wait_for_workers(1, timeout=60)  # its nanny starts a new one
                    np.testing.assert_array_equal(d.transform(np.arange(3)), np.arange(3))


def test_a_worker_lost_between_calls_is_replaced_and_gets_the_dump_again():
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0", silence_logs=logging.CRITICAL) as cluster:
        with distributed.Client(cluster) as client:
            with DaskPipeline([Times(3.0)], batch_size=2, client=client) as d:
                np.testing.assert_array_equal(d.transform(np.arange(4.0)), np.arange(4.0) * 3)
                client.restart()  # every worker (and the dump it held) is gone
                np.testing.assert_array_equal(d.transform(np.arange(4.0)), np.arange(4.0) * 3)


def test_saved_and_loaded_it_connects_again_by_address(cluster, tmp_path):
    X, y = iris_like()
    d = DaskPipeline(classifier(), batch_size=50, address=cluster.scheduler_address, name="remote")
    with d:
        d = d.fit(X, y)
        expected = d.predict(X)
        d.save(CX(tmp_path), full_dump=True)
    loaded = CX(tmp_path).load("remote")
    assert loaded.address == cluster.scheduler_address and loaded.client is None
    with loaded:
        np.testing.assert_array_equal(loaded.predict(X), expected)


def test_a_shared_folder_is_loaded_from_the_path(client, tmp_path):
    x = np.arange(12.0)
    with DaskPipeline([Times(5.0, name="t")], batch_size=5, client=client, shared_folder=tmp_path) as d:
        np.testing.assert_array_equal(d.transform(x), x * 5)
        (dump,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
        assert (dump / "Pipeline" / "stepline.json").is_file()
    assert [p for p in tmp_path.iterdir() if not p.name.startswith(".")] == []  # removed on teardown


def test_a_class_from_the_callers_main_runs_on_workers_that_never_saw_it(cluster, tmp_path):
    script = tmp_path / "caller.py"
    script.write_text(textwrap.dedent("""
        import sys, numpy as np
        from stepline.base import BaseStep, NonFittableMixin
        from stepline.distributed.dask import DaskPipeline

        class AddSeven(NonFittableMixin, BaseStep):  # exists only in this script's __main__
            def transform(self, data_inputs):
                return np.asarray(data_inputs) + 7

        if __name__ == "__main__":
            with DaskPipeline([AddSeven()], batch_size=2, address=sys.argv[1]) as d:
                print(d.transform(np.arange(5)).tolist())
    """))
    result = subprocess.run([sys.executable, str(script), cluster.scheduler_address], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[7, 8, 9, 10, 11]"


def test_a_private_local_cluster_starts_in_setup_and_stops_in_teardown():
    import psutil
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with DaskPipeline([Times(2.0)], batch_size=4, n_workers=1) as d:
        np.testing.assert_array_equal(d.transform(np.arange(6.0)), np.arange(6.0) * 2)
        assert d._cluster is not None
    leftover = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert psutil.wait_procs(leftover, timeout=10)[1] == []


def test_dump_bytes_round_trip_and_bad_arguments(tmp_path):
    step = Pipeline([Times(4.0, name="t")], name="p")
    data = dump_bytes(step)
    loaded = load_bytes(data, "p", tmp_path)
    np.testing.assert_array_equal(loaded.transform(np.ones(2)), np.full(2, 4.0))
    with pytest.raises(ValueError, match="batch_size"):
        DaskPipeline([Times()], batch_size=0)
    with pytest.raises(ValueError, match="address or client"):
        DaskPipeline([Times()], address="tcp://127.0.0.1:1", client=object())


def test_a_step_its_client_tore_down_is_never_loaded_again_on_that_worker(tmp_path, monkeypatch):
    # a minibatch cancelled too late, or rescheduled onto a dead worker's replacement, runs
    # after the teardown: it must not unpack a dump that nobody would remove
    from concurrent.futures import CancelledError
    from stepline.distributed import dask as dask_module
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the worker would unpack it
    step = Pipeline([Times(4.0, name="t")], name="p")
    payload = dump_bytes(step)
    assert dask_module._forget_on_worker("p-torn-down") is False  # nothing loaded here yet
    with pytest.raises(CancelledError, match="torn down"):
        dask_module._step_on_worker("p-torn-down", "p", payload)
    assert "p-torn-down" not in loaded_on_worker()
    assert list(tmp_path.glob("stepline-dask-*")) == []


def test_load_bytes_refuses_a_tar_that_writes_outside_its_folder(tmp_path):
    import io
    import tarfile
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    (tmp_path / "into").mkdir()
    with pytest.raises((tarfile.TarError, ValueError)):
        load_bytes(buffer.getvalue(), "p", tmp_path / "into")
    assert not (tmp_path / "escaped.txt").exists()


# ------------------------------------------------------------------ faults
class HangsOn(NonFittableMixin, BaseStep):
    """Waits (far longer than any test) when it sees ``sentinel``."""

    def __init__(self, sentinel, name=None):
        super().__init__(name=name)
        self.sentinel = sentinel

    def transform(self, data_inputs):
        if self.sentinel in np.asarray(data_inputs):
            import threading
            threading.Event().wait(600)
        return data_inputs


def _dumps_under(folder):
    return sorted(str(p) for p in Path(folder).rglob("stepline-dask-*"))


def _wait_for_a_new_worker(client, before, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        workers = set(client.scheduler_info()["workers"])
        if len(workers) == len(before) and workers != before:
            return
        assert time.monotonic() < deadline, f"no new worker came up: {workers}"
        time.sleep(0.1)


def _private_cluster(tmp_path, n_workers=2):
    return distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                    dashboard_address=":0", silence_logs=logging.CRITICAL,
                                    local_directory=str(tmp_path / "dask"))


def test_a_worker_dying_on_minibatch_5_names_it_and_leaves_no_unpacked_dump(tmp_path):
    import dask
    tmp_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "stepline-dask-*")))
    # worker-saturation 1.0: each worker holds only the task it runs, so the death is charged
    # to minibatch 5 alone (by default a second, queued task dies with it as a KilledWorker)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                          "distributed.scheduler.worker-saturation": 1.0}):
        with _private_cluster(tmp_path) as cluster, distributed.Client(cluster) as client:
            with DaskPipeline([FailsOn(10, how="exit", name="dies")], batch_size=2, client=client) as d:
                np.testing.assert_array_equal(d.transform(np.arange(8)), np.arange(8))
                assert len(_dumps_under(tmp_path / "dask")) == 2  # one per worker, in its own folder
                before = set(client.scheduler_info()["workers"])
                with pytest.raises(DaskStepError, match=r"worker died while running step 'Pipeline' on minibatch 5") as info:
                    d.transform(np.arange(12))  # minibatch 5 is [10, 11]
                assert info.value.batch_index == 5
                _wait_for_a_new_worker(client, before)  # the nanny's new worker purges the dead one's folder
                live = client.run(lambda dask_worker: dask_worker.local_directory)
                leftover = [p for p in _dumps_under(tmp_path / "dask")
                            if not any(p.startswith(folder) for folder in live.values())]
                assert leftover == []
            assert _dumps_under(tmp_path / "dask") == []  # teardown removed the live workers' copies
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "stepline-dask-*"))) <= tmp_before


def test_a_hung_step_times_out_naming_the_minibatch_and_its_worker_is_restarted(tmp_path):
    import psutil
    with _private_cluster(tmp_path, n_workers=1) as cluster, distributed.Client(cluster) as client:
        with DaskPipeline(HangsOn(7, name="stuck"), batch_size=2, client=client) as d:
            np.testing.assert_array_equal(d.transform(np.arange(4)), np.arange(4))  # loaded: imports are slow
            d.timeout_s = 2.0
            stuck_pid = next(iter(client.run(os.getpid).values()))
            with pytest.raises(DaskStepError, match=r"'stuck'.*timeout_s=2 s on minibatch 3") as info:
                d.transform(np.arange(10))  # minibatch 3 is [6, 7]
            assert info.value.batch_index == 3
            try:  # the worker process with the stuck thread is gone
                assert psutil.wait_procs([psutil.Process(stuck_pid)], timeout=30)[1] == []
            except psutil.NoSuchProcess:
                pass
            client.wait_for_workers(1, timeout=60)
            np.testing.assert_array_equal(d.transform(np.arange(4)), np.arange(4))  # loading is not timed


def test_timeout_s_is_off_by_default_and_checked():
    assert DaskPipeline([Times()], batch_size=2).timeout_s is None
    with pytest.raises(ValueError, match="timeout_s"):
        DaskPipeline([Times()], batch_size=2, timeout_s=0)



def test_predict_runs_the_workers_in_inference_without_shipping_the_step_again(client):
    from stepline.steps.flow import TrainOnlyWrapper
    x = np.zeros(6)
    with DaskPipeline([Times(1.0), TrainOnlyWrapper(Times(3.0))], batch_size=2, client=client) as d:
        d.transform(x + 1)
        shipped = d._shipped
        np.testing.assert_array_equal(d.predict(x + 1), x + 1)
        np.testing.assert_array_equal(d.transform(x + 1), x + 3)
        assert d._shipped == shipped  # the same dump: workers were not sent a step in another mode
        d.timeout_s = 60.0  # the minibatch then runs in a thread of its own: the mode follows it
        np.testing.assert_array_equal(d.predict(x + 1), x + 1)


def test_a_dask_pipeline_saved_before_timeout_s_existed_still_runs(client):
    d = DaskPipeline([Times(2.0)], batch_size=2, client=client)
    del d.__dict__["timeout_s"]  # what unpickling an older dump gives
    with d:
        np.testing.assert_array_equal(d.transform(np.arange(4.0)), np.arange(4.0) * 2)
