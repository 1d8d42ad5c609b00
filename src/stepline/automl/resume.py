"""Resuming a study: trials left running by a search process that died are failed, not waited for."""
from __future__ import annotations

import logging
import os
import socket
from typing import Any

log = logging.getLogger("stepline.automl")

_DRIVER_ATTR = "stepline_driver"


def fail_abandoned_trials(study, persistent: bool) -> None:
    """Trials left running by a search process that died (same host, process gone) fail, so
    that a resumed search neither waits for them nor counts them; then record this driver."""
    if not persistent:
        return
    import optuna
    previous = study.user_attrs.get(_DRIVER_ATTR)
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    if running:
        if _is_dead_here(previous):
            for trial in running:
                study._storage.set_trial_user_attr(  # noqa: SLF001 - the only way to annotate another run's trial
                    trial._trial_id, "error", f"Abandoned: the search process {previous['pid']} died")
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            log.info("stepline.automl: %d trial(s) left running by a dead search process recorded as failed",
                     len(running))
        else:
            log.warning("stepline.automl: study %r has %d running trial(s) of another live search (%s); "
                        "they are not counted", study.study_name, len(running), previous)
    study.set_user_attr(_DRIVER_ATTR, {"host": socket.gethostname(), "pid": os.getpid()})


def _is_dead_here(driver: Any) -> bool:
    if not isinstance(driver, dict) or driver.get("host") != socket.gethostname():
        return False
    pid = driver.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return isinstance(pid, int)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def check_same_search(study, space) -> None:
    """ValueError naming the study if it is not this search's (resumed by name from a storage):
    it minimizes, or its trials hold hyperparameters this space does not declare. Reusing it
    would minimize the score, or count another objective's trials (and pick one as best)."""
    import optuna
    where = f"study {study.study_name!r}"
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ValueError(f"AutoML: {where} was created to {study.direction.name.lower()}; the search "
                         f"maximizes its scores (greater is better): give another study_name")
    foreign = set()
    for trial in study.get_trials(deepcopy=False):
        foreign.update(key for key in trial.params if key not in space.distributions)
    if foreign:
        raise ValueError(f"AutoML: {where} holds trials of hyperparameters {sorted(foreign)} that this "
                         f"pipeline's space does not declare (another search, or the space changed): "
                         f"give another study_name")
