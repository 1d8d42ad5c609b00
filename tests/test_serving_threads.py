"""The prediction threads: calls off the event loop, handed over once a loop turn, answers back together."""
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


@pytest.mark.parametrize("count", [1, 2, 3])
def test_every_call_gets_its_own_result_or_exception(count):
    threads = PredictionThreads(count)

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


def releasing_work(calls: list):
    """A call that records itself and its thread, then waits 2 ms with the GIL released (as a model may)."""
    pause = threading.Event()

    def work(i):
        calls.append((i, threading.get_ident()))
        pause.wait(0.002)  # the work of a model that releases the GIL, not a synchronisation
        return i
    return work


def test_calls_queued_while_the_thread_is_busy_run_in_one_wake_up_each_by_its_own_call():
    threads = PredictionThreads(1)
    loop = CountingLoop()
    started, release, calls = threading.Event(), threading.Event(), []
    work = releasing_work(calls)

    def busy():
        started.set()
        release.wait(30)
        return "busy"

    async def main():
        first = threads.submit(busy)
        await loop.run_in_executor(None, started.wait, 30)  # the prediction thread is inside `busy`
        queued = [threads.submit(work, i) for i in range(8)]
        await asyncio.sleep(0)  # one loop turn: the 8 calls are handed over, the thread still busy
        before = loop.wakeups
        release.set()
        assert await first == "busy"
        await queued[0]
        settled_together = all(future.done() for future in queued)
        results = await asyncio.gather(*queued)
        return results, settled_together, loop.wakeups - before

    try:
        results, settled_together, wakeups = run(main, loop)
    finally:
        threads.shutdown()
    assert results == list(range(8))
    assert sorted(i for i, _ in calls) == list(range(8)), "each request gets its own call, once"
    assert len({thread for _, thread in calls}) == 1
    assert settled_together, "the answers of one wake-up are settled in one callback"
    assert wakeups == 2, f"{wakeups} wake-ups of the loop: one for `busy`, one for the 8 calls queued behind it"


def test_calls_submitted_in_one_loop_turn_wake_the_thread_once_and_the_loop_once():
    threads = PredictionThreads(1)
    loop = CountingLoop()
    calls = []
    work = releasing_work(calls)

    async def main():
        return await asyncio.gather(*(threads.submit(work, i) for i in range(8)))

    try:
        assert run(main, loop) == list(range(8))
    finally:
        threads.shutdown()
    assert [i for i, _ in calls] == list(range(8)), "run in the order submitted, each by itself"
    assert loop.wakeups == 1, f"{loop.wakeups} wake-ups of the loop for 8 calls handed over together"


def test_several_threads_share_the_calls_of_a_turn_and_run_them_at_once():
    threads = PredictionThreads(2)
    both = threading.Barrier(2, timeout=30)  # passes only when two calls are inside at the same time
    idents = []

    def work(i):
        idents.append(threading.get_ident())
        both.wait()
        return i

    async def main():
        return await asyncio.gather(*(threads.submit(work, i) for i in range(8)))

    try:
        assert run(main) == list(range(8))
    finally:
        threads.shutdown()
    assert len(set(idents)) == 2


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
