"""While a search's trials run on a Dask worker, pause the worker's two high-frequency monitors.

A Dask worker wakes its event loop ~150 times a second whatever it runs: the statistical
profiler (``profile``, every 10 ms: it samples the task threads' stacks for the dashboard's
profile page) and the event-loop latency check (``tick``, every 20 ms: it logs "event loop
was unresponsive"). Each wake-up takes the GIL from the trial and a CPU from the other
trials. Measured on a 2-worker LocalCluster of the 2-core machine, while two pure-Python
trials ran: the workers used 75–87 ms of CPU a second beyond their trials, 28–33 with these
two paused (the scheduler and the nannies, in the driver, another 45–50); the trial thread
itself was blocked on the GIL 1–2% of its time. Running the trial in a child process of the
worker took the GIL out (0.04% blocked) but not the wake-ups (the workers' CPU beyond the
trials stayed at 82 ms/s): what slows a trial on a worker is CPU, not the GIL.

A worker pauses them when it starts the search's first trial (in its event loop, the trial
waiting a few ms for it; at the plugin's install a joining worker, a dead one's replacement,
had not started its callbacks yet, and starting them would undo the pause), and resumes them
when the search's plugin is unregistered (the search ended). Only callbacks that
were running are paused, so one the user stopped stays stopped; with several searches on one
worker, the last to end resumes them. Everything else runs as before: heartbeats, the memory
monitor (which pauses, spills and restarts a worker over its memory limit), the system
monitor. ``AutoML(quiet_dask_workers=False)`` leaves the workers as they are.
"""
from __future__ import annotations

import threading

PAUSED_CALLBACKS = ("profile", "profile-cycle", "tick", "ticks")

_QUIETED: dict = {}  # worker -> (the search keys keeping it quiet, the callbacks paused)
_LOCK = threading.Lock()
_WAIT_S = 5.0  # the most a trial waits for its worker's event loop to pause the monitors


def quiet_from_a_task(worker, key: str) -> None:
    """From a task's thread: pause ``worker``'s monitors for search ``key`` in its event loop,
    unless the search's plugin is gone (the search ended while this trial was starting)."""
    done = threading.Event()

    def pause() -> None:
        try:
            if key in worker.plugins:
                quiet(worker, key)
        finally:
            done.set()
    worker.loop.add_callback(pause)
    done.wait(_WAIT_S)


def quiet(worker, key: str) -> None:
    """Search ``key`` runs trials on ``worker``: pause its monitors (in the worker's event loop)."""
    with _LOCK:
        searches, paused = _QUIETED.setdefault(worker, (set(), []))
        if not searches:
            for name in PAUSED_CALLBACKS:
                callback = worker.periodic_callbacks.get(name)
                if callback is not None and callback.is_running():
                    callback.stop()
                    paused.append(name)
        searches.add(key)


def resume(worker, key: str) -> None:
    """Search ``key`` ended on ``worker``: the last search to end resumes what was paused."""
    with _LOCK:
        searches, paused = _QUIETED.get(worker, (set(), []))
        if key not in searches:
            return
        searches.discard(key)
        if searches:
            return
        del _QUIETED[worker]
        for name in paused:
            callback = worker.periodic_callbacks.get(name)
            if callback is not None:
                callback.start()
