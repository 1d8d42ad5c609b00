"""AutoML end to end on scikit-learn's bundled data: results, parallel runs, resume, failures, pruning."""
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from stepline.automl import AutoML  # noqa: E402
from stepline.base import BaseStep  # noqa: E402
from stepline.demo import build_pipeline  # noqa: E402
from stepline.hyperparams.distributions import FixedHyperparameter, LogUniform, Uniform  # noqa: E402
from stepline.pipeline import Pipeline  # noqa: E402
from stepline.steps.sklearn import SKLearnWrapper  # noqa: E402

import automl_helpers as h  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
SRC = str(Path(__file__).resolve().parent.parent / "src")

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning",
                                        "ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return X / X.max(axis=0), y


@pytest.fixture(scope="module")
def digits():
    return h.small_digits()


def states(search):
    return search.trials_dataframe()["state"].value_counts().to_dict()


def child_env():
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


# ------------------------------------------------------------------ end to end

def test_the_seed_pipeline_is_tuned_end_to_end(cancer, tmp_path):
    X, y = cancer
    p = build_pipeline(0)
    search = AutoML(p, scoring="accuracy", cv=3, n_trials=6, seed=0, show_progress=False).fit(X, y)
    assert set(search.best_params_) == set(p.get_hyperparams_space().to_flat_dict())
    for key, value in search.best_params_.items():
        assert value in p.get_hyperparams_space()[key]
    assert 0.85 < search.best_score_ <= 1.0
    assert search.best_score_ == max(t.value for t in search.study_.trials if t.value is not None)
    assert states(search)["COMPLETE"] == 6
    predictions = search.predict(X)
    assert predictions.shape == y.shape and np.mean(predictions == y) > 0.85
    assert search.best_pipeline_["LogisticRegression"].wrapped_sklearn_predictor.C == search.best_params_["LogisticRegression__C"]
    assert p.get_hyperparams() == build_pipeline(0).get_hyperparams()  # the given pipeline is untouched
    table = search.report(top=3)
    assert "LogisticRegression__C" in table and f"{search.best_score_:.6g}" in table
    png = search.plot_history(tmp_path / "history.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_validation_split_and_a_callable_scorer(digits):
    X, y = digits

    def balanced(estimator, X, y):
        from sklearn.metrics import balanced_accuracy_score
        return balanced_accuracy_score(y, estimator.predict(X))
    search = AutoML(h.digits_pipeline(), scoring=balanced, cv=0.25, n_trials=3, sampler="random", seed=1,
                    show_progress=False).fit(X, y)
    assert 0.5 < search.best_score_ <= 1.0
    assert search.score(X, y) == pytest.approx(balanced(search, X, y))


def test_the_same_best_params_as_plain_optuna(cancer):
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    X, y = cancer
    p = build_pipeline(0)
    search = AutoML(p, scoring="accuracy", cv=3, n_trials=10, sampler="tpe", seed=7, show_progress=False).fit(X, y)

    def objective(trial):
        values = {"LogisticRegression__C": trial.suggest_float("LogisticRegression__C", 0.01, 10.0, log=True),
                  "LogisticRegression__fit_intercept": trial.suggest_categorical("LogisticRegression__fit_intercept", [True, False]),
                  "LogisticRegression__dual": trial.suggest_categorical("LogisticRegression__dual", [True, False]),
                  "LogisticRegression__penalty": trial.suggest_categorical("LogisticRegression__penalty", ["l1", "l2"]),
                  "LogisticRegression__max_iter": trial.suggest_int("LogisticRegression__max_iter", 20, 200)}
        estimator = build_pipeline(0).set_hyperparams(values).to_sklearn()
        return cross_val_score(estimator, X, y, cv=StratifiedKFold(3), scoring="accuracy", error_score="raise").mean()
    plain = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=7))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain.optimize(objective, n_trials=40, catch=(ValueError,),
                       callbacks=[optuna.study.MaxTrialsCallback(10, states=(optuna.trial.TrialState.COMPLETE,))])
    assert search.best_params_ == plain.best_params
    assert search.best_score_ == plain.best_value
    assert [t.state for t in search.study_.trials] == [t.state for t in plain.trials]


