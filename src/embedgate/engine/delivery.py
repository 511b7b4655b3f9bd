"""How a finished request's rows get from a forward thread back to the caller.

A thread caller blocks on a `concurrent.futures.Future`. An event-loop caller could wrap one
(`asyncio.wrap_future`), but that costs, per request, a thread-safe future with its own
condition variable, a chained asyncio future, and a wake-up of the loop through its self-pipe
(a syscall on each side). A forward pass finishes tens of requests at once, so here they share
one wake-up: the first result of a burst schedules a flush on the loop, the rest of the burst
joins it. On 50-token requests the event loop's time per request is a few hundred
microseconds in all, so this is a visible share of it (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from embedgate.engine.pooling import FloatArray


class CancelSignal(Protocol):
    """Set by the caller's side when nobody waits for the result any more."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...


class CancelFlag:
    """A `CancelSignal` without `threading.Event`'s condition variable: nobody waits on it,
    forward threads only read it (a plain attribute, atomic under the GIL)."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


class Completion(Protocol):
    """The part of a future a forward thread uses; `concurrent.futures.Future` is one."""

    def done(self) -> bool: ...

    def set_result(self, result: FloatArray) -> None: ...

    def set_exception(self, exception: BaseException) -> None: ...

    def cancel(self) -> bool: ...


class LoopMailbox:
    """Calls handed over by other threads, run on one event loop, one wake-up per burst."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # held weakly: `LoopMailboxes` keys on the loop
        self._lock = threading.Lock()
        self._calls: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self._scheduled = False

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            self._calls.append((fn, args))
            if self._scheduled:
                return
            self._scheduled = True
        loop = self._loop()
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._flush)
                return
            except RuntimeError:  # the loop is closed
                pass
        with self._lock:  # the loop is closed or gone, and its callers with it
            self._calls.clear()
            self._scheduled = False

    def _flush(self) -> None:
        with self._lock:
            calls, self._calls = self._calls, []
            self._scheduled = False
        for fn, args in calls:
            fn(*args)


class LoopMailboxes:
    """One mailbox per event loop that waits on an engine; a closed loop's goes with it."""

    def __init__(self) -> None:
        self._boxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopMailbox] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def for_loop(self, loop: asyncio.AbstractEventLoop) -> LoopMailbox:
        with self._lock:
            box = self._boxes.get(loop)
            if box is None:
                box = self._boxes[loop] = LoopMailbox(loop)
            return box


def _settle(waiter: asyncio.Future[FloatArray], result: FloatArray | BaseException) -> None:
    if waiter.done():  # the caller was cancelled meanwhile
        return
    if isinstance(result, BaseException):
        waiter.set_exception(result)
    else:
        waiter.set_result(result)


class LoopCompletion:
    """A `Completion` whose result lands in an asyncio future on the caller's loop; made on
    that loop, with that loop's mailbox."""

    __slots__ = ("_done", "_mailbox", "waiter")

    def __init__(self, mailbox: LoopMailbox) -> None:
        self._mailbox = mailbox
        self.waiter: asyncio.Future[FloatArray] = asyncio.get_running_loop().create_future()
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: FloatArray) -> None:
        self._done = True
        self._mailbox.post(_settle, self.waiter, result)

    def set_exception(self, exception: BaseException) -> None:
        self._done = True
        self._mailbox.post(_settle, self.waiter, exception)

    def cancel(self) -> bool:
        self._done = True
        return True
