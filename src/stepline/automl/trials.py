"""One trial, wherever it runs: copy the loaded pipeline, set the trial's values, fit and score
each split; report epochs so that a pruner can stop the trial.

This is the code the driver (``n_jobs=1``), a worker process and a Dask worker all run;
it never touches Optuna or the storage.
"""
from __future__ import annotations

import copy
import math
import numbers
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from stepline.automl.scoring import take_rows
from stepline.core.epochs import listening_to_epochs

COMPLETE, FAIL, PRUNED = "complete", "fail", "pruned"


@dataclass
class TrialData:
    """What every trial of a search needs besides its values: the data, the splits, the scorer."""
    X: Any
    y: Any
    splits: list
    scorer: Callable


@dataclass
class TrialResult:
    """The outcome of one trial, as it travels back to the driver."""
    number: int
    state: str
    value: Optional[float] = None
    error: Optional[str] = None
    traceback: Optional[str] = None
    seconds: float = 0.0
    reports: list = field(default_factory=list)  # (step, value) of each epoch of the first split
    started_at: float = 0.0  # time.time() on the worker when the trial started
    worker: str = ""  # "host:pid" of the process that ran it
    cpu_seconds: float = 0.0  # CPU time of the thread that ran it (below ``seconds``: it waited)

    def as_tuple(self) -> tuple:
        """The fields as a plain tuple, to travel (a Dask task's result): :meth:`from_tuple` reverses it."""
        return (self.number, self.state, self.value, self.error, self.traceback, self.seconds, self.reports,
                self.started_at, self.worker, self.cpu_seconds)

    @classmethod
    def from_tuple(cls, fields: tuple) -> "TrialResult":
        return cls(*fields)


class Pruned(Exception):
    """The driver's pruner stopped the trial."""


#: ``report(step, value) -> bool``: record an intermediate score; True means prune.
Reporter = Callable[[int, float], bool]


def run_trial(template, number: int, params: dict, data: TrialData,
              report: Optional[Reporter] = None) -> TrialResult:
    """Score ``params`` on ``template`` (a loaded, not set-up pipeline); never raises."""
    started_at, started, cpu_started = time.time(), time.perf_counter(), time.thread_time()
    collected: list = []
    try:
        value = _cross_validate(template, params, data, report, collected)
        result = TrialResult(number, COMPLETE, value)
    except Pruned:
        result = TrialResult(number, PRUNED)
    except Exception as error:  # noqa: BLE001 - a failing trial is recorded, the search goes on
        result = TrialResult(number, FAIL, error=f"{type(error).__name__}: {error}",
                             traceback=traceback.format_exc())
    result.seconds = time.perf_counter() - started
    result.cpu_seconds = time.thread_time() - cpu_started
    result.reports = collected
    result.started_at, result.worker = started_at, _this_process()
    return result


def _this_process(cache: dict = {}) -> str:  # noqa: B006 - the cache, per process (a fork gets a new pid)
    """``"host:pid"`` of this process."""
    pid = os.getpid()
    if pid not in cache:
        cache.clear()
        cache[pid] = f"{socket.gethostname()}:{pid}"
    return cache[pid]


def _cross_validate(template, params: dict, data: TrialData, report, collected: list) -> float:
    from stepline.steps.sklearn import SklearnEstimatorAdapter
    scores = []
    for fold, (train, test) in enumerate(data.splits):
        step = copy.deepcopy(template)
        if params:
            step.set_hyperparams(params)
        estimator = SklearnEstimatorAdapter(step)
        listener = _EpochCounter(report, collected) if fold == 0 else _ignore
        try:
            with listening_to_epochs(listener):
                estimator.fit(take_rows(data.X, train), take_rows(data.y, train))
            scores.append(_number(data.scorer, data.scorer(estimator, take_rows(data.X, test),
                                                            take_rows(data.y, test))))
        finally:
            estimator.step.teardown()
    value = float(np.mean(scores))
    if not math.isfinite(value):
        raise ValueError(f"the scorer {_name_of(data.scorer)} returned {value} (fold scores {scores})")
    return value


def _number(scorer, value) -> float:
    """``value`` as a float if it is a real number (a NumPy scalar or 0-d array too), not a
    bool or a string; TypeError naming the scorer otherwise."""
    plain = value.item() if isinstance(value, (np.ndarray, np.generic)) and np.ndim(value) == 0 else value
    if isinstance(plain, bool) or not isinstance(plain, numbers.Real):
        raise TypeError(f"the scorer {_name_of(scorer)} returned {value!r} ({type(value).__name__}), "
                        f"not a number")
    return float(plain)


def _name_of(scorer) -> str:
    name = getattr(scorer, "__name__", None)
    return repr(name) if name else repr(scorer)


def _ignore(record: dict) -> None:
    """Epochs of the later splits: not reported (their step numbers would start again at 1)."""


class _EpochCounter:
    """Turns the epoch records of the first split into intermediate scores at steps 1, 2, …:
    ``-val_loss`` (or ``-loss``), so that greater is better as for the final score."""

    def __init__(self, report: Optional[Reporter], collected: list):
        self.report, self.collected, self.step = report, collected, 0

    def __call__(self, record: dict) -> None:
        self.step += 1
        value = -float(record.get("val_loss", record.get("loss", math.nan)))
        if not math.isfinite(value):
            return
        self.collected.append((self.step, value))
        if self.report is not None and self.report(self.step, value):
            raise Pruned(f"pruned at step {self.step}")