def test_a_splitter_scores_as_scikit_learn_and_transform_goes_through_the_best_pipeline(digits):
    from sklearn.model_selection import KFold, cross_val_score
    X, y = digits
    splitter = KFold(3, shuffle=True, random_state=0)
    search = AutoML(h.digits_pipeline(), scoring="accuracy", cv=splitter, n_trials=3, sampler="random", seed=3,
                    show_progress=False).fit(X, y)
    best = h.digits_pipeline().set_hyperparams(search.best_params_).to_sklearn()
    assert search.best_score_ == pytest.approx(cross_val_score(best, X, y, cv=splitter, scoring="accuracy").mean())
    as_indices = AutoML(h.digits_pipeline(), scoring="accuracy", cv=list(splitter.split(X, y)), n_trials=3,
                        sampler="random", seed=3, show_progress=False).fit(X, y)
    assert as_indices.best_score_ == search.best_score_ and as_indices.best_params_ == search.best_params_
    rows = X[:25]
    assert np.array_equal(search.transform(rows), search.best_pipeline_.predict(rows))
    assert np.array_equal(search.predict(rows), search.best_pipeline_.predict(rows))


PROGRESS_SEARCH = textwrap.dedent("""
    import sys
    import numpy as np
    from stepline.automl import AutoML
    from stepline.hyperparams.distributions import Uniform
    from stepline.pipeline import Pipeline
    from stepline.steps.numpy import MultiplyByN

    p = Pipeline([MultiplyByN(2)])
    p["MultiplyByN"].set_hyperparams_space({"multiply_by": Uniform(1.0, 3.0)})
    AutoML(p, scoring=lambda est, X, y: 1.0, cv=0.5, n_trials=3, refit=False,
           show_progress=sys.argv[1] == "on").fit(np.zeros((10, 1)), np.zeros(10))
""")


@pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal")
@pytest.mark.parametrize("show", ["on", "off"])
def test_a_progress_bar_on_a_terminal_unless_turned_off(show):
    import fcntl
    import pty
    import struct
    import termios
    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    child = subprocess.Popen([sys.executable, "-c", PROGRESS_SEARCH, show], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=terminal, env=child_env())
    os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(main)
    assert child.wait(60) == 0, seen
    text = seen.decode(errors="replace")
    if show == "on":
        assert "trials" in text and "3/3" in text, text
    else:
        assert "trials" not in text and "3/3" not in text, text


# ------------------------------------------------------------------ failures

class Unloadable(BaseStep):
    """Loads only in the process that built it: a worker cannot load the dump."""

    def __init__(self):
        super().__init__()
        self.built_in = os.getpid()

    def __setstate__(self, state):
        if state.get("built_in") != os.getpid():
            raise RuntimeError("this step cannot be loaded here")
        super().__setstate__(state)

    def transform(self, data_inputs):
        return data_inputs


class Epochs(BaseStep):
    """Trains 20 "epochs", each reported; the loss stays high when ``rate`` is low."""

    def __init__(self):
        super().__init__(hyperparams={"rate": 0.5}, hyperparams_space={"rate": Uniform(0.0, 1.0)})

    def fit(self, data_inputs, expected_outputs=None):
        from stepline.core.epochs import report_epoch
        for epoch in range(1, 21):
            report_epoch({"epoch": epoch, "loss": 10 * (1 - self.hyperparams["rate"]) + 1 / epoch})
        return self

    def transform(self, data_inputs):
        return data_inputs


def test_failed_trials_are_recorded_with_their_error_and_the_search_goes_on(cancer):
    X, y = cancer
    p = build_pipeline(0)  # liblinear refuses penalty="l1" with dual=True
    p["LogisticRegression"].set_hyperparams_space({"dual": FixedHyperparameter(True)})
    search = AutoML(p, scoring="accuracy", cv=3, n_trials=4, sampler="random", seed=0, show_progress=False).fit(X, y)
    frame = search.trials_dataframe()
    failed = frame[frame["state"] == "FAIL"]
    assert len(failed) >= 1 and (frame["state"] == "COMPLETE").sum() == 4
    assert (failed["params_LogisticRegression__penalty"] == "l1").all()
    assert failed["user_attrs_error"].str.contains("dual").all()
    assert search.best_params_["LogisticRegression__penalty"] == "l2"


def test_a_search_where_every_trial_fails_says_so(cancer):
    X, y = cancer
    p = build_pipeline(0)
    p["LogisticRegression"].set_hyperparams_space({"dual": FixedHyperparameter(True),
                                                   "penalty": FixedHyperparameter("l1")})
    with pytest.raises(RuntimeError, match="no trial completed.*dual"):
        AutoML(p, cv=3, n_trials=2, show_progress=False).fit(X, y)


