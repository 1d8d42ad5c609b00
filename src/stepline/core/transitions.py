"""Per-step lifecycle state shared by the threads that call one step.

Each step gets one :class:`StepLifecycle`, made on first use and never saved, pickled
or copied (a copy or a loaded step makes its own). It serializes the step's
transitions (``setup``, ``teardown``) with a re-entrant lock, and counts the calls
inside the step so that ``teardown`` waits for them:

- a call *enters* by appending its thread id to ``calls`` (``list.append`` and
  ``list.remove`` are atomic in CPython), then checks that the step is set up and not
  closing; only when it is not does it take the lock (the slow path);
- ``teardown`` takes the lock, sets ``closing``, waits until no other thread's call is
  inside, then runs; calls of other threads that arrive meanwhile wait, and set the step
  up again afterwards (a thread that already has a call inside goes on: it would
  otherwise wait for itself).

A call that leaves while ``closing`` is set wakes the waiting ``teardown``.
"""
from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

LIFECYCLE_STATE = "_stepline_lifecycle"
SLOW_TEARDOWN_S = 30.0  # a teardown that waits longer for the calls inside logs a warning


class StepLifecycle:
    """The lock, the calls in flight and the transition flags of one step."""

    __slots__ = ("lock", "changed", "calls", "closing", "busy", "fitting")

    def __init__(self):
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.calls: list[int] = []  # thread ids of the calls inside the step
        self.closing: int | None = None  # the thread id of a teardown that waits or runs
        self.busy = False  # a transition runs its user code (held with the lock)
        self.fitting: list[int] = []  # thread ids inside the step's own fit or fit_transform

    def __reduce__(self):  # a copy or a pickle gets fresh state, never a lock
        return StepLifecycle, ()

    def leave(self, thread_id: int) -> None:
        """A call of ``thread_id`` left the step: wake a waiting ``teardown``."""
        self.calls.remove(thread_id)
        if self.closing:
            self.leave_notify()

    def leave_notify(self) -> None:
        """Wake a ``teardown`` waiting for the calls inside."""
        with self.lock:
            self.changed.notify_all()

    def wait_while_closing(self, thread_id: int) -> None:
        """Block (holding the lock between checks) while another thread's teardown waits or runs."""
        while self.closing not in (None, thread_id):
            self.changed.wait()

    def wait_for_other_calls(self, thread_id: int, step) -> None:
        """Block (holding the lock between checks) until only ``thread_id``'s calls are inside.

        Logs a warning every :data:`SLOW_TEARDOWN_S` seconds it waits (a call that never
        returns would otherwise hold the teardown without a word).
        """
        waited = 0.0
        while True:
            others = [t for t in self.calls.copy() if t != thread_id]
            if not others:
                return
            if not self.changed.wait(SLOW_TEARDOWN_S):
                waited += SLOW_TEARDOWN_S
                log.warning("teardown of step %r (%s) has waited %.0f s for %d call(s) still inside it "
                            "(threads %s)", step.name, type(step).__name__, waited, len(others),
                            sorted(set(others)))


def lifecycle_of(step) -> StepLifecycle:
    """The step's lifecycle state, made on first use (threads racing here get the same one)."""
    state = step.__dict__
    lifecycle = state.get(LIFECYCLE_STATE)
    if lifecycle is None:
        lifecycle = state.setdefault(LIFECYCLE_STATE, StepLifecycle())
    return lifecycle
