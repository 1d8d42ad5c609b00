"""AutoML on a real Dask LocalCluster (loopback): same trials as a sequential search, workers that
die, live pruning, and what the runner costs a trial beyond the trial itself."""
import logging
import os
import time

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")
distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

from sklearn.linear_model import LogisticRegression  # noqa: E402

from stepline.automl import AutoML  # noqa: E402
from stepline.base import BaseStep  # noqa: E402
from stepline.hyperparams.distributions import LogUniform, Uniform  # noqa: E402
from stepline.pipeline import Pipeline  # noqa: E402
from stepline.steps.sklearn import SKLearnWrapper  # noqa: E402

import automl_helpers as h  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning",
                                        "ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def digits():
    return h.small_digits()


def local_cluster(**kwargs):
    options = {"n_workers": 2, "threads_per_worker": 1, "silence_logs": logging.ERROR, **kwargs}
    return distributed.LocalCluster(processes=True, host="127.0.0.1", dashboard_address=":0", **options)


def test_a_dask_worker_that_dies_fails_its_trial_not_the_search(digits, caplog):
    X, y = digits
    p = Pipeline([h.Exiter(), SKLearnWrapper(LogisticRegression(max_iter=300), {"C": LogUniform(1e-3, 10.0)})])
    # allowed-failures 0: the scheduler does not retry the lost task on the other worker (where it
    # would kill that one too), it fails it at once with KilledWorker
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            local_cluster(silence_logs=logging.CRITICAL) as cluster, \
            distributed.Client(cluster) as client, caplog.at_level(logging.WARNING, logger="stepline.automl"):
        search = AutoML(p, cv=2, n_trials=4, sampler="random", seed=2, client=client, show_progress=False).fit(X, y)
    frame = search.trials_dataframe()
    failed = frame[frame["state"] == "FAIL"]  # seed 2: the 4th trial draws die=True
    assert failed["user_attrs_error"].str.contains("KilledWorker").all()
    assert (failed["params_Exiter__die"] == True).sum() == 1  # noqa: E712 - a column of objects
    # (the trial queued behind it on that worker, if any, is lost with it: no retries allowed)
    assert len(failed) <= 2 and (frame["state"] == "COMPLETE").sum() == 4
    assert search.best_params_["Exiter__die"] is False



@pytest.mark.timeout(60)
def test_the_replacement_of_a_dead_worker_that_held_the_pipeline_runs_the_next_trials():
    """The only worker dies during a trial: its replacement gets the pipeline and runs the rest
    (it waited forever for a task's result lost with the dead worker: the search hung)."""
    X, y = np.zeros((20, 1)), np.zeros(20)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            local_cluster(n_workers=1, silence_logs=logging.CRITICAL) as cluster, distributed.Client(cluster) as client:
        search = AutoML(Pipeline([h.Exiter()]), scoring=_paused_on_this_worker, cv=0.5, n_trials=6,
                        sampler="random", seed=2, client=client, refit=False, show_progress=False).fit(X, y)
        kept = client.run(_what_a_dask_worker_keeps)
        monitors = client.run(_running_monitors)
    failed = [t for t in search.study_.trials if t.state.name == "FAIL"]
    assert len(search.study_.trials) - len(failed) == 6 and failed  # die=True draws, and the trials queued with them
    assert all("KilledWorker" in t.user_attrs["error"] for t in failed)
    assert len({entry["worker"] for entry in search.timeline_ if entry["state"] == "complete"}) >= 2  # replacements
    assert kept == {address: ([], [], []) for address in kept}
    # the replacements were quietened too (their plugin is installed when they join), and resumed
    assert all(t.value == 1.0 for t in search.study_.trials if t.state.name == "COMPLETE")
    assert all(all(running.values()) for running in monitors.values()), monitors