def test_a_worker_that_dies_fails_its_trial_not_the_search(digits, caplog):
    X, y = digits
    p = Pipeline([h.Exiter(), SKLearnWrapper(LogisticRegression(max_iter=300), {"C": LogUniform(1e-3, 10.0)})])
    with caplog.at_level(logging.WARNING, logger="stepline.automl"):
        search = AutoML(p, cv=2, n_trials=4, sampler="random", seed=2, n_jobs=2, show_progress=False).fit(X, y)
    frame = search.trials_dataframe()
    died = frame[frame["state"] == "FAIL"]  # seed 2: the 4th trial draws die=True
    assert len(died) == 1 and died["user_attrs_error"].str.contains("WorkerDied").all()
    assert (died["params_Exiter__die"] == True).all()  # noqa: E712 - a column of objects
    assert (frame["state"] == "COMPLETE").sum() == 4
    assert search.best_params_["Exiter__die"] is False
    assert "died" in caplog.text


def test_a_worker_that_cannot_load_the_dump_stops_the_search_with_its_error(digits):
    from stepline.automl.workers import WorkerStartError
    X, y = digits
    p = Pipeline([Unloadable(), SKLearnWrapper(LogisticRegression(max_iter=300), {"C": LogUniform(1e-3, 10.0)})])
    with pytest.raises(WorkerStartError, match="could not load the pipeline.*cannot be loaded here"):
        AutoML(p, cv=2, n_trials=2, n_jobs=2, show_progress=False).fit(X, y)


def test_timeout_s_stops_starting_trials(digits):
    X, y = digits
    search = AutoML(h.digits_pipeline(), cv=2, n_trials=500, timeout_s=1.0, show_progress=False).fit(X, y)
    assert 1 <= states(search)["COMPLETE"] < 500
    with pytest.raises(RuntimeError, match="no trial completed"):  # the deadline passed before the first
        AutoML(h.digits_pipeline(), cv=2, n_trials=5, timeout_s=1e-9, show_progress=False).fit(X, y)


def test_importing_stepline_automl_does_not_import_optuna():
    code = "import sys, stepline.automl; print(sorted({'optuna', 'matplotlib', 'distributed'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="n_trials"):
        AutoML(h.digits_pipeline(), n_trials=0)
    with pytest.raises(ValueError, match="not both"):
        AutoML(h.digits_pipeline(), n_jobs=2, client=object())
    with pytest.raises(ValueError, match="sampler"):
        AutoML(h.digits_pipeline(), sampler="grid", n_trials=1).fit(np.zeros((10, 2)), np.arange(10) % 2)
    with pytest.raises(ValueError, match="scorer name"):
        AutoML(h.digits_pipeline(), scoring="acuracy", n_trials=1).fit(np.zeros((10, 2)), np.arange(10) % 2)
    with pytest.raises(ValueError, match="validation fraction"):
        AutoML(h.digits_pipeline(), cv=1.5, n_trials=1).fit(np.zeros((10, 2)), np.arange(10) % 2)
    with pytest.raises(ValueError, match="quiet_dask_workers must be True or False, got 'no'"):
        AutoML(h.digits_pipeline(), quiet_dask_workers="no")


# ------------------------------------------------------------------ parallel

def test_two_worker_processes_finish_the_same_number_of_trials(digits):
    X, y = digits
    search = AutoML(h.digits_pipeline(), cv=2, n_trials=5, seed=0, n_jobs=2, show_progress=False).fit(X, y)
    numbers = [t.number for t in search.study_.trials]
    assert states(search) == {"COMPLETE": 5} and numbers == list(range(5))
    assert search.best_score_ > 0.8


MAIN_THAT_COUNTS_ITS_RUNS = textwrap.dedent("""
    import os, sys
    with open(sys.argv[1], "a") as runs:  # every process that runs this script's top level
        runs.write(f"{__name__} {os.getpid()}\\n")
    import numpy as np
    from stepline.automl import AutoML
    from stepline.hyperparams.distributions import Uniform
    from stepline.pipeline import Pipeline
    from stepline.steps.numpy import MultiplyByN

    if __name__ == "__main__":
        p = Pipeline([MultiplyByN(2)])
        p["MultiplyByN"].set_hyperparams_space({"multiply_by": Uniform(1.0, 3.0)})
        search = AutoML(p, scoring=lambda est, X, y: -abs(est.step["MultiplyByN"].hyperparams["multiply_by"] - 2),
                        cv=0.5, n_trials=6, n_jobs=2, refit=False, show_progress=False).fit(np.zeros((10, 1)), np.zeros(10))
        print("trials", len(search.study_.trials), "workers", len({e["worker"] for e in search.timeline_}))
""")


