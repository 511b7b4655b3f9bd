"""The sliding-window counters: the algorithm on a moving clock, all-or-nothing charging, and
the Redis script agreeing with the Python reference on a real Redis."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator

import pytest
import redis as redis_sync

from embedgate.security.limit_store import (
    WINDOW_SECONDS,
    Charge,
    Counter,
    MemoryLimitStore,
    slide,
)
from embedgate.security.redis_limit_store import RedisLimitStore
from support.services import RedisServer, redis_server


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def charge(store: MemoryLimitStore, *charges: Charge) -> list[tuple[bool, int]]:
    states = asyncio.run(store.charge(list(charges)))
    return [(s.allowed, s.remaining) for s in states]


def test_burst_then_refusal_within_one_window() -> None:
    store = MemoryLimitStore(Clock(6000.0))  # the start of a window
    results = [charge(store, Charge("k", 3))[0] for _ in range(4)]
    assert results == [(True, 2), (True, 1), (True, 0), (False, 0)]


def test_previous_window_fades_as_the_minute_slides() -> None:
    clock = Clock(6000.0)
    store = MemoryLimitStore(clock)
    for _ in range(10):
        charge(store, Charge("k", 10))
    clock.now = 6000.0 + WINDOW_SECONDS * 1.25  # a quarter into the next window: 7.5 still count
    assert charge(store, Charge("k", 10, cost=3)) == [(False, 2)]
    assert charge(store, Charge("k", 10, cost=2)) == [(True, 0)]
    clock.now = 6000.0 + WINDOW_SECONDS * 3  # two windows later nothing is left
    assert charge(store, Charge("k", 10, cost=10)) == [(True, 0)]


def test_retry_after_is_exact() -> None:
    clock = Clock(6000.0 + 30)
    store = MemoryLimitStore(clock)
    charge(store, Charge("k", 4, cost=4))
    state = asyncio.run(store.charge([Charge("k", 4)]))[0]
    assert not state.allowed and state.retry_seconds > 0
    # the count fades only in the next window: at 30 s + retry it fits, a moment before it does not
    clock.now += state.retry_seconds - 0.5
    assert charge(store, Charge("k", 4)) == [(False, 0)]
    clock.now += 0.5
    assert charge(store, Charge("k", 4))[0][0] is True


def test_a_charge_larger_than_the_limit_never_fits() -> None:
    state = slide(None, 6000.0, Charge("k", 5, cost=6))[1]
    assert not state.allowed and math.isinf(state.retry_seconds)


def test_all_or_nothing_across_counters() -> None:
    store = MemoryLimitStore(Clock(6000.0))
    requests, tokens = Charge("requests:k", 5), Charge("tokens:k", 10, cost=8)
    assert charge(store, requests, tokens) == [(True, 4), (True, 2)]
    # refused on tokens: the request counter is not charged either
    assert charge(store, requests, tokens) == [(True, 3), (False, 2)]
    assert charge(store, requests, Charge("tokens:k", 10, cost=2)) == [(True, 3), (True, 0)]


def test_memory_store_forgets_idle_counters() -> None:
    clock = Clock(6000.0)
    store = MemoryLimitStore(clock)
    store._counters = {f"old{n}": Counter(0, 1, 0) for n in range(100_001)}
    charge(store, Charge("new", 5))
    assert set(store._counters) == {"new"}


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def redis_now(client: redis_sync.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + float(micros) / 1e6


@pytest.mark.anyio
async def test_redis_script_matches_the_reference(redis: RedisServer) -> None:
    """A counter seeded with a busy previous window: the script and `slide` agree on what
    still counts (within one unit for the milliseconds between the two clocks)."""
    client = redis_sync.Redis.from_url(redis.url)
    now = redis_now(client)
    index = math.floor(now / WINDOW_SECONDS)
    client.hset("embedgate:limit:seeded", mapping={"w": index - 1, "c": 50, "p": 0})
    store = RedisLimitStore(redis.url)

    try:
        state = (await store.charge([Charge("seeded", 100, cost=1)]))[0]
    finally:
        await store.aclose()
    expected = slide(Counter(index - 1, 50, 0), now, Charge("seeded", 100, cost=1))[1]
    assert state.allowed == expected.allowed
    assert abs(state.remaining - expected.remaining) <= 1
    assert abs(state.reset_seconds - expected.reset_seconds) < 1
    stored = client.hgetall("embedgate:limit:seeded")
    assert int(stored[b"w"]) == index and int(stored[b"p"]) == 50 and int(stored[b"c"]) == 1
    assert 0 < client.pttl("embedgate:limit:seeded") <= 2 * WINDOW_SECONDS * 1000


@pytest.mark.anyio
async def test_redis_charges_all_or_nothing(redis: RedisServer) -> None:
    requests, tokens = Charge("requests:aon", 5), Charge("tokens:aon", 10, cost=8)

    store = RedisLimitStore(redis.url)
    try:
        first, refused, third = [
            await store.charge([requests, tokens]),
            await store.charge([requests, tokens]),  # refused on tokens
            await store.charge([requests, Charge("tokens:aon", 10, cost=2)]),
        ]
    finally:
        await store.aclose()
    assert [(s.allowed, s.remaining) for s in first] == [(True, 4), (True, 2)]
    assert refused[0].allowed and not refused[1].allowed and refused[1].retry_seconds > 0
    # the refused request did not use up a request slot
    assert [(s.allowed, s.remaining) for s in third] == [(True, 3), (True, 0)]


@pytest.mark.anyio
async def test_redis_store_recovers_from_a_flushed_script_cache(redis: RedisServer) -> None:
    store = RedisLimitStore(redis.url)

    first = (await store.charge([Charge("flush", 5)]))[0].allowed
    await store._redis.script_flush()
    second = (await store.charge([Charge("flush", 5)]))[0].allowed
    await store.aclose()
    result = first, second
    assert result == (True, True)


@pytest.mark.anyio
async def test_redis_coalesces_concurrent_charges_and_keeps_them_exact(redis: RedisServer) -> None:
    """50 requests at once against a limit of 30: exactly 30 fit, each request all-or-nothing
    on its own, in fewer script calls than requests."""
    client = redis_sync.Redis.from_url(redis.url)
    before = int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))

    store = RedisLimitStore(redis.url)
    try:
        results = list(
            await asyncio.gather(
                *(
                    store.charge([Charge("burst:r", 30), Charge(f"burst:t{n % 2}", 1000, 10)])
                    for n in range(50)
                )
            )
        )
    finally:
        await store.aclose()
    calls = int(client.info("commandstats")["cmdstat_evalsha"]["calls"]) - before
    assert sum(states[0].allowed for states in results) == 30
    assert all(states[1].allowed for states in results)  # the token limit alone never refuses
    # ...but only the 30 requests that fit were charged tokens
    assert sum(int(client.hget(f"embedgate:limit:burst:t{n}", "c")) for n in (0, 1)) == 300
    assert 1 <= calls < 50


@pytest.mark.anyio
async def test_a_hung_redis_fails_queued_charges_with_the_call_ahead_of_them() -> None:
    """A Redis that accepts connections but never answers: requests that queued behind the
    in-flight call get its error when it times out, not after a timeout of their own."""
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # the kernel completes handshakes; nothing ever replies
    port = listener.getsockname()[1]

    try:
        store = RedisLimitStore(f"redis://127.0.0.1:{port}/0", timeout=0.3)
        started = time.monotonic()
        first = asyncio.ensure_future(store.charge([Charge("hung", 5)]))
        await asyncio.sleep(0.05)  # the first call is in flight now
        later = [asyncio.ensure_future(store.charge([Charge("hung", 5)])) for _ in range(9)]
        results = await asyncio.gather(first, *later, return_exceptions=True)
        elapsed = time.monotonic() - started
        await store.aclose()
    finally:
        listener.close()
    assert all(isinstance(r, Exception) for r in results)
    assert elapsed < 0.55  # one timeout (0.3 s) for all ten, not 0.3 s + 0.3 s