def test_a_two_worker_local_cluster_finishes_the_same_number_of_trials(digits, tmp_path):
    X, y = digits
    db, spied = tmp_path / "study.db", tmp_path / "scorers.txt"
    with local_cluster() as cluster:
        with distributed.Client(cluster) as client:
            search = AutoML(h.digits_pipeline(), scoring=h.storage_spy(spied, db), cv=2, n_trials=5, seed=0,
                            client=client, storage=db, show_progress=False).fit(X, y)
            kept = client.run(_what_a_dask_worker_keeps)
    assert search.best_score_ > 0.8
    assert len({entry["worker"] for entry in search.timeline_}) == 2  # both workers ran trials
    assert kept == {address: ([], [], []) for address in kept}  # the search's pipeline and data dropped
    # one trial more than the workers in flight does not change the trials of a seeded sampler
    sequential = AutoML(h.digits_pipeline(), cv=2, n_trials=5, seed=0, show_progress=False).fit(X, y)
    if os.path.isdir("/proc/self/fd"):  # only the driver opened the study's file
        seen = h.scorers_seen(spied)
        assert len(seen) == 2 and os.getpid() not in seen and not any(seen.values())
    assert [t.params for t in search.study_.trials] == [t.params for t in sequential.study_.trials]
    assert search.best_params_ == sequential.best_params_


def _what_a_dask_worker_keeps():
    from stepline.automl import dask_runner
    return list(dask_runner._DATA), list(dask_runner._PRUNE), list(dask_runner._TEMPLATES)



def test_a_median_pruner_stops_a_bad_torch_trial_live_on_a_local_cluster():
    with local_cluster() as cluster:
        with distributed.Client(cluster) as client:
            good, other, bad = h.torch_regression_search(client=client)
    assert [t.state.name for t in (good, other)] == ["COMPLETE", "COMPLETE"]
    assert sorted(good.intermediate_values) == list(range(1, h.EPOCHS + 1))
    # stopped on its worker well before its 40 epochs: the driver pruned it live
    assert bad.state.name == "PRUNED", bad.intermediate_values
    steps = sorted(bad.intermediate_values)
    assert steps == list(range(1, len(steps) + 1)) and 3 <= len(steps) < h.EPOCHS // 2


class Spin(BaseStep):
    """A fixed ~50 ms of CPU in ``fit``, whatever its value."""

    def __init__(self):
        super().__init__(hyperparams={"x": 0.0}, hyperparams_space={"x": Uniform(-1.0, 1.0)})

    def fit(self, data_inputs, expected_outputs=None):
        end = time.thread_time() + 0.05
        while time.thread_time() < end:
            pass
        return self

    def transform(self, data_inputs):
        return data_inputs


def most_in_flight(timeline: list) -> int:
    """The most trials submitted and not yet told at once, from ``AutoML.timeline_``."""
    moves = sorted([(e["submitted"], 1) for e in timeline] + [(e["received"], -1) for e in timeline])
    in_flight = most = 0
    for _, move in moves:
        in_flight += move
        most = max(most, in_flight)
    return most


def test_each_dask_worker_holds_its_next_trial_so_it_never_waits_for_the_driver():
    X, y = np.zeros((20, 1)), np.zeros(20)
    with local_cluster() as cluster, distributed.Client(cluster) as client:
        search = AutoML(Pipeline([Spin()]), scoring=lambda est, X, y: -abs(est.step["Spin"].hyperparams["x"]),
                        cv=0.5, n_trials=10, sampler="random", seed=0, client=client, refit=False,
                        show_progress=False).fit(X, y)
    assert [t.state.name for t in search.study_.trials] == ["COMPLETE"] * 10
    # 2 running and one queued on each worker (one queued in all before: the worker without
    # one waited for the round trip result -> driver -> tell -> ask -> submit after each trial)
    assert most_in_flight(search.timeline_) == 4
    assert len({entry["worker"] for entry in search.timeline_}) == 2
    # each trial's own CPU (the thread that ran it): at least Spin's 50 ms, at most its wall time
    assert all(0.05 <= entry["cpu"] <= entry["ended"] - entry["started"] + 0.01 for entry in search.timeline_)


