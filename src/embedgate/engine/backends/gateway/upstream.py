"""Engines elsewhere: a pool of upstreams that embed (OpenAI `/v1/embeddings`) or rerank
(Cohere `/v1/rerank`, TEI `/rerank`); `wire.py` holds what differs between the APIs.

vLLM, SGLang, TEI, Ollama, infinity, LiteLLM or another `embedgate serve`. The pool splits
a list of items into upstream-sized batches, sends each to the healthy upstream with the
fewest requests outstanding (per weight), and puts the answers back in order. It trusts
nothing that comes back: every vector must be finite, of the expected dimension and of unit
norm, every score a number in [0, 1] for each document once, or the upstream is ejected and
the batch goes elsewhere.

Faults: connection errors, resets, timeouts, 5xx and 429 are retried on another upstream
within the request's deadline, and eject the upstream (a circuit breaker: 1 s, doubling to
30 s; a 429's Retry-After is honoured). A 4xx other than 429 is the input's fault: it becomes
the client's 400, not a 502.

Health is checked actively, traffic or not (`check_health`, every few seconds): each upstream
answers a fixed probe and must return the reference answer (an embedding: cosine >= 0.999;
a rerank score: within 0.01). A healthy
upstream that fails its probe is ejected, so an idle gateway notices a dead engine before a
client does; an ejected one that passes is admitted again, and one that came back serving
another model stays out. A request that finds no upstream admitted is refused at once (503)
instead of retrying connections to engines already known to be down.

Vectors are asked for as base64 (exact float32, a third of the JSON size), and as floats
from an upstream that refuses base64.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from embedgate.engine.backend import UPSTREAM_LATENCY_BUCKETS as LATENCY_BUCKETS
from embedgate.engine.backend import UpstreamStats
from embedgate.engine.backends.gateway.wire import EmbeddingWire, Wire, WireFault
from embedgate.engine.config import UpstreamConfig
from embedgate.errors import ErrorKind, ServiceError

log = logging.getLogger(__name__)

EJECT_FIRST_S = 1.0
EJECT_MAX_S = 30.0
RECOVERY_WAIT_S = 0.5  # a request with no upstream admitted waits this long for a probe


class UpstreamFault(Exception):
    """One call failed. `retryable`: another upstream may well succeed; `eject_s`: how long
    to keep this upstream out (a 429's Retry-After), None for the breaker's own backoff."""

    def __init__(self, message: str, *, retryable: bool, eject_s: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.eject_s = eject_s


@dataclass(eq=False)
class Upstream:
    config: UpstreamConfig
    semaphore: asyncio.Semaphore
    outstanding: int = 0
    ejected_until: float = 0.0  # 0: admitted
    held_until: float = 0.0  # no probe before this (a 429's Retry-After, another model)
    backoff_s: float = EJECT_FIRST_S
    needs_probe: bool = True
    base64: bool = True
    requests: int = 0
    errors: int = 0
    retries: int = 0
    ejections: int = 0
    latency_counts: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    latency_count: int = 0
    latency_sum: float = 0.0
    last_fault: str | None = None  # why it was last ejected (readiness names it)

    def admitted(self, now: float) -> bool:
        return not self.needs_probe and now >= self.ejected_until

    def observe(self, seconds: float) -> None:
        self.latency_count += 1
        self.latency_sum += seconds
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency_counts[i] += 1

    def stats(self, now: float) -> UpstreamStats:
        return UpstreamStats(
            name=self.config.name,
            healthy=self.admitted(now),
            in_flight=self.outstanding,
            requests=self.requests,
            errors=self.errors,
            retries=self.retries,
            ejections=self.ejections,
            latency_buckets=tuple(self.latency_counts),
            latency_count=self.latency_count,
            latency_sum=self.latency_sum,
        )


class UpstreamPool:
    def __init__(
        self,
        configs: list[UpstreamConfig],
        *,
        dimensions: int | None = None,
        wire: Wire | None = None,
        client: httpx.AsyncClient | None = None,
        probe_timeout_s: float = 5.0,
    ) -> None:
        if not configs:
            raise ValueError("a gateway needs at least one upstream")
        self.upstreams = [
            Upstream(c, asyncio.Semaphore(max(1, c.max_concurrency))) for c in configs
        ]
        self.dimensions = dimensions  # of each answer row; None: the first probe's
        self.wire: Wire = wire or EmbeddingWire()
        self.probe_timeout_s = probe_timeout_s  # a probe slower than this fails it
        self.reference: np.ndarray | None = None
        self._client = client or httpx.AsyncClient()
        self._recovery: asyncio.Future[None] | None = None  # one shared probe_due at a time

    # --- admission ----------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str | None:
        """Names the model the pool serves: a hash of the probe text's vector, rounded so
        that bit-level differences between healthy replicas do not change it."""
        if self.reference is None:
            return None
        rounded = np.round(self.reference, 3).astype("<f4").tobytes()
        return hashlib.sha256(rounded).hexdigest()[:16]

    async def probe(self, upstream: Upstream) -> bool:
        """Send the wire's probe; admit the upstream when its answer matches the reference
        (the first upstream to answer sets it), eject it otherwise. A mismatch is refused
        loudly."""
        deadline = time.monotonic() + min(upstream.config.timeout_s, self.probe_timeout_s)
        try:
            vector = (await self._call(upstream, self.wire.probe(), deadline=deadline))[0]
        except UpstreamFault as fault:
            if upstream.admitted(time.monotonic()):
                upstream.errors += 1
            self._eject(upstream, UpstreamFault(f"health probe: {fault}", retryable=True))
            return False
        if self.reference is None:
            self.reference = vector
            self.dimensions = self.dimensions or len(vector)
        if not self.wire.same_model(self.reference, vector):
            log.error(
                "upstream refused: it serves a different model than the others (mixed "
                "answers would corrupt every knowledge base and ranking)",
                extra={"upstream": upstream.config.name},
            )
            self._eject(upstream, UpstreamFault("another model", retryable=True), EJECT_MAX_S)
            return False
        upstream.needs_probe = False
        upstream.ejected_until = 0.0  # passed: admitted now, not when its backoff runs out
        upstream.backoff_s = EJECT_FIRST_S
        return True

    async def probe_due(self) -> None:
        """Probe every upstream that waits for admission and whose ejection ran out."""
        now = time.monotonic()
        due = [u for u in self.upstreams if u.needs_probe and now >= u.ejected_until]
        await asyncio.gather(*(self.probe(u) for u in due))

    async def check_health(self) -> None:
        """The active health check, run every few seconds whether or not traffic flows:
        every upstream is probed, the admitted ones (a dead one is ejected before a client
        meets it) and the ejected ones (a recovered one is admitted without waiting out its
        backoff), except those holding us off (a 429's Retry-After, another model)."""
        now = time.monotonic()
        due = [u for u in self.upstreams if now >= u.held_until]
        await asyncio.gather(*(self.probe(u) for u in due))

    def stats(self) -> list[UpstreamStats]:
        now = time.monotonic()
        return [u.stats(now) for u in self.upstreams]

    def why_none(self) -> str:
        """Why no upstream is admitted: each one's last fault, for /ready and logs."""
        faults = [f"{u.config.name}: {u.last_fault or 'not probed yet'}" for u in self.upstreams]
        return f"no {self.wire.label} upstream is healthy (" + "; ".join(faults) + ")"

    def healthy(self) -> list[Upstream]:
        now = time.monotonic()
        return [u for u in self.upstreams if u.admitted(now)]

    def _eject(
        self, upstream: Upstream, fault: UpstreamFault, seconds: float | None = None
    ) -> None:
        wait = seconds or fault.eject_s or upstream.backoff_s
        upstream.ejected_until = time.monotonic() + wait
        if seconds or fault.eject_s:  # the upstream asked for this pause: no probe before
            upstream.held_until = upstream.ejected_until
        upstream.backoff_s = min(upstream.backoff_s * 2, EJECT_MAX_S)
        upstream.needs_probe = True
        upstream.ejections += 1
        upstream.last_fault = str(fault)
        log.warning(
            "upstream ejected",
            extra={"upstream": upstream.config.name, "reason": str(fault), "seconds": wait},
        )

    # --- work ----------------------------------------------------------------------------------
    async def embed(self, texts: list[str], *, deadline_s: float = 30.0) -> np.ndarray:
        """Native-dimension unit vectors for `texts`, in order."""
        return await self.run(texts, deadline_s=deadline_s)

    async def run(self, items: list[Any], *, deadline_s: float = 30.0) -> np.ndarray:
        """The wire's answer rows for `items` (texts, or pairs of one query), in order."""
        deadline = time.monotonic() + deadline_s
        size = min(u.config.max_batch for u in self.upstreams)
        batches = [items[i : i + size] for i in range(0, len(items), size)]
        parts = await asyncio.gather(*(self._batch(b, deadline) for b in batches))
        return np.concatenate(parts) if parts else np.empty((0, self.dimensions or 0), "f4")

    def _pick(self) -> Upstream | None:
        """Power of two choices over the admitted upstreams (a failed one was ejected), by
        outstanding requests per weight."""
        choices = self.healthy()
        if not choices:
            return None
        pair = random.sample(choices, min(2, len(choices)))
        return min(pair, key=lambda u: (u.outstanding + 1) / max(u.config.weight, 1e-6))

    async def _batch(self, texts: list[Any], deadline: float) -> np.ndarray:
        """One batch on the best admitted upstream; on a retryable fault, the next one,
        until the deadline. With none admitted, those whose ejection ran out get one short
        shared probe (a blip heals without waiting for the health check); still none: 503
        at once, never a loop of connections to engines already known to be down."""
        recovery_tried = False
        while True:
            if time.monotonic() >= deadline:  # the request's time is up, whoever is left
                raise ServiceError(
                    ErrorKind.MODEL_UNAVAILABLE,
                    f"the {self.wire.label} upstreams did not answer within the request's deadline",
                    retry_after_s=1.0,
                )
            upstream = self._pick()
            if upstream is None and not recovery_tried:
                recovery_tried = True
                await self._admit_recovered(deadline)
                upstream = self._pick()
            if upstream is None:
                raise ServiceError(
                    ErrorKind.MODEL_UNAVAILABLE,
                    f"no {self.wire.label} upstream is available",
                    retry_after_s=1.0,
                )
            try:
                return await self._call(upstream, texts, deadline=deadline)
            except UpstreamFault as fault:
                upstream.errors += 1
                if not fault.retryable:
                    raise ServiceError(ErrorKind.INVALID_INPUT, str(fault)) from None
                self._eject(upstream, fault)
                upstream.retries += 1

    async def _admit_recovered(self, deadline: float) -> None:
        """Probe the upstreams whose ejection ran out, waiting at most RECOVERY_WAIT_S;
        concurrent requests share one round of probes."""
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.ensure_future(self.probe_due())
        wait = min(RECOVERY_WAIT_S, deadline - time.monotonic())
        # past the wait the probe goes on in the background; this request is answered now
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._recovery), timeout=max(0.0, wait))

    async def _call(
        self, upstream: Upstream, texts: list[Any], deadline: float | None = None
    ) -> np.ndarray:
        config = upstream.config
        timeout = config.timeout_s
        if deadline is not None:
            timeout = max(0.1, min(timeout, deadline - time.monotonic()))
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        async with upstream.semaphore:
            upstream.outstanding += 1
            upstream.requests += 1
            started = time.monotonic()
            try:
                response = await self._post(upstream, texts, headers, timeout)
            finally:
                upstream.outstanding -= 1
                upstream.observe(time.monotonic() - started)
        try:
            answer = self.wire.decode(response, len(texts))
        except WireFault as fault:
            raise UpstreamFault(str(fault), retryable=True) from None
        if self.dimensions is not None and answer.shape[1] != self.dimensions:
            raise UpstreamFault(
                f"answers of dimension {answer.shape[1]}, expected {self.dimensions}",
                retryable=True,
            )
        return answer

    async def _post(
        self, upstream: Upstream, texts: list[Any], headers: dict[str, str], timeout: float
    ) -> Any:
        config = upstream.config
        body = self.wire.body(texts, config.model, base64_ok=upstream.base64)
        try:
            response = await self._client.post(
                f"{config.name}{self.wire.path}", json=body, headers=headers, timeout=timeout
            )
        except httpx.HTTPError as exc:  # refused, reset, timed out
            raise UpstreamFault(f"{type(exc).__name__}: {exc}", retryable=True) from None
        if response.status_code == 200:
            try:
                payload: Any = response.json()
            except ValueError:
                raise UpstreamFault("a response that is not JSON", retryable=True) from None
            return payload
        text = response.text[:500]
        if response.status_code in (400, 422) and upstream.base64 and "base64" in text.lower():
            # (only the embedding wire asks for base64)
            upstream.base64 = False  # an upstream without base64: floats from now on
            return await self._post(upstream, texts, headers, timeout)
        if response.status_code == 429:
            after = response.headers.get("retry-after", "")
            raise UpstreamFault(
                "the upstream is rate limiting",
                retryable=True,
                eject_s=float(after) if after.replace(".", "", 1).isdigit() else None,
            )
        if 400 <= response.status_code < 500 and response.status_code not in (401, 403, 404):
            raise UpstreamFault(f"the upstream refused the input: {text}", retryable=False)
        raise UpstreamFault(f"HTTP {response.status_code}: {text}", retryable=True)

    async def aclose(self) -> None:
        await self._client.aclose()
