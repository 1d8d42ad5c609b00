"""The prediction threads: calls handed off the event loop in batches of wake-ups, answers handed back together.

Hand-written rather than ``loop.run_in_executor(ThreadPoolExecutor)``: that wakes a thread
for every call and wraps each call's ``concurrent.futures.Future`` into an asyncio future
with a lock and two callbacks; one-row requests then ping-pong between the loop and the
thread, three thread switches and GIL hand-offs a request. Here:

- **hand-over once a loop turn.** ``submit`` only appends the call to the loop's list; the
  first call of a turn schedules (``call_soon``) the hand-over, which runs after the
  request tasks of that turn and gives their calls to the threads as one item of a
  ``queue.SimpleQueue`` (C-level lock, no ``Condition``): one wake-up for every request the
  loop read in that turn, given when the loop is done with them and about to release the GIL;
- **drain.** A thread that wakes takes every item queued meanwhile (with one thread, the
  default) and runs each call by itself — each request still gets its own call, this is
  not batching;
- **answers together.** The answers of everything a thread ran in one wake-up go back to
  the loop with one ``call_soon_threadsafe`` (one write to its self-pipe) and are settled
  in that one callback.

With ``threads`` > 1 the calls of a turn are split across the threads (each wakes for its
share), for pipelines whose ``predict`` releases the GIL and can overlap.

A Python thread cannot be stopped from outside, so a call that never returns (a predict
that hangs) would hold its thread for ever: :meth:`PredictionThreads.replace_stuck` (the
server calls it when a request times out) retires every thread busy for longer than the
timeout and starts a fresh one in its place; a retired thread ends when its call returns,
if it ever does. At most ``MAX_STUCK`` threads are left stuck that way per pool.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time

_STOP = object()
#: Stuck threads a pool leaves behind at most before it stops starting replacements.
MAX_STUCK = 8
logger = logging.getLogger("stepline.serving")


class PredictionThreads:
    """``threads`` daemon threads running ``submit``-ted calls for the event loops that submit them."""

    def __init__(self, threads: int = 1, name: str = "stepline-predict"):
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self._calls: queue.SimpleQueue = queue.SimpleQueue()  # items: (mailbox, [(future, fn, args), ...])
        self._mailbox: _Mailbox | None = None  # of the loop that submitted last
        self._drain = threads == 1  # one thread takes all; several share the calls of a turn
        self._name = name
        self._started = 0
        self._busy_since: dict = {}  # thread -> time.monotonic() when its current wake-up began
        self._retired: set = set()  # threads replaced while stuck in a call
        self._threads = [self._start_thread() for _ in range(threads)]

    def _start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self._work, name=f"{self._name}-{self._started}", daemon=True)
        self._started += 1
        thread.start()
        return thread

    def __len__(self) -> int:
        return len(self._threads)

    def submit(self, fn, *args) -> asyncio.Future:
        """Run ``fn(*args)`` on a thread; the returned future (of the running loop) gets its result."""
        loop = asyncio.get_running_loop()
        mailbox = self._mailbox
        if mailbox is None or mailbox.loop is not loop:
            mailbox = self._mailbox = _Mailbox(loop, self)
        future = loop.create_future()
        mailbox.calls.append((future, fn, args))
        if not mailbox.hand_over_scheduled:
            mailbox.hand_over_scheduled = True
            loop.call_soon(mailbox.hand_over)  # after the other tasks of this turn have queued theirs
        return future

    def _put(self, mailbox: "_Mailbox", calls: list) -> None:
        """From the loop: give ``calls`` to the threads (one wake-up each share)."""
        shares = min(len(self._threads), len(calls))
        if shares == 1:
            self._calls.put((mailbox, calls))
            return
        for i in range(shares):
            self._calls.put((mailbox, calls[i::shares]))

    def _work(self) -> None:
        calls, busy_since, me = self._calls, self._busy_since, threading.current_thread()
        while True:
            items = [calls.get()]
            if self._drain:
                while not calls.empty():  # everything queued while this thread was busy: same wake-up
                    items.append(calls.get())
            busy_since[me] = time.monotonic()
            for mailbox, batch in items:
                if mailbox is _STOP:
                    return
                mailbox.post([_outcome(future, fn, args) for future, fn, args in batch])
            del busy_since[me]
            if me in self._retired:  # replaced while stuck: its replacement serves from now on
                self._retired.discard(me)
                return

    def replace_stuck(self, busy_for_s: float) -> int:
        """From the loop: retire the threads busy in one wake-up for ``busy_for_s`` seconds or more and
        start one fresh thread for each (at most ``MAX_STUCK`` stuck threads per pool); the number replaced."""
        now, replaced = time.monotonic(), 0
        for i, thread in enumerate(self._threads):
            started = self._busy_since.get(thread)
            if started is None or now - started < busy_for_s:
                continue
            if len(self._retired) >= MAX_STUCK:
                logger.error("%d prediction threads are stuck in calls that do not return; starting no more",
                             len(self._retired))
                break
            self._retired.add(thread)
            self._threads[i] = self._start_thread()
            replaced += 1
            logger.error("prediction thread %s has been inside one call for %.1f s (a predict that does not "
                         "return?); %s takes its place", thread.name, now - started, self._threads[i].name)
        return replaced

    def shutdown(self, wait: bool = True) -> None:
        """Let the threads finish the calls queued, then stop them."""
        for _ in self._threads:
            self._calls.put((_STOP, None))
        if wait:
            for thread in self._threads:
                thread.join()


def _outcome(future, fn, args) -> tuple:
    """``(future, value, failed)`` of one call, on a prediction thread."""
    try:
        return future, fn(*args), False
    except BaseException as error:  # handed to the awaiting request, which answers it
        return future, error, True


class _Mailbox:
    """One loop's calls waiting for their hand-over, and the settling of their answers on that loop."""

    __slots__ = ("loop", "threads", "calls", "hand_over_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop, threads: PredictionThreads):
        self.loop = loop
        self.threads = threads
        self.calls: list = []
        self.hand_over_scheduled = False

    def hand_over(self) -> None:
        """On the loop, once a turn: the calls submitted in it go to the threads together."""
        self.hand_over_scheduled = False
        calls, self.calls = self.calls, []
        if calls:
            self.threads._put(self, calls)

    def post(self, answers: list) -> None:
        """From a thread: the answers of one wake-up, settled on the loop in one callback."""
        try:
            self.loop.call_soon_threadsafe(_settle, answers)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass


def _settle(answers: list) -> None:
    for future, value, failed in answers:
        if future.done():  # the request was cancelled (client gone)
            continue
        if failed:
            future.set_exception(value)
        else:
            future.set_result(value)
