"""The shared rate-limit store: every replica's counters in one Redis.

One Lua script runs `limit_store.slide` on Redis's own clock for all the counters of a
request and charges them all or none, atomically, with the figures for the rate-limit headers
in the reply. Calls are also coalesced: while one script call is in flight, the charges of
other requests queue and go together in the next call (each request still all-or-nothing on
its own). Under load that is one round trip for many requests, which matters because a
redis-py call costs ~70 us of event-loop CPU, a fifth of a whole embedding request's share
(docs/benchmarks.md). Calls carry short timeouts, so a dead Redis never hangs a request.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from embedgate.security.limit_store import WINDOW_SECONDS, Charge, WindowState

# KEYS: one hash per counter (fields w, c, p: window index, current and previous count).
# ARGV: window width in ms, then per request: its number of counters, then limit and cost for
# each. Returns one string: per counter "allowed remaining reset_ms retry_ms" (retry -1: the
# charge can never fit), all space-separated, in KEYS order.
SLIDE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local width = tonumber(ARGV[1])
local index = math.floor(now / width)
local into = (now - index * width) / width
local out = {}
local k, a = 1, 2
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  a = a + 1
  local writes, all = {}, true
  for j = 1, n do
    local key = KEYS[k + j - 1]
    local limit = tonumber(ARGV[a + 2 * (j - 1)])
    local cost = tonumber(ARGV[a + 2 * (j - 1) + 1])
    local h = redis.call('HMGET', key, 'w', 'c', 'p')
    local w = tonumber(h[1])
    local cur, prev = 0, 0
    if w ~= nil then
      if w >= index then
        cur, prev = tonumber(h[2]) or 0, tonumber(h[3]) or 0
      elseif w == index - 1 then
        prev = tonumber(h[2]) or 0
      end
    end
    local used = prev * (1 - into) + cur
    local allowed = used + cost <= limit
    local retry = 0
    if allowed then
      cur = cur + cost
      used = used + cost
    elseif cost > limit then
      retry = -1
    else
      local room = limit - cost - cur
      if room >= 0 and prev > 0 then
        retry = math.max(1 - room / prev - into, 0) * width
      else
        local fade = 0
        if cur > 0 then fade = math.max(1 - (limit - cost) / cur, 0) end
        retry = (1 - into + fade) * width
      end
      all = false
    end
    local reset = 0
    if cur > 0 then reset = (index + 2) * width - now
    elseif prev > 0 then reset = (index + 1) * width - now end
    out[#out + 1] = string.format('%d %d %d %d', allowed and 1 or 0,
      math.max(0, math.floor(limit - used)), math.floor(reset), math.ceil(retry))
    writes[j] = {key, cur, prev}
  end
  if all then
    for j = 1, n do
      local wr = writes[j]
      redis.call('HSET', wr[1], 'w', index, 'c', wr[2], 'p', wr[3])
      redis.call('PEXPIRE', wr[1], 2 * width)
    end
  end
  k = k + n
  a = a + 2 * n
end
return table.concat(out, ' ')
"""

_Pending = tuple[Sequence[Charge], "asyncio.Future[list[WindowState]]"]


class RedisLimitStore:
    def __init__(self, url: str, prefix: str = "embedgate:limit", timeout: float = 0.5) -> None:
        self._redis: Redis = Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._prefix = prefix
        self._sha: str | None = None
        self._queue: list[_Pending] = []
        self._sender: asyncio.Task[None] | None = None

    async def charge(self, charges: Sequence[Charge]) -> list[WindowState]:
        future: asyncio.Future[list[WindowState]] = asyncio.get_running_loop().create_future()
        self._queue.append((charges, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.ensure_future(self._send_queued())
        return await future

    async def _send_queued(self) -> None:
        """One script call at a time; whatever queued meanwhile goes in the next one."""
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                results = await self._charge_batch([charges for charges, _ in batch])
            except Exception as exc:
                # requests that queued behind a failing call would wait a whole timeout more
                # for the same answer (a hung Redis): they get it now
                failed, self._queue = batch + self._queue, []
                for _, future in failed:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), states in zip(batch, results, strict=True):
                if not future.done():  # its caller may have gone away meanwhile
                    future.set_result(states)

    async def _charge_batch(self, batch: list[Sequence[Charge]]) -> list[list[WindowState]]:
        keys: list[str] = []
        args: list[Any] = [int(WINDOW_SECONDS * 1000)]
        for charges in batch:
            args.append(len(charges))
            for c in charges:
                keys.append(f"{self._prefix}:{c.key}")
                args += [c.limit, c.cost]
        numbers = [int(v) for v in (await self._run(keys, args)).split()]
        results, at = [], 0
        for charges in batch:
            states = []
            for _ in charges:
                allowed, remaining, reset_ms, retry_ms = numbers[at : at + 4]
                at += 4
                retry = math.inf if retry_ms < 0 else retry_ms / 1000
                states.append(WindowState(bool(allowed), remaining, reset_ms / 1000, retry))
            results.append(states)
        return results

    async def _run(self, keys: list[str], args: list[Any]) -> bytes:
        if self._sha is None:
            self._sha = await self._redis.script_load(SLIDE_SCRIPT)
        try:
            return await self._evalsha(self._sha, keys, args)
        except NoScriptError:  # Redis restarted, or its script cache was flushed
            self._sha = await self._redis.script_load(SLIDE_SCRIPT)
            return await self._evalsha(self._sha, keys, args)

    async def _evalsha(self, sha: str, keys: list[str], args: list[Any]) -> bytes:
        client: Any = self._redis  # redis-py's stubs type evalsha differently across versions
        reply: bytes = await client.evalsha(sha, len(keys), *keys, *args)
        return reply

    async def aclose(self) -> None:
        if self._sender is not None:
            await asyncio.gather(self._sender, return_exceptions=True)
        await self._redis.aclose()