def _paused_on_this_worker(estimator, X, y) -> float:
    """A scorer: 1.0 when the worker running the trial has its profiler and tick monitor paused."""
    from distributed import get_worker
    callbacks = get_worker().periodic_callbacks
    return float(not any(callbacks[name].is_running() for name in ("profile", "tick")))


def _running_monitors(dask_worker) -> dict:
    return {name: dask_worker.periodic_callbacks[name].is_running() for name in ("profile", "profile-cycle", "tick", "ticks")}


@pytest.mark.parametrize("quiet", [True, False])
def test_a_search_pauses_the_workers_profiler_and_tick_while_its_trials_run(quiet):
    X, y = np.zeros((20, 1)), np.zeros(20)
    with local_cluster() as cluster, distributed.Client(cluster) as client:
        search = AutoML(Pipeline([Spin()]), scoring=_paused_on_this_worker, cv=0.5, n_trials=4, sampler="random",
                        seed=0, client=client, refit=False, show_progress=False, quiet_dask_workers=quiet).fit(X, y)
        after = client.run(_running_monitors)
    assert [t.value for t in search.study_.trials] == [1.0 if quiet else 0.0] * 4
    assert len({entry["worker"] for entry in search.timeline_}) == 2
    # resumed when the search ended: the dashboard's profile and the loop-latency warnings are back
    assert all(all(running.values()) for running in after.values()), after


def _quiet_twice_then_resume(dask_worker) -> list:
    from stepline.automl import dask_quiet
    dask_worker.periodic_callbacks["ticks"].stop()  # one the user stopped: it stays stopped
    seen = []
    dask_quiet.quiet(dask_worker, "a")
    dask_quiet.quiet(dask_worker, "b")
    seen.append(_running_monitors(dask_worker))
    dask_quiet.resume(dask_worker, "a")  # "b" still runs trials here
    seen.append(_running_monitors(dask_worker))
    dask_quiet.resume(dask_worker, "b")
    dask_quiet.resume(dask_worker, "b")  # twice: nothing more
    seen.append(_running_monitors(dask_worker))
    dask_worker.periodic_callbacks["ticks"].start()
    return seen


def test_the_last_search_to_end_on_a_worker_resumes_only_what_was_running():
    with local_cluster(n_workers=1) as cluster, distributed.Client(cluster) as client:
        (seen,) = client.run(_quiet_twice_then_resume).values()
    paused = dict.fromkeys(("profile", "profile-cycle", "tick", "ticks"), False)
    assert seen[0] == paused and seen[1] == paused
    assert seen[2] == {"profile": True, "profile-cycle": True, "tick": True, "ticks": False}


def _hold(name: str) -> str:
    distributed.Event(name).wait(30)
    return name


def test_a_trial_submitted_but_not_yet_placed_takes_the_idle_thread_it_would_be_counted_on():
    """At the end of a search one more trial is queued only if a thread stays idle. A trial just
    submitted may be on no worker yet when the scheduler is asked: counting its thread as idle
    queued a second trial behind a busy worker while the other went idle for a whole trial
    (a 7/5 split of 12 trials on 2 workers, seen in ``timeline_``)."""
    from stepline.automl.dask_runner import idle_threads
    with local_cluster() as cluster, distributed.Client(cluster) as client:
        release = distributed.Event("stepline-test-release")
        busy = client.submit(_hold, "stepline-test-release", key="busy-trial", pure=False)
        while not any(client.processing().values()):
            time.sleep(0.01)
        processing, threads = client.processing(), client.nthreads()
        assert sorted(len(keys) for keys in processing.values()) == [0, 1]  # one worker busy, one free
        assert idle_threads(processing, threads, {"busy-trial"}) == 1
        assert idle_threads(processing, threads, {"busy-trial", "just-submitted"}) == 0  # it takes the free one
        assert idle_threads(processing, threads, {"busy-trial", "a", "b"}) == -1
        release.set()
        assert busy.result(timeout=30) == "stepline-test-release"
