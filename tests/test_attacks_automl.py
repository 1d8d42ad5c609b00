"""The tuning attacked as a careless or hostile user would: bad spaces, bad storages, bad
scorers, bad arguments, hanging trials. Each error must name what was wrong and where."""
import os
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from automl_helpers import digits_pipeline, small_digits  # noqa: E402
from stepline.automl import AutoML  # noqa: E402
from stepline.base import BaseStep  # noqa: E402
from stepline.hyperparams.distributions import Boolean, Choice, Uniform  # noqa: E402
from stepline.pipeline import Pipeline  # noqa: E402
from stepline.steps.sklearn import SKLearnWrapper  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    return small_digits()


def _search(**kwargs):
    kwargs.setdefault("cv", 2)
    kwargs.setdefault("n_trials", 2)
    kwargs.setdefault("show_progress", False)
    return AutoML(kwargs.pop("pipeline", None) or digits_pipeline(), **kwargs)


def _counting_scorer(log: Path):
    def scorer(estimator, X, y):
        with open(log, "a") as out:
            out.write(f"{os.getpid()}\n")
        return float(np.mean(estimator.predict(X) == y))
    return scorer


# ------------------------------------------------------------------ storages

def test_a_storage_file_that_is_not_sqlite_is_a_clear_error_naming_it_and_left_as_it_was(digits, tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"my notes, not a database\n" * 100)
    with pytest.raises(ValueError, match=r"storage .*notes\.db.*not .*SQLite"):
        _search(storage=path).fit(*digits)
    assert path.read_bytes() == b"my notes, not a database\n" * 100


def test_a_storage_path_under_a_file_or_a_missing_folder_is_a_clear_error_naming_it(digits, tmp_path):
    (tmp_path / "a_file").write_text("x")
    for path in (tmp_path / "a_file" / "s.db", tmp_path / "missing" / "s.db"):
        with pytest.raises(ValueError, match=rf"storage .*{path.parent.name}/s\.db"):
            _search(storage=path).fit(*digits)
    assert (tmp_path / "a_file").read_text() == "x"


def test_a_storage_locked_by_another_process_waits_then_names_it(digits, tmp_path):
    """A writer holding the SQLite file's lock: SQLite's busy wait (5 s), then an error naming
    the storage, never a raw SQLAlchemy traceback; once released, the same call resumes."""
    path = tmp_path / "s.db"
    _search(storage=path, refit=False, n_trials=1).fit(*digits)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(ValueError, match=r"storage .*s\.db.*locked"):
            _search(storage=path, refit=False, n_trials=2).fit(*digits)
    finally:
        holder.close()
    done = _search(storage=path, refit=False, n_trials=2).fit(*digits)
    assert len(done.study_.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 2


def test_a_space_changed_between_a_run_and_its_resume_names_the_hyperparameter_and_the_study(digits, tmp_path):
    from sklearn.linear_model import LogisticRegression
    path = tmp_path / "s.db"
    _search(storage=path, refit=False).fit(*digits)
    changed = Pipeline([SKLearnWrapper(LogisticRegression(max_iter=300), {"C": Choice([0.1, 1.0])})]).set_name("digits")
    with pytest.raises(ValueError, match=r"'stepline-digits'.*LogisticRegression__C.*study_name"):
        _search(pipeline=changed, storage=path, refit=False, n_trials=4).fit(*digits)
    trials = optuna.load_study(study_name="stepline-digits", storage=f"sqlite:///{path}").get_trials()
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]


# ------------------------------------------------------------------ scorers

@pytest.mark.parametrize("returned", ["0.5", None, True, np.array([0.5, 0.7])],
                         ids=["str", "None", "bool", "array"])
def test_a_scorer_returning_something_else_than_a_number_fails_the_trial_naming_the_scorer(digits, returned):
    def odd_scorer(estimator, X, y):
        return returned
    with pytest.raises(RuntimeError, match=r"no trial completed.*scorer 'odd_scorer' returned"):
        _search(scoring=odd_scorer).fit(*digits)


# ------------------------------------------------------------------ arguments

def test_cv_with_more_folds_than_rows_is_a_clear_error_naming_cv(digits):
    X, y = digits
    with pytest.raises(ValueError, match=r"AutoML: cv=1000.*300"):
        _search(cv=1000).fit(X, y)


