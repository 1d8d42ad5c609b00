"""The prediction threads: calls handed off the event loop and their results handed back.

Hand-written rather than ``loop.run_in_executor(ThreadPoolExecutor)``: that wraps each
call's ``concurrent.futures.Future`` into an asyncio future with a lock and two callbacks.
Here threads take calls from one queue and post their answers to the loop's mailbox; the
first answer posted while the loop is not yet woken schedules one ``call_soon_threadsafe``
(one write to the loop's self-pipe), which settles every answer posted until it runs. Under
load the loop is woken once for several answers instead of once each.
"""
from __future__ import annotations

import asyncio
import collections
import queue
import threading

_STOP = object()


class PredictionThreads:
    """``threads`` daemon threads running ``submit``-ted calls for the event loops that submit them."""

    def __init__(self, threads: int, name: str = "stepline-predict"):
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._mailbox: _Mailbox | None = None  # of the loop that submitted last
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def __len__(self) -> int:
        return len(self._threads)

    def submit(self, fn, *args) -> asyncio.Future:
        """Run ``fn(*args)`` on a thread; the returned future (of the running loop) gets its result."""
        loop = asyncio.get_running_loop()
        mailbox = self._mailbox
        if mailbox is None or mailbox.loop is not loop:
            mailbox = self._mailbox = _Mailbox(loop)
        future = loop.create_future()
        self._calls.put((mailbox, future, fn, args))
        return future

    def _work(self) -> None:
        while True:
            call = self._calls.get()
            if call is _STOP:
                return
            mailbox, future, fn, args = call
            try:
                result = fn(*args)
            except BaseException as error:  # handed to the awaiting request, which answers it
                mailbox.post(future, error, True)
            else:
                mailbox.post(future, result, False)

    def shutdown(self, wait: bool = True) -> None:
        """Let the threads finish the calls queued, then stop them."""
        for _ in self._threads:
            self._calls.put(_STOP)
        if wait:
            for thread in self._threads:
                thread.join()


class _Mailbox:
    """Answers posted by the threads for one loop, settled on that loop in arrival order."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._answers: collections.deque = collections.deque()
        self._scheduled = False

    def post(self, future: asyncio.Future, value, failed: bool) -> None:
        """From a thread: queue one answer; wake the loop unless a wake-up is already on its way."""
        self._answers.append((future, value, failed))
        if self._scheduled:  # the delivery scheduled earlier clears this flag before it reads the queue
            return
        self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass

    def _deliver(self) -> None:
        self._scheduled = False
        answers = self._answers
        while answers:
            future, value, failed = answers.popleft()
            if future.done():  # the request was cancelled (client gone)
                continue
            if failed:
                future.set_exception(value)
            else:
                future.set_result(value)
