"""The prediction threads: calls off the event loop, answers back to it, one wake-up for many answers."""
import asyncio
import threading

import pytest

from stepline.serving.threads import PredictionThreads


class CountingLoop(asyncio.SelectorEventLoop):
    """A real selector loop that counts the wake-ups threads ask of it."""

    wakeups = 0

    def call_soon_threadsafe(self, *args, **kwargs):
        self.wakeups += 1
        return super().call_soon_threadsafe(*args, **kwargs)


def run(coroutine_function, loop=None):
    loop = loop or asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine_function())
    finally:
        loop.close()


def test_every_call_gets_its_own_result_or_exception():
    threads = PredictionThreads(2)

    def work(i):
        if i % 7 == 3:
            raise ValueError(f"bad {i}")
        return i * i

    async def main():
        return await asyncio.gather(*(threads.submit(work, i) for i in range(200)), return_exceptions=True)

    try:
        results = run(main)
    finally:
        threads.shutdown()
    for i, result in enumerate(results):
        if i % 7 == 3:
            assert isinstance(result, ValueError) and str(result) == f"bad {i}"
        else:
            assert result == i * i


def test_answers_posted_while_the_loop_is_busy_share_one_wake_up():
    threads = PredictionThreads(1)
    all_ran = threading.Event()
    loop = CountingLoop()

    def work(i):
        if i == 19:
            all_ran.set()
        return i

    async def main():
        futures = [threads.submit(work, i) for i in range(20)]
        all_ran.wait(30)  # the loop is busy (blocked) while the thread answers every call
        return await asyncio.gather(*futures)

    try:
        assert run(main, loop) == list(range(20))
    finally:
        threads.shutdown()
    assert loop.wakeups <= 2, f"{loop.wakeups} wake-ups of the loop for 20 answers"


def test_an_answer_for_a_cancelled_call_is_dropped():
    threads = PredictionThreads(1)
    release = threading.Event()

    async def main():
        slow = threads.submit(release.wait, 30)
        slow.cancel()
        release.set()
        return await threads.submit(lambda: "after")

    try:
        assert run(main) == "after"
    finally:
        threads.shutdown()


def test_zero_threads_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        PredictionThreads(0)
