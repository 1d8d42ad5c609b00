"""``AutoML``: search a pipeline's declared hyperparameter space with Optuna.

The driver (this process) is the only one that talks to the Optuna storage: it asks the
study for a trial, maps the space onto the trial's suggestions (:mod:`.space`), hands the
values to a runner (:mod:`.workers`) that scores them (:mod:`.trials`), and tells the study
the result (:mod:`.loop`); a resumed study first fails what a dead run left running
(:mod:`.resume`). That keeps SQLite, written by one process, consistent (two processes writing
one SQLite study lose or repeat trials: Optuna issues #4002, #4621).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from stepline.automl.scoring import resolve_scorer, resolve_splits
from stepline.automl.space import SearchSpace
from stepline.automl.loop import SearchLoop
from stepline.automl.resume import check_same_search, fail_abandoned_trials
from stepline.automl.storage import check_destination, open_study, storage_failure
from stepline.automl.trials import TrialData
from stepline.automl.workers import ProcessRunner, SequentialRunner, load_template, save_template

__all__ = ["AutoML"]



def _optuna():
    try:
        import optuna
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("stepline.automl needs Optuna: pip install stepline[automl]") from error
    return optuna


class AutoML:
    """Tune ``pipeline``'s hyperparameter space with Optuna; ``fit(X, y)`` returns the search.

    - ``scoring``, ``cv``: as in scikit-learn (:mod:`stepline.automl.scoring`); the study
      maximizes the mean score over the splits.
    - ``n_trials``: the search runs until the study holds that many finished (complete or
      pruned) trials — a resumed search counts the trials already there; failed trials do
      not count. ``timeout_s``: no new trial starts after that many seconds.
      ``trial_timeout_s``: a trial still running after that many seconds fails (its error
      says so) and its worker process is killed and replaced; trials then run in worker
      processes even with ``n_jobs=1`` (a thread of the driver cannot be stopped).
    - ``sampler``: ``"tpe"``, ``"random"`` (both seeded with ``seed``) or any Optuna sampler;
      ``pruner``: any Optuna pruner (default: Optuna's ``MedianPruner``).
    - ``storage``: ``None`` (in memory), an SQL URL (``"sqlite:///search.db"``,
      ``"postgresql://…"``) or a file path (an SQLite file); ``study_name`` defaults to
      ``"stepline-<pipeline name>"`` with a storage, so the same call resumes the same study.
    - ``n_jobs``: trials in that many local worker processes (``-1``: one per CPU; never more
      processes than trials left to run: ``n_workers_``);
      ``client``: a ``distributed.Client`` to run them on its cluster instead;
      ``quiet_dask_workers``: pause the workers' statistical profiler and event-loop tick
      monitor while the search runs (resumed when it ends; :mod:`stepline.automl.dask_quiet`).
    - ``refit``: fit the best values on all of ``X, y`` (``best_pipeline_``); ``save_best_to``:
      a folder to save that pipeline into as a full dump (load it with
      ``ExecutionContext(folder).load(pipeline.name)``).
    - ``show_progress``: a tqdm bar of finished trials when stderr is a terminal.

    After ``fit``: ``study_``, ``best_params_`` (flat ``"step__param"`` keys),
    ``best_score_``, ``best_trial_``, ``best_pipeline_``; ``timeline_`` (where and when each
    trial of this run ran: ``number``, ``state``, ``worker``, ``submitted``, ``started``,
    ``ended``, ``received``, and ``cpu``, the CPU seconds of the thread that ran it); ``trials_dataframe()``, ``report()``, ``plot_history(path)``,
    and ``predict``/``transform``/``score`` through the best pipeline.
    """

    def __init__(self, pipeline, scoring=None, cv=5, n_trials: int = 20, timeout_s: float | None = None,
                 sampler="tpe", seed: int | None = None, storage=None, study_name: str | None = None,
                 n_jobs: int = 1, client=None, refit: bool = True, save_best_to=None,
                 show_progress: bool = True, pruner=None, quiet_dask_workers: bool = True,
                 trial_timeout_s: float | None = None):
        self.pipeline = pipeline
        self.scoring = scoring
        self.cv = cv
        self.n_trials = _positive_int("n_trials", n_trials)
        self.timeout_s = timeout_s
        self.sampler = sampler
        self.seed = seed
        self.storage = storage
        self.study_name = study_name
        self.n_jobs = _n_jobs(n_jobs)
        self.client = client
        self.refit = refit
        self.save_best_to = save_best_to
        self.show_progress = show_progress
        self.pruner = pruner
        self.quiet_dask_workers = quiet_dask_workers
        if client is not None and self.n_jobs > 1:
            raise ValueError("AutoML: give n_jobs (local worker processes) or client (a Dask cluster), not both")
        if save_best_to is not None and not refit:
            raise ValueError("AutoML: save_best_to needs refit=True (it saves the refit best pipeline)")
        if not isinstance(quiet_dask_workers, bool):
            raise ValueError(f"AutoML: quiet_dask_workers must be True or False, got {quiet_dask_workers!r}")
        _seconds("timeout_s", timeout_s)
        _seconds("trial_timeout_s", trial_timeout_s)
        self.trial_timeout_s = trial_timeout_s
        if client is not None and trial_timeout_s is not None:
            raise ValueError("AutoML: trial_timeout_s stops local worker processes; it is not available "
                             "with client (a Dask worker's thread cannot be stopped)")

    # ------------------------------------------------------------------ search
    def fit(self, X, y=None) -> "AutoML":
        """Run the search on ``X, y`` (resuming the study if the storage holds it); returns self."""
        optuna = _optuna()
        data = self._trial_data(X, y)
        self.space_ = SearchSpace.of(self.pipeline)
        if self.save_best_to is not None:
            check_destination(self.save_best_to, self.pipeline.name)
        study = self._create_study(optuna)
        self.study_ = study
        check_same_search(study, self.space_)
        fail_abandoned_trials(study, self._storage_url() is not None)
        with tempfile.TemporaryDirectory(prefix="stepline-automl-") as folder:
            name = save_template(self.pipeline, Path(folder))
            self.timeline_ = []
            runner = self._runner(Path(folder), name, data, self._trials_left(optuna))
            self.n_workers_ = runner.capacity
            loop = SearchLoop(self, study, runner, optuna)
            self.timeline_ = loop.timeline
            try:
                loop.run()
            except Exception as error:
                failure = storage_failure(error, self.storage) if self.storage is not None else None
                if failure is None:
                    raise
                raise failure from error
            finally:
                runner.close()
            self._set_best(optuna)
            if self.refit:
                self._refit(load_template(folder, name), X, y)
        return self

    def _trial_data(self, X, y) -> TrialData:
        from sklearn.base import is_classifier
        classifier = is_classifier(self.pipeline.to_sklearn())
        splits = resolve_splits(self.cv, X, y, classifier)
        return TrialData(X, y, splits, resolve_scorer(self.scoring))

    def _storage_url(self) -> str | None:
        storage = self.storage
        if storage is None or not isinstance(storage, (str, os.PathLike)):
            return None if storage is None else storage  # an Optuna storage object as is
        storage = os.fspath(storage)
        return storage if "://" in storage else f"sqlite:///{Path(storage).resolve()}"

    def _create_study(self, optuna):
        storage = self._storage_url()
        name = self.study_name
        if name is None and storage is not None:
            name = f"stepline-{self.pipeline.name}"
        return open_study(optuna, storage, name, self._make_sampler(optuna), self.pruner)

    def _make_sampler(self, optuna):
        if isinstance(self.sampler, optuna.samplers.BaseSampler):
            return self.sampler
        kinds = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
        if self.sampler not in kinds:
            raise ValueError(f"AutoML: sampler must be 'tpe', 'random' or an Optuna sampler, got {self.sampler!r}")
        return kinds[self.sampler](seed=self.seed)

    def _trials_left(self, optuna) -> int:
        finished = self.study_.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                                  optuna.trial.TrialState.PRUNED))
        return max(1, self.n_trials - len(finished))

    def _runner(self, folder: Path, name: str, data: TrialData, trials_left: int):
        """Where the trials run; never more local worker processes than trials left to run."""
        if self.client is not None:
            from stepline.automl.dask_runner import DaskRunner
            live = not isinstance(self.study_.pruner, _optuna().pruners.NopPruner)  # else no epoch events
            return DaskRunner(folder, name, data, self.client, live=live, quiet=self.quiet_dask_workers)
        n_workers = min(self.n_jobs, trials_left)
        if n_workers > 1 or self.trial_timeout_s is not None:  # only a process can be stopped
            return ProcessRunner(folder, name, data, n_workers, trial_timeout_s=self.trial_timeout_s)
        return SequentialRunner(folder, name, data)

    def _set_best(self, optuna) -> None:
        complete = self.study_.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not complete:
            trials = self.study_.get_trials(deepcopy=False)
            counts = {state.name: sum(t.state == state for t in trials) for state in {t.state for t in trials}}
            errors = [t.user_attrs["error"] for t in trials if "error" in t.user_attrs]
            last = f"; the last error: {errors[-1]}" if errors else ""
            raise RuntimeError(f"AutoML: no trial completed in study {self.study_.study_name!r} "
                               f"(trials by state: {counts}){last}")
        best = max(complete, key=lambda t: t.value)
        self.best_trial_ = best
        self.best_score_ = best.value
        self.best_params_ = self.decode(best.params)

    def decode(self, optuna_params: dict) -> dict:
        """The flat stepline values of a trial's Optuna ``params`` (inverse-CDF ones mapped back)."""
        return self.space_.suggest(_optuna().trial.FixedTrial(optuna_params))

    def _refit(self, pipeline, X, y) -> None:
        from stepline.steps.sklearn import SklearnEstimatorAdapter
        if self.best_params_:
            pipeline.set_hyperparams(self.best_params_)
        self._estimator = SklearnEstimatorAdapter(pipeline).fit(X, y)
        self.best_pipeline_ = self._estimator.step
        if self.save_best_to is not None:
            from stepline.core.context import ExecutionContext
            self.best_pipeline_.save(ExecutionContext(self.save_best_to), full_dump=True)

    # ------------------------------------------------------------------ the best pipeline
    def _fitted(self):
        estimator = getattr(self, "_estimator", None)
        if estimator is None:
            raise RuntimeError("AutoML: no refit best pipeline; call fit(X, y) with refit=True first")
        return estimator

    def predict(self, X):
        """The refit best pipeline's predictions (in inference mode)."""
        return self._fitted().predict(X)

    def transform(self, X):
        """The refit best pipeline's outputs (in inference mode)."""
        return self._fitted().transform(X)

    def score(self, X, y) -> float:
        """The search's scorer on ``X, y`` with the refit best pipeline."""
        return float(resolve_scorer(self.scoring)(self._fitted(), X, y))

    # ------------------------------------------------------------------ looking at the study
    def trials_dataframe(self):
        """Optuna's ``trials_dataframe()``, the ``params_*`` columns holding the stepline values."""
        frame = self._study().trials_dataframe()
        for row, trial in enumerate(self._study().get_trials(deepcopy=False)):
            try:
                values = self.decode(trial.params)
            except Exception:  # noqa: BLE001 - a trial that failed before all its params were suggested
                continue
            for key, value in values.items():
                column = f"params_{key}"
                if column not in frame.columns:
                    frame[column] = None
                frame[column] = frame[column].astype(object)
                frame.at[row, column] = value
        return frame

    def report(self, top: int = 10) -> str:
        """A text table of the ``top`` best complete trials: number, score, seconds, values."""
        frame = self.trials_dataframe()
        frame = frame[frame["state"] == "COMPLETE"].sort_values("value", ascending=False).head(top)
        frame = frame.assign(seconds=frame["duration"].dt.total_seconds().round(3))
        columns = ["number", "value", "seconds"] + [c for c in frame.columns if c.startswith("params_")]
        table = frame[columns].rename(columns=lambda c: c[len("params_"):] if c.startswith("params_") else c)
        counts = self._study().trials_dataframe()["state"].value_counts().to_dict()
        header = (f"study {self._study().study_name!r}: best score {self.best_score_:.6g} "
                  f"(trial {self.best_trial_.number}); trials by state: {counts}")
        return header + "\n" + table.to_string(index=False)

    def plot_history(self, path) -> Path:
        """Write a PNG of the optimisation history (each trial's score, best so far) to ``path``."""
        from stepline.automl.plot import plot_history
        return plot_history(self._study(), Path(path))

    def _study(self):
        study = getattr(self, "study_", None)
        if study is None:
            raise RuntimeError("AutoML: call fit(X, y) first")
        return study


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"AutoML: {name} must be an int >= 1, got {value!r}")
    return value


def _seconds(name: str, value: Any) -> None:
    """ValueError naming ``name`` unless ``value`` is None or a number of seconds > 0 (not a bool)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"AutoML: {name} must be a number of seconds > 0 or None, got {value!r}")


def _n_jobs(value: Any) -> int:
    if value == -1:
        return max(1, os.cpu_count() or 1)
    return _positive_int("n_jobs", value)

