"""The mode of a call (training or inference): carried by the call, never by the tree.

A step's own mode is its stored ``is_train`` (``set_train`` changes it). A *call mode*
overrides every step's own mode for the duration of one call and everything that call
runs, in this thread or task only: ``predict`` runs under the inference call mode, and
other threads calling the same step at the same time are not affected.

The call mode lives in a :mod:`contextvars` variable, so it follows a call into
``asyncio`` tasks by itself. Code that hands part of a call to another thread, process or
machine reads :func:`current_call_mode` there and re-enters it with :func:`call_mode`
on the other side (``FeatureUnion(n_jobs)`` does it with ``contextvars.copy_context()``;
streaming and Dask workers receive the value with each minibatch).
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

_CALL_MODE: ContextVar = ContextVar("stepline_call_mode", default=None)


def current_call_mode() -> bool | None:
    """The mode the running call imposes: ``False`` (inference), ``True`` (training), or
    ``None`` when every step runs in its own stored mode."""
    return _CALL_MODE.get()


@contextmanager
def call_mode(is_train: bool | None):
    """Run the block with every step in mode ``is_train`` (``None``: each step's own mode)."""
    token = _CALL_MODE.set(None if is_train is None else bool(is_train))
    try:
        yield
    finally:
        _CALL_MODE.reset(token)


def inference():
    """Run the block in inference mode, as ``predict`` does: ``with inference(): ...``."""
    return call_mode(False)


def effective_is_train(step) -> bool:
    """``step.is_train`` as the running call sees it (the same as reading the attribute)."""
    mode = _CALL_MODE.get()
    return own_is_train(step) if mode is None else mode


def own_is_train(step) -> bool:
    """The step's stored mode (what ``set_train`` set), whatever the running call imposes."""
    return step.__dict__.get("is_train", True)


__all__ = ["current_call_mode", "call_mode", "inference", "effective_is_train", "own_is_train"]