def test_timeout_s_true_is_refused():
    with pytest.raises(ValueError, match="timeout_s"):
        AutoML(digits_pipeline(), timeout_s=True)


def test_one_fold_and_negative_or_zero_n_jobs_are_refused_by_name(digits):
    with pytest.raises(ValueError, match=r"an int cv is the number of folds, at least 2; got 1"):
        _search(cv=1).fit(*digits)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match=rf"n_jobs must be an int >= 1, got {bad!r}"):
            AutoML(digits_pipeline(), n_jobs=bad)


def test_more_workers_than_trials_starts_no_more_worker_processes_than_trials(digits, tmp_path):
    log = tmp_path / "scored"
    search = _search(n_jobs=6, n_trials=2, scoring=_counting_scorer(log), refit=False).fit(*digits)
    assert search.n_workers_ == 2


def test_save_best_to_a_folder_that_is_not_a_dump_is_refused_before_the_search(digits, tmp_path):
    log = tmp_path / "scored"
    (tmp_path / "out" / "digits").mkdir(parents=True)
    (tmp_path / "out" / "digits" / "keep.txt").write_text("precious")
    with pytest.raises(ValueError, match=r"save_best_to.*digits.*not a stepline dump"):
        _search(save_best_to=tmp_path / "out", scoring=_counting_scorer(log)).fit(*digits)
    assert not log.exists()
    assert os.listdir(tmp_path / "out" / "digits") == ["keep.txt"]


def test_save_best_to_under_a_file_is_refused_before_the_search(digits, tmp_path):
    log = tmp_path / "scored"
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match=r"save_best_to.*a_file.*a file"):
        _search(save_best_to=tmp_path / "a_file" / "out", scoring=_counting_scorer(log)).fit(*digits)
    assert not log.exists()
    assert (tmp_path / "a_file").read_text() == "x"


# ------------------------------------------------------------------ hanging trials

class Sleeper(BaseStep):
    """Hangs in ``fit`` when ``hang`` is true (a trial that never ends)."""

    def __init__(self):
        super().__init__(hyperparams={"hang": False}, hyperparams_space={"hang": Boolean()})

    def fit(self, data_inputs, expected_outputs=None):
        if self.hyperparams["hang"]:
            time.sleep(3600)
        return self

    def transform(self, data_inputs):
        return data_inputs


def _hanging_search(n_jobs):
    from sklearn.linear_model import LogisticRegression
    pipeline = Pipeline([Sleeper(), SKLearnWrapper(LogisticRegression(max_iter=100))]).set_name("hangs")
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="hangs", direction="maximize")
    for hang in (True, False, False):
        study.enqueue_trial({"Sleeper__hang": hang})
    return AutoML(pipeline, cv=2, n_trials=2, storage=storage, study_name="hangs", n_jobs=n_jobs,
                  trial_timeout_s=1.0, refit=False, show_progress=False)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_trial_that_hangs_is_stopped_after_trial_timeout_s_and_the_search_goes_on(digits, n_jobs):
    psutil = pytest.importorskip("psutil")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    started = time.monotonic()
    search = _hanging_search(n_jobs).fit(*digits)
    assert time.monotonic() - started < 30
    trials = search.study_.get_trials()
    assert trials[0].state == optuna.trial.TrialState.FAIL
    assert "trial_timeout_s" in trials[0].user_attrs["error"]
    assert [t.state for t in trials[1:]] == [optuna.trial.TrialState.COMPLETE] * 2
    assert not _worker_processes(psutil, before)


def _worker_processes(psutil, before: set) -> list:
    """Processes started since ``before`` and still alive, but the fork server and the resource
    tracker (started once per test process, on purpose)."""
    alive = []
    for process in psutil.Process().children(recursive=True):
        try:
            command = " ".join(process.cmdline())
            if (process.pid not in before and process.status() != psutil.STATUS_ZOMBIE
                    and "forkserver" not in command and "resource_tracker" not in command):
                alive.append(command)
        except psutil.NoSuchProcess:
            continue
    return alive