def test_worker_processes_do_not_each_rerun_the_drivers_main_script(tmp_path):
    """multiprocessing runs the driver's script in every child; the fork server runs it once for all."""
    script, runs = tmp_path / "main.py", tmp_path / "runs.txt"
    script.write_text(MAIN_THAT_COUNTS_ITS_RUNS)
    out = subprocess.run([sys.executable, str(script), str(runs)], capture_output=True, text=True,
                         env=child_env(), cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "trials 6 workers 2" in out.stdout
    names = [line.split()[0] for line in runs.read_text().splitlines()]
    assert sorted(names) == ["__main__", "__mp_main__"]  # the driver, and the fork server once


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc/self/fd")
def test_only_the_driver_opens_the_storage_worker_processes_only_evaluate(digits, tmp_path):
    X, y = digits
    db, log = tmp_path / "study.db", tmp_path / "scorers.txt"
    search = AutoML(h.digits_pipeline(), scoring=h.storage_spy(log, db), cv=2, n_trials=4, seed=0, n_jobs=2,
                    storage=db, refit=False, show_progress=False).fit(X, y)
    assert states(search) == {"COMPLETE": 4}
    seen = h.scorers_seen(log)
    assert len(seen) == 2 and os.getpid() not in seen  # two worker processes scored
    assert not any(seen.values())  # and neither had the study's file open
    log.unlink()  # the spy sees the file where it is open: in the driver, with n_jobs=1
    AutoML(h.digits_pipeline(), scoring=h.storage_spy(log, db), cv=2, n_trials=5, seed=0, storage=db,
           refit=False, show_progress=False).fit(X, y)
    assert h.scorers_seen(log) == {os.getpid(): True}


# ------------------------------------------------------------------ resume

RESUMABLE_SEARCH = textwrap.dedent("""
    import os, sys, time, warnings
    warnings.simplefilter("ignore")
    from sklearn.datasets import load_breast_cancer
    from sklearn.metrics import accuracy_score
    from stepline.automl import AutoML
    from stepline.demo import build_pipeline

    calls = 0
    def scorer(estimator, X, y):
        global calls
        calls += 1
        print("scored", calls, flush=True)
        if os.environ.get("BLOCK_AT") and calls == int(os.environ["BLOCK_AT"]):
            time.sleep(120)  # the test kills this process here, in the middle of a trial
        return accuracy_score(y, estimator.predict(X))

    X, y = load_breast_cancer(return_X_y=True)
    search = AutoML(build_pipeline(0), scoring=scorer, cv=2, n_trials=6, sampler="random", seed=0,
                    storage=sys.argv[1], show_progress=False).fit(X / X.max(axis=0), y)
    print("best", search.best_score_, flush=True)
""")


def test_a_search_killed_with_sigkill_resumes_without_counting_a_trial_twice(tmp_path):
    script = tmp_path / "search.py"
    script.write_text(RESUMABLE_SEARCH)
    db = tmp_path / "search.db"
    child = subprocess.Popen([sys.executable, str(script), str(db)], stdout=subprocess.PIPE, text=True,
                             env={**child_env(), "BLOCK_AT": "7"}, cwd=tmp_path)
    try:
        for line in child.stdout:  # two folds a trial: call 7 is the first fold of the 4th trial run
            if line.strip() == "scored 7":
                break
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(30)
    with sqlite3.connect(db) as connection:
        before = dict(connection.execute("select state, count(*) from trials group by state").fetchall())
    assert before.get("RUNNING") == 1 and before.get("COMPLETE", 0) + before.get("FAIL", 0) >= 2

    resumed = subprocess.run([sys.executable, str(script), str(db)], capture_output=True, text=True,
                             env=child_env(), cwd=tmp_path, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    study = optuna.load_study(study_name="stepline-demo_pipeline", storage=f"sqlite:///{db}")
    by_state = {}
    for trial in study.trials:
        by_state.setdefault(trial.state.name, []).append(trial.number)
    assert len(by_state["COMPLETE"]) == 6 and "RUNNING" not in by_state
    assert sorted(t.number for t in study.trials) == list(range(len(study.trials)))  # none twice
    abandoned = [t for t in study.trials if "Abandoned" in t.user_attrs.get("error", "")]
    assert len(abandoned) == 1 and abandoned[0].state.name == "FAIL"
    assert f"best {study.best_value}" in resumed.stdout


def test_a_finished_search_run_again_runs_no_new_trial(digits, tmp_path):
    X, y = digits
    storage = tmp_path / "again.db"
    first = AutoML(h.digits_pipeline(), cv=2, n_trials=3, seed=0, storage=storage, show_progress=False).fit(X, y)
    again = AutoML(h.digits_pipeline(), cv=2, n_trials=3, seed=0, storage=storage, show_progress=False).fit(X, y)
    assert len(again.study_.trials) == 3 and again.best_params_ == first.best_params_
    more = AutoML(h.digits_pipeline(), cv=2, n_trials=5, seed=0, storage=str(storage), show_progress=False).fit(X, y)
    assert states(more) == {"COMPLETE": 5}


# ------------------------------------------------------------------ the best pipeline

LOAD_AND_PREDICT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from stepline import CX
    step = CX(sys.argv[1]).load(sys.argv[2])
    print(json.dumps(step.predict(np.asarray(json.loads(sys.stdin.read()))).tolist()))
""")


def test_the_best_pipeline_is_saved_and_predicts_the_same_in_a_fresh_process(cancer, tmp_path):
    X, y = cancer
    out = tmp_path / "best"
    search = AutoML(build_pipeline(0), cv=3, n_trials=3, seed=0, save_best_to=out, show_progress=False).fit(X, y)
    rows = X[::7]
    loaded = subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, str(out), "demo_pipeline"],
                            input=json.dumps(rows.tolist()), capture_output=True, text=True,
                            env=child_env(), timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout) == search.predict(rows).tolist()


# ------------------------------------------------------------------ pruning

def test_pruning_decides_live_for_trials_in_worker_processes():
    X, y = np.zeros((20, 1)), np.zeros(20)
    search = AutoML(Pipeline([Epochs()]), scoring=lambda est, X, y: est.step["Epochs"].hyperparams["rate"],
                    cv=0.5, n_trials=6, sampler="random", seed=0, n_jobs=2, refit=False, show_progress=False,
                    pruner=optuna.pruners.ThresholdPruner(lower=-5.0, n_warmup_steps=3)).fit(X, y)
    by_state = {}
    for trial in search.study_.trials:
        by_state.setdefault(trial.state.name, []).append(trial)
    assert by_state.get("PRUNED") and by_state.get("COMPLETE")
    for trial in by_state["PRUNED"]:  # loss > 5 once the warm-up is over: stopped at step 3
        assert sorted(trial.intermediate_values) == [1, 2, 3] and trial.params["Epochs__rate"] < 0.55
    for trial in by_state["COMPLETE"]:
        assert sorted(trial.intermediate_values) == list(range(1, 21)) and trial.params["Epochs__rate"] > 0.45


def test_pruning_stops_a_torch_step_trial():
    pytest.importorskip("torch")
    from torch import nn

    from stepline.torch import TorchStep
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4)).astype(np.float32)
    y = (X @ np.array([1.0, -2.0, 0.5, 0.0], dtype=np.float32))[:, None]
    step = TorchStep(nn.Linear, module_kwargs={"in_features": 4, "out_features": 1},
                     hyperparams={"epochs": 30, "device": "cpu", "seed": 0, "batch_size": 50},
                     hyperparams_space={"learning_rate": LogUniform(1e-3, 0.5)}, name="linear")
    pruner = optuna.pruners.ThresholdPruner(lower=-3.0, n_warmup_steps=5)  # prune while mse > 3
    search = AutoML(Pipeline([step]), scoring="neg_mean_squared_error", cv=2, n_trials=4, sampler="random",
                    seed=0, pruner=pruner, refit=False, show_progress=False).fit(X, y)
    trials = search.study_.trials
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert pruned and complete, [(t.state, t.params, len(t.intermediate_values)) for t in trials]
    for trial in pruned:  # stopped in the first fold, at the end of the warm-up (5 epochs)
        assert sorted(trial.intermediate_values) == [1, 2, 3, 4, 5]
    for trial in complete:  # the 30 epochs of the first fold
        assert sorted(trial.intermediate_values) == list(range(1, 31))
    assert search.best_params_["linear__learning_rate"] > max(t.params["linear__learning_rate"] for t in pruned)


def test_a_median_pruner_stops_a_bad_torch_trial_live_in_worker_processes():
    good, other, bad = h.torch_regression_search(n_jobs=2)
    assert [t.state.name for t in (good, other)] == ["COMPLETE", "COMPLETE"]
    assert sorted(good.intermediate_values) == list(range(1, h.EPOCHS + 1))
    # asked once a good trial was told; the worker asks the driver after each epoch and waits
    # for the answer: pruned at the first step after the warm-up
    assert bad.state.name == "PRUNED" and sorted(bad.intermediate_values) == [1, 2, 3]
