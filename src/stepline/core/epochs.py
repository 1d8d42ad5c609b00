"""Per-epoch reports from steps that train in epochs, to whoever listens (e.g. a tuner's pruner).

A training loop calls :func:`report_epoch` after each epoch; outside :func:`listening_to_epochs`
it does nothing. A listener may raise to stop the training (Optuna's pruning does), and the
exception propagates out of the step's ``fit``. The listener lives in a context variable, so
it follows the call that set it, not other threads.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Iterator

_LISTENER: contextvars.ContextVar[Callable[[dict], None] | None] = contextvars.ContextVar(
    "stepline_epoch_listener", default=None)


def report_epoch(record: dict) -> None:
    """Tell the current listener about one finished epoch (``{"epoch", "loss"[, "val_loss"]}``)."""
    listener = _LISTENER.get()
    if listener is not None:
        listener(record)


@contextlib.contextmanager
def listening_to_epochs(listener: Callable[[dict], None]) -> Iterator[None]:
    """Within the block, every :func:`report_epoch` calls ``listener(record)``."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)
