"""The first load and setup of a server's pipeline, given up when the server is told to stop.

uvicorn takes SIGTERM and SIGINT during the app's startup but only acts on them once the
startup is over; a dump that takes minutes to load, or a ``setup`` that never returns (a
GPU or a service that does not answer), kept the server from stopping for that long. While
the first version loads on its thread, the handlers uvicorn installed are wrapped (they
still run, first) so that such a signal also ends the wait: the startup fails with
:class:`ModelLoadError` and uvicorn exits. The abandoned load goes on in its daemon thread
until the process ends. Signal handlers can only be set from the main thread; elsewhere
the load is simply awaited.
"""
from __future__ import annotations

import asyncio
import contextlib
import signal
import threading

from stepline.serving.model import ModelLoadError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def start_or_stop(start: asyncio.Future) -> None:
    """Await ``start`` (the first load, on a thread); ModelLoadError when a stop signal comes first."""
    if threading.current_thread() is not threading.main_thread():
        await start
        return
    loop = asyncio.get_running_loop()
    stopping = loop.create_future()
    with _also_on_stop_signals(lambda: loop.call_soon_threadsafe(_set, stopping)):
        await asyncio.wait([start, stopping], return_when=asyncio.FIRST_COMPLETED)
    if not start.done():
        raise ModelLoadError("told to stop before the pipeline was set up; its load goes on no longer "
                             "than this process")
    start.result()


def _set(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


@contextlib.contextmanager
def _also_on_stop_signals(notify):
    """Call ``notify()`` after the current handler of each stop signal, for the length of the block."""
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

    def handler(signum, frame):
        try:
            if callable(previous[signum]):
                previous[signum](signum, frame)
        finally:
            notify()

    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
