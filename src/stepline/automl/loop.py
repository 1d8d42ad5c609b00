"""The search loop: ask in the driver, evaluate on a runner, tell in the driver.

Only this loop (in the driver) writes to the study's storage; the runners of
:mod:`.workers` only evaluate.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from stepline.automl.trials import COMPLETE, FAIL, PRUNED, TrialResult

if TYPE_CHECKING:
    from stepline.automl.search import AutoML

log = logging.getLogger("stepline.automl")

_TRACEBACK_CHARS = 4000
_FAILURES_IN_A_ROW = 10  # (or n_trials, if more) failed trials in a row stop the search


class SearchLoop:
    """Ask in the driver, evaluate on the runner, tell in the driver, until enough trials finished."""

    def __init__(self, search: AutoML, study, runner, optuna):
        self.search, self.study, self.runner = search, study, runner
        self.states = optuna.trial.TrialState
        self.running: dict = {}
        self.submitted: dict = {}  # trial number -> time.time() of its submit
        self.timeline: list = []  # one dict a trial told: where its time went (see AutoML.timeline_)
        self.finished = len(study.get_trials(deepcopy=False, states=(self.states.COMPLETE, self.states.PRUNED)))
        self.failed_in_a_row = 0
        self.deadline = None if search.timeout_s is None else time.monotonic() + search.timeout_s

    def run(self) -> None:
        from tqdm import tqdm
        n_trials = self.search.n_trials
        with tqdm(total=n_trials, initial=min(self.finished, n_trials), unit="trial", desc="trials",
                  disable=None if self.search.show_progress else True) as bar:
            try:
                while True:
                    self._fill()
                    if not self.running:
                        return
                    for result in self.runner.wait(self._report):
                        self._tell(result)
                        if result.state != FAIL:
                            bar.update(1)
                            if not bar.disable:  # best_value reads the storage: only for a bar
                                bar.set_postfix(best=self._best(), refresh=False)
            finally:
                self._abandon_running()

    def _fill(self) -> None:
        limit = max(self.search.n_trials, _FAILURES_IN_A_ROW)
        while (self._room()
               and self.failed_in_a_row < limit
               and (self.deadline is None or time.monotonic() < self.deadline)):
            trial = self.study.ask()
            try:
                params = self.search.space_.suggest(trial)
            except Exception as error:
                self.study.tell(trial, state=self.states.FAIL)
                if isinstance(error, ValueError) and trial.number > 0:
                    raise ValueError(f"AutoML: study {self.study.study_name!r}: {str(error).rstrip('.')}; the study's earlier "
                                     f"trials searched this hyperparameter with another distribution (did "
                                     f"the space change since?): give another study_name to search the "
                                     f"new space afresh") from error
                raise
            self.running[trial.number] = trial
            self.submitted[trial.number] = time.time()
            self.runner.submit(trial.number, params)
        if self.failed_in_a_row >= limit and not self.running:
            log.warning("stepline.automl: stopping after %d failed trials in a row", self.failed_in_a_row)

    def _room(self) -> bool:
        """Another trial may be submitted: fewer than the runner's capacity are in flight (a
        thread is idle); or fewer than capacity + ahead while, after this one, at least capacity
        trials remain to be submitted (so the other workers get later ones); or, at the end, a
        thread is idle (a runner that queues trials says; with one queued on each Dask worker,
        a worker can be idle while its neighbour holds two). A trial queued behind a busy
        worker at the very end would leave another idle for up to a whole trial."""
        n_trials, capacity = self.search.n_trials, self.runner.capacity
        in_flight = len(self.running)
        left_after = n_trials - self.finished - in_flight - 1
        if left_after < 0 or in_flight >= capacity + self.runner.ahead:
            return False
        return in_flight < capacity or left_after >= capacity or self.runner.has_idle_thread()

    def _report(self, number: int, step: int, value: float, live: bool = True) -> bool:
        trial = self.running[number]
        trial.report(value, step)
        return live and trial.should_prune()

    def _tell(self, result: TrialResult) -> None:
        trial = self.running.pop(result.number)
        self._record(result)
        if result.state == COMPLETE:
            _tell(self.study, trial, result.value)
        elif result.state == PRUNED:
            _tell(self.study, trial, state=self.states.PRUNED)
        else:
            trial.set_user_attr("error", result.error)
            if result.traceback:
                trial.set_user_attr("traceback", result.traceback[-_TRACEBACK_CHARS:])
            _tell(self.study, trial, state=self.states.FAIL)
            log.warning("stepline.automl: trial %d failed: %s", result.number, result.error)
            self.failed_in_a_row += 1
            return
        self.finished += 1
        self.failed_in_a_row = 0

    def _record(self, result: TrialResult) -> None:
        self.timeline.append({"number": result.number, "state": result.state, "worker": result.worker,
                              "submitted": self.submitted.pop(result.number, None),
                              "started": result.started_at or None,
                              "ended": result.started_at + result.seconds if result.started_at else None,
                              "cpu": result.cpu_seconds if result.started_at else None,
                              "received": time.time()})

    def _best(self) -> Any:
        try:
            return round(self.study.best_value, 6)
        except ValueError:
            return None

    def _abandon_running(self) -> None:
        """Trials still running when the loop stops abruptly (an interrupt, an error) fail."""
        for number, trial in list(self.running.items()):
            try:
                trial.set_user_attr("error", "Interrupted: the search stopped while the trial ran")
                self.study.tell(trial, state=self.states.FAIL)
            except Exception as error:  # noqa: BLE001 - keep the original exception visible
                log.warning("stepline.automl: could not record trial %d as failed: %s", number, error)
        self.running.clear()


def _tell(study, trial, value=None, state=None) -> None:
    """``study.tell`` without reading the trial back from the storage afterwards.

    The public ``tell`` returns a deep copy of the finished trial, one more storage read a
    trial (a query with SQLite); ``study.optimize`` tells through the function below, so the
    ask/tell loop costs what ``optimize`` costs. Falls back to ``tell`` if Optuna moves it.
    """
    try:
        from optuna.study._tell import _tell_with_warning
    except ImportError:  # pragma: no cover - depends on the Optuna version
        study.tell(trial, value, state=state)
        return
    _tell_with_warning(study=study, trial=trial, value_or_values=value, state=state, suppress_warning=True)