def test_trial_timeout_s_is_checked():
    for bad in (0, -1, float("nan"), True, "1"):
        with pytest.raises(ValueError, match="trial_timeout_s"):
            AutoML(digits_pipeline(), trial_timeout_s=bad)
    with pytest.raises(ValueError, match="trial_timeout_s .*not available with client"):
        AutoML(digits_pipeline(), trial_timeout_s=5, client=object())


# ------------------------------------------------------------------ the search process stopped

class Holder(BaseStep):
    """Writes its process id into ``$HOLD_PIDS`` when fitted, then holds while ``$HOLD_MARKER`` exists."""

    def __init__(self):
        super().__init__(hyperparams={"flag": False}, hyperparams_space={"flag": Boolean()})

    def fit(self, data_inputs, expected_outputs=None):
        marker = os.environ.get("HOLD_MARKER")
        if marker:
            with open(os.environ["HOLD_PIDS"], "a") as out:
                out.write(f"{os.getpid()}\n")
            while os.path.exists(marker):
                time.sleep(0.05)
        return self

    def transform(self, data_inputs):
        return data_inputs


HELD_SEARCH = """
import sys
from sklearn.linear_model import LogisticRegression
from automl_helpers import small_digits
from stepline.automl import AutoML
from stepline.pipeline import Pipeline
from stepline.steps.sklearn import SKLearnWrapper
from test_attacks_automl import Holder

if __name__ == "__main__":
    X, y = small_digits()
    pipeline = Pipeline([Holder(), SKLearnWrapper(LogisticRegression(max_iter=100))]).set_name("held")
    search = AutoML(pipeline, cv=2, n_trials=3, n_jobs=2, storage=sys.argv[1], refit=False,
                    show_progress=False).fit(X, y)
    print("done", len(search.study_.trials), flush=True)
"""


def _held_search(tmp_path, marker: Path):
    script = tmp_path / "held.py"
    script.write_text(HELD_SEARCH)
    tests = str(Path(__file__).parent)
    src = str(Path(__file__).parent.parent / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, tests, os.environ.get("PYTHONPATH", "")]),
           "HOLD_MARKER": str(marker), "HOLD_PIDS": str(tmp_path / "pids")}
    return script, env


def _wait_for_holders(tmp_path, child, count: int) -> list:
    """The pids of ``count`` trials holding in their fit (a deadline, not a sleep, bounds it)."""
    pids_file = tmp_path / "pids"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        pids = pids_file.read_text().split() if pids_file.exists() else []
        if len(pids) >= count:
            return [int(p) for p in pids]
        time.sleep(0.05)
    raise AssertionError(f"the search never had {count} trials running (exit code {child.poll()})")


