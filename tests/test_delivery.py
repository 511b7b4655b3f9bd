"""Results handed from forward threads to an event loop: all of them, in order, and cheaply."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref

import numpy as np
import pytest

from embedgate.engine.delivery import CancelFlag, LoopCompletion, LoopMailbox, LoopMailboxes


@pytest.mark.anyio
async def test_a_burst_of_results_wakes_the_loop_once_and_keeps_its_order() -> None:
    loop = asyncio.get_running_loop()
    box = LoopMailbox(loop)
    seen: list[int] = []
    wakeups = 0
    real = loop.call_soon_threadsafe

    def counting(*args: object, **kwargs: object) -> asyncio.Handle:
        nonlocal wakeups
        wakeups += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    done = asyncio.Event()

    def burst() -> None:  # a forward thread finishing a 100-row pass
        for n in range(100):
            box.post(seen.append, n)
        box.post(lambda: done.set())

    # the loop is busy while the pass finishes (joined without awaiting), as it is
    # under load; an idle loop may flush part of a burst early, which is only correct
    try:
        thread = threading.Thread(target=burst)
        thread.start()
        thread.join(5)
        await asyncio.wait_for(done.wait(), 5)
    finally:
        del loop.call_soon_threadsafe  # the loop may run the module's other tests
    assert seen == list(range(100))
    assert wakeups == 1


@pytest.mark.anyio
async def test_posts_after_a_flush_schedule_a_new_one() -> None:
    box = LoopMailbox(asyncio.get_running_loop())
    seen: list[int] = []
    for n in range(3):
        await asyncio.to_thread(box.post, seen.append, n)
        for _ in range(100):
            if len(seen) == n + 1:
                break
            await asyncio.sleep(0.01)
    result = seen
    assert result == [0, 1, 2]


@pytest.mark.anyio
async def test_completions_resolve_from_another_thread() -> None:
    rows = np.ones((2, 4), dtype=np.float32)

    mailboxes = LoopMailboxes()
    box = mailboxes.for_loop(asyncio.get_running_loop())
    assert mailboxes.for_loop(asyncio.get_running_loop()) is box
    ok, failed = LoopCompletion(box), LoopCompletion(box)
    assert not ok.done()
    await asyncio.to_thread(ok.set_result, rows)
    await asyncio.to_thread(failed.set_exception, RuntimeError("the model failed"))
    assert ok.done() and failed.done()  # at once, as a forward thread sees them
    assert (await asyncio.wait_for(ok.waiter, 5)) is rows
    with pytest.raises(RuntimeError, match="the model failed"):
        await asyncio.wait_for(failed.waiter, 5)


@pytest.mark.anyio
async def test_a_result_for_a_caller_that_gave_up_is_discarded() -> None:
    box = LoopMailbox(asyncio.get_running_loop())
    completion = LoopCompletion(box)
    completion.waiter.cancel()  # the caller's task was cancelled
    await asyncio.to_thread(completion.set_result, np.zeros((1, 4), dtype=np.float32))
    marker = asyncio.Event()
    box.post(marker.set)  # flushed after the discarded result: no InvalidStateError
    await asyncio.wait_for(marker.wait(), 5)
    assert completion.waiter.cancelled()


def test_a_closed_loop_does_not_break_the_forward_thread() -> None:
    loop = asyncio.new_event_loop()
    box = LoopMailbox(loop)
    loop.close()
    errors: list[BaseException] = []

    def post() -> None:
        try:
            box.post(print, "never")
            box.post(print, "never")
        except BaseException as exc:  # pragma: no cover - the failure this test looks for
            errors.append(exc)

    thread = threading.Thread(target=post)
    thread.start()
    thread.join(5)
    assert errors == []


def test_cancel_flag() -> None:
    flag = CancelFlag()
    assert not flag.is_set()
    flag.set()
    assert flag.is_set()


def test_a_mailbox_goes_with_its_loop() -> None:
    mailboxes = LoopMailboxes()
    loop = asyncio.new_event_loop()
    box = mailboxes.for_loop(loop)
    assert mailboxes.for_loop(loop) is box
    ref = weakref.ref(loop)
    loop.close()
    del loop, box
    gc.collect()
    assert ref() is None
