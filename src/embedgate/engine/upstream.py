"""Embedding engines elsewhere: a pool of OpenAI-compatible `/v1/embeddings` upstreams.

vLLM, SGLang, TEI, Ollama, infinity, LiteLLM or another `embedgate serve`. The pool splits
a list of texts into upstream-sized batches, sends each to the healthy upstream with the
fewest requests outstanding (per weight), and puts the vectors back in order. It trusts
nothing that comes back: every vector must be finite, of the expected dimension and of unit
norm, or the upstream is ejected and the batch goes elsewhere.

Faults: connection errors, resets, timeouts, 5xx and 429 are retried on another upstream
within the request's deadline, and eject the upstream (a circuit breaker: 1 s, doubling to
30 s; a 429's Retry-After is honoured). An upstream whose ejection has run out is admitted
again only after `probe` embeds a fixed text and gets the same vector as the reference
(cosine >= 0.999), so an upstream that came back serving another model stays out. A 4xx
other than 429 is the input's fault: it becomes the client's 400, not a 502.

Vectors are asked for as base64 (exact float32, a third of the JSON size), and as floats
from an upstream that refuses base64.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from embedgate.errors import ErrorKind, ServiceError

log = logging.getLogger(__name__)

PROBE_TEXT = "embedgate probe: 企业知识库 / enterprise knowledge base"
SAME_MODEL_COSINE = 0.999
EJECT_FIRST_S = 1.0
EJECT_MAX_S = 30.0
NO_UPSTREAM_WAIT_S = 3.0  # a batch waits this long for an upstream to come back, then 503


@dataclass(frozen=True)
class UpstreamConfig:
    url: str  # base URL; requests go to {url}/v1/embeddings
    model: str | None  # the model name the upstream expects; None: the served model's name
    api_key: str | None = field(default=None, repr=False)
    max_batch: int = 64
    max_concurrency: int = 8
    weight: float = 1.0
    timeout_s: float = 30.0

    @property
    def name(self) -> str:
        return self.url.rstrip("/")


class UpstreamFault(Exception):
    """One call failed. `retryable`: another upstream may well succeed; `eject_s`: how long
    to keep this upstream out (a 429's Retry-After), None for the breaker's own backoff."""

    def __init__(self, message: str, *, retryable: bool, eject_s: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.eject_s = eject_s


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class UpstreamStats:
    """One upstream's counters, for /metrics (read when scraped)."""

    name: str
    healthy: bool
    in_flight: int
    requests: int
    errors: int
    retries: int
    ejections: int
    latency_buckets: tuple[int, ...]  # cumulative counts per LATENCY_BUCKETS
    latency_count: int
    latency_sum: float


@dataclass(eq=False)
class Upstream:
    config: UpstreamConfig
    semaphore: asyncio.Semaphore
    outstanding: int = 0
    ejected_until: float = 0.0  # 0: admitted
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


def decode_vectors(payload: dict[str, Any], count: int) -> np.ndarray:
    """The `data` of an embeddings response, in index order, as float32 rows."""
    data = payload.get("data")
    if not isinstance(data, list) or len(data) != count:
        raise UpstreamFault(
            f"expected {count} embeddings, got {len(data) if isinstance(data, list) else 0}",
            retryable=True,
        )
    rows: list[np.ndarray | None] = [None] * count
    for position, item in enumerate(data):
        index = item.get("index", position)
        raw = item.get("embedding")
        if isinstance(raw, str):
            vector = np.frombuffer(base64.b64decode(raw), dtype="<f4")
        else:
            vector = np.asarray(raw, dtype=np.float32)
        if not 0 <= index < count or rows[index] is not None:
            raise UpstreamFault("the embeddings' indexes are not 0..n-1", retryable=True)
        rows[index] = vector
    return np.stack([r for r in rows if r is not None])


def check_vectors(vectors: np.ndarray, dimensions: int | None) -> None:
    """Finite, of the expected dimension, unit norm: anything else is a broken upstream."""
    if vectors.ndim != 2 or (dimensions is not None and vectors.shape[1] != dimensions):
        raise UpstreamFault(
            f"vectors of dimension {vectors.shape[-1]}, expected {dimensions}", retryable=True
        )
    if not np.isfinite(vectors).all():
        raise UpstreamFault("vectors with NaN or infinite values", retryable=True)
    norms = np.linalg.norm(vectors, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-3):
        raise UpstreamFault("vectors that are not unit length", retryable=True)


class UpstreamPool:
    def __init__(
        self,
        configs: list[UpstreamConfig],
        *,
        dimensions: int | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if not configs:
            raise ValueError("a gateway needs at least one upstream")
        self.upstreams = [
            Upstream(c, asyncio.Semaphore(max(1, c.max_concurrency))) for c in configs
        ]
        self.dimensions = dimensions
        self.reference: np.ndarray | None = None
        self._client = client or httpx.AsyncClient()

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
        """Embed the probe text; admit the upstream when its vector matches the reference
        (the first upstream to answer sets it). A mismatch is refused loudly."""
        try:
            vector = (await self._call(upstream, [PROBE_TEXT]))[0]
        except UpstreamFault as fault:
            self._eject(upstream, fault)
            return False
        if self.reference is None:
            self.reference = vector
            self.dimensions = self.dimensions or len(vector)
        same = len(vector) == len(self.reference) and float(vector @ self.reference) >= (
            SAME_MODEL_COSINE
        )
        if not same:
            log.error(
                "upstream refused: it serves a different model than the others (mixed "
                "vectors would corrupt every knowledge base)",
                extra={"upstream": upstream.config.name},
            )
            self._eject(upstream, UpstreamFault("another model", retryable=True), EJECT_MAX_S)
            return False
        upstream.needs_probe = False
        upstream.backoff_s = EJECT_FIRST_S
        return True

    async def probe_due(self) -> None:
        """Probe every upstream that waits for admission and whose ejection ran out (the
        active health check; run it every few seconds)."""
        now = time.monotonic()
        due = [u for u in self.upstreams if u.needs_probe and now >= u.ejected_until]
        await asyncio.gather(*(self.probe(u) for u in due))

    def stats(self) -> list[UpstreamStats]:
        now = time.monotonic()
        return [u.stats(now) for u in self.upstreams]

    def why_none(self) -> str:
        """Why no upstream is admitted: each one's last fault, for /ready and logs."""
        faults = [f"{u.config.name}: {u.last_fault or 'not probed yet'}" for u in self.upstreams]
        return "no embedding upstream is healthy (" + "; ".join(faults) + ")"

    def healthy(self) -> list[Upstream]:
        now = time.monotonic()
        return [u for u in self.upstreams if u.admitted(now)]

    def _eject(
        self, upstream: Upstream, fault: UpstreamFault, seconds: float | None = None
    ) -> None:
        wait = seconds or fault.eject_s or upstream.backoff_s
        upstream.ejected_until = time.monotonic() + wait
        upstream.backoff_s = min(upstream.backoff_s * 2, EJECT_MAX_S)
        upstream.needs_probe = True
        upstream.ejections += 1
        upstream.last_fault = str(fault)
        log.warning(
            "upstream ejected",
            extra={"upstream": upstream.config.name, "reason": str(fault), "seconds": wait},
        )

    # --- embedding -----------------------------------------------------------------------------
    async def embed(self, texts: list[str], *, deadline_s: float = 30.0) -> np.ndarray:
        """Native-dimension unit vectors for `texts`, in order."""
        deadline = time.monotonic() + deadline_s
        size = min(u.config.max_batch for u in self.upstreams)
        batches = [texts[i : i + size] for i in range(0, len(texts), size)]
        parts = await asyncio.gather(*(self._batch(b, deadline) for b in batches))
        return np.concatenate(parts) if parts else np.empty((0, self.dimensions or 0), "f4")

    def _pick(self, tried: set[int]) -> Upstream | None:
        """Power of two choices over the admitted upstreams not yet tried, by outstanding
        requests per weight."""
        choices = [u for u in self.healthy() if id(u) not in tried]
        if not choices:
            return None
        pair = random.sample(choices, min(2, len(choices)))
        return min(pair, key=lambda u: (u.outstanding + 1) / max(u.config.weight, 1e-6))

    async def _batch(self, texts: list[str], deadline: float) -> np.ndarray:
        tried: set[int] = set()
        stalled: float | None = None  # since when no upstream could be tried
        while True:
            if time.monotonic() >= deadline:  # the request's time is up, whoever is left
                raise ServiceError(
                    ErrorKind.MODEL_UNAVAILABLE,
                    "the embedding upstreams did not answer within the request's deadline; "
                    "retry shortly",
                    headers={"Retry-After": "1"},
                )
            upstream = self._pick(tried)
            if upstream is None:
                now = time.monotonic()
                stalled = stalled or now
                if now >= deadline or now - stalled >= NO_UPSTREAM_WAIT_S:
                    raise ServiceError(
                        ErrorKind.MODEL_UNAVAILABLE,
                        "no embedding upstream is available; retry shortly",
                        headers={"Retry-After": "1"},
                    )
                tried.clear()  # everything was tried: wait for one to come back
                await asyncio.sleep(0.1)
                await self.probe_due()
                continue
            stalled = None
            try:
                return await self._call(upstream, texts, deadline=deadline)
            except UpstreamFault as fault:
                upstream.errors += 1
                if not fault.retryable:
                    raise ServiceError(ErrorKind.INVALID_INPUT, str(fault)) from None
                self._eject(upstream, fault)
                tried.add(id(upstream))
                upstream.retries += 1

    async def _call(
        self, upstream: Upstream, texts: list[str], deadline: float | None = None
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
        vectors = decode_vectors(response, len(texts))
        check_vectors(vectors, self.dimensions)
        return vectors

    async def _post(
        self, upstream: Upstream, texts: list[str], headers: dict[str, str], timeout: float
    ) -> dict[str, Any]:
        config = upstream.config
        body: dict[str, Any] = {"input": texts}
        if config.model:
            body["model"] = config.model
        if upstream.base64:
            body["encoding_format"] = "base64"
        try:
            response = await self._client.post(
                f"{config.name}/v1/embeddings", json=body, headers=headers, timeout=timeout
            )
        except httpx.HTTPError as exc:  # refused, reset, timed out
            raise UpstreamFault(f"{type(exc).__name__}: {exc}", retryable=True) from None
        if response.status_code == 200:
            try:
                payload: dict[str, Any] = response.json()
            except ValueError:
                raise UpstreamFault("a response that is not JSON", retryable=True) from None
            return payload
        text = response.text[:500]
        if response.status_code in (400, 422) and upstream.base64 and "base64" in text.lower():
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