def _states(db: Path) -> dict:
    with sqlite3.connect(db) as connection:
        return dict(connection.execute("select state, count(*) from trials group by state").fetchall())


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGKILL"])
def test_a_search_interrupted_or_killed_leaves_no_worker_and_resumes(tmp_path, signal_name):
    import signal
    import subprocess
    psutil = pytest.importorskip("psutil")
    marker = tmp_path / "hold"
    marker.write_text("")
    db = tmp_path / "held.db"
    script, env = _held_search(tmp_path, marker)
    child = subprocess.Popen([sys.executable, str(script), str(db)], env=env, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        workers = [psutil.Process(pid) for pid in _wait_for_holders(tmp_path, child, 2)]
        child.send_signal(getattr(signal, signal_name))
        sent = time.monotonic()
        child.wait(30)
        assert time.monotonic() - sent < 4, "the search took its time to stop"
        _, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"worker processes left running after {signal_name} of the search: {alive}"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if signal_name == "SIGINT":
        assert "KeyboardInterrupt" in child.stderr.read()
        assert "RUNNING" not in _states(db)  # the interrupted trials failed, none left running
    marker.unlink()
    resumed = subprocess.run([sys.executable, str(script), str(db)], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    states = _states(db)
    assert states.get("COMPLETE") == 3 and "RUNNING" not in states


# ------------------------------------------------------------------ spaces (handled before a search)

@pytest.mark.parametrize("make, match", [
    (lambda: Uniform(float("nan"), 1.0), r"Uniform: low must be a finite number, got nan"),
    (lambda: Uniform(0.0, float("nan")), r"Uniform: high must be a finite number, got nan"),
])
def test_nan_bounds_are_refused_by_name(make, match):
    from stepline.hyperparams.distributions import LogUniform, Normal
    with pytest.raises(ValueError, match=match):
        make()
    with pytest.raises(ValueError, match=r"LogUniform: max_included must be a finite number, got nan"):
        LogUniform(1.0, float("nan"))
    with pytest.raises(ValueError, match=r"Normal: mean must be a finite number, got nan"):
        Normal(float("nan"), 1.0)


def test_a_searched_name_no_step_has_or_that_routes_nowhere_is_refused_naming_it():
    pipeline = digits_pipeline()
    with pytest.raises(Exception, match=r"'LogisticRegression'.*no hyperparameter 'nope'"):
        pipeline.set_hyperparams_space({"LogisticRegression__nope": Uniform(0.0, 1.0)})
    with pytest.raises(Exception, match=r"Nowhere"):
        pipeline.set_hyperparams_space({"Nowhere__C": Uniform(0.0, 1.0)})
    with pytest.raises(Exception, match=r"no hyperparameter 'C__deeper'|'C__deeper'|deeper"):
        pipeline.set_hyperparams_space({"LogisticRegression__C__deeper": Uniform(0.0, 1.0)})
    assert list(pipeline.get_hyperparams_space().to_flat_dict()) == ["LogisticRegression__C"]


def test_ctrl_c_in_a_trial_run_by_the_driver_leaves_the_storage_consistent_and_resumable(digits, tmp_path):
    path = tmp_path / "s.db"
    calls = []

    def interrupting_scorer(estimator, X, y):
        calls.append(1)
        if len(calls) == 3:  # the first fold of the second trial
            raise KeyboardInterrupt
        return float(np.mean(estimator.predict(X) == y))
    with pytest.raises(KeyboardInterrupt):
        _search(storage=path, n_trials=3, scoring=interrupting_scorer, refit=False).fit(*digits)
    states = _states(path)
    assert states == {"COMPLETE": 1, "FAIL": 1}
    done = _search(storage=path, n_trials=3, refit=False).fit(*digits)
    assert [t.state.name for t in done.study_.trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert "Interrupted" in done.study_.trials[1].user_attrs["error"]


def test_a_storage_locked_while_the_search_runs_stops_it_naming_the_storage_and_it_resumes(digits, tmp_path):
    path = tmp_path / "s.db"
    holders = []

    def locking_scorer(estimator, X, y):  # another writer takes the file's lock during trial 0
        if not holders:
            holders.append(sqlite3.connect(path, isolation_level=None))
            holders[0].execute("BEGIN EXCLUSIVE")
        return float(np.mean(estimator.predict(X) == y))
    try:
        with pytest.raises(RuntimeError, match=r"storage .*s\.db.*locked.*run the same call again"):
            _search(storage=path, n_trials=2, scoring=locking_scorer, refit=False).fit(*digits)
    finally:
        for holder in holders:
            holder.close()
    done = _search(storage=path, n_trials=2, refit=False).fit(*digits)
    states = _states(path)
    assert states.get("COMPLETE") == 2 and "RUNNING" not in states
    assert len(done.study_.trials) <= 3


def test_a_study_name_holding_another_search_is_refused_naming_what_differs(digits, tmp_path):
    """A study to minimize, or whose trials searched other hyperparameters, is not this search's:
    reusing it would minimize the score, or count (and pick as best) another objective's trials."""
    path = tmp_path / "s.db"
    url = f"sqlite:///{path}"
    other = optuna.create_study(storage=url, study_name="stepline-digits", direction="minimize")
    other.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    with pytest.raises(ValueError, match=r"'stepline-digits'.*minimize.*study_name"):
        _search(storage=path, n_trials=4, refit=False).fit(*digits)
    optuna.create_study(storage=url, study_name="maximized", direction="maximize").optimize(
        lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    with pytest.raises(ValueError, match=r"'maximized'.*hyperparameters \['x'\].*study_name"):
        _search(storage=path, study_name="maximized", n_trials=4, refit=False).fit(*digits)
    assert len(optuna.load_study(study_name="maximized", storage=url).trials) == 2
