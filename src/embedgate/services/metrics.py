"""Prometheus metrics, one registry per app (no global state, so tests can build many apps)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from embedgate.engine.upstream import LATENCY_BUCKETS as UPSTREAM_BUCKETS
from embedgate.engine.upstream import UpstreamStats
from embedgate.services.traffic import RecentTraffic

# (restarts, failed restart attempts, model ready), read when Prometheus scrapes
ModelCounts = Callable[[], tuple[int, int, bool]]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class Metrics:
    """Request, queue and batch metrics; also the engine scheduler's observer."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "embedgate_requests",
            "HTTP requests by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "embedgate_request_duration_seconds",
            "HTTP request latency.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "embedgate_input_tokens", "Input tokens embedded (what usage reports).", registry=r
        )
        self.inputs = Counter("embedgate_inputs", "Inputs embedded.", registry=r)
        self.queue_items = Gauge(
            "embedgate_queue_items", "Inputs waiting for the model.", registry=r
        )
        self.queue_tokens = Gauge(
            "embedgate_queue_tokens", "Tokens waiting for the model.", registry=r
        )
        self.batch_rows = Histogram(
            "embedgate_batch_size", "Inputs per forward pass.", buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "embedgate_batch_tokens",
            "Real tokens per forward pass.",
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.padded_tokens = Counter(
            "embedgate_batch_padded_tokens",
            "Padded tokens computed (rows x padded length).",
            registry=r,
        )
        self.forward_seconds = Histogram(
            "embedgate_forward_duration_seconds",
            "Time in one forward pass.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.retried_counter = Counter(
            "embedgate_lost_pass_inputs_retried",
            "Inputs rerun alone because their forward pass was lost to a dying model process.",
            registry=r,
        )
        self.dropped_counter = Counter(
            "embedgate_dropped_inputs",
            "Inputs dropped because their client disconnected.",
            registry=r,
        )
        self.ready = Gauge(
            "embedgate_ready",
            "1 when the model passed its self-test and its process is up (as /ready).",
            registry=r,
        )
        self.recent = RecentTraffic()  # the last hour in memory, for the console
        self._model: ModelCounts = lambda: (0, 0, False)
        r.register(_ModelCollector(lambda: self._model()))
        self._upstreams: Callable[[], list[UpstreamStats]] = list
        r.register(_UpstreamCollector(lambda: self._upstreams()))

    def watch_model(
        self, counts: ModelCounts, upstreams: Callable[[], list[UpstreamStats]] = list
    ) -> None:
        """Where the model's restart counts, readiness and (gateway mode) upstreams are read
        at each scrape."""
        self._model = counts
        self._upstreams = upstreams

    def request_done(self, route: str, status: int, seconds: float, *, api: bool = True) -> None:
        """One answered request; `api` False for health probes and the console's files,
        which Prometheus counts but the console's overview of the API's traffic leaves out."""
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if api:
            self.recent.request(status, seconds)

    def embedded(self, inputs: int, tokens: int) -> None:
        self.tokens.inc(tokens)
        self.inputs.inc(inputs)
        self.recent.tokens(tokens)

    # --- SchedulerObserver ---------------------------------------------------------------
    def queue_changed(self, items: int, tokens: int) -> None:
        self.recent.queue(items)
        self.queue_items.set(items)
        self.queue_tokens.set(tokens)

    def batch_done(self, rows: int, tokens: int, padded_tokens: int, seconds: float) -> None:
        self.batch_rows.observe(rows)
        self.batch_tokens.observe(tokens)
        self.padded_tokens.inc(padded_tokens)
        self.forward_seconds.observe(seconds)

    def dropped(self, items: int) -> None:
        self.dropped_counter.inc(items)

    def retried_alone(self, items: int) -> None:
        self.retried_counter.inc(items)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _UpstreamCollector(Collector):
    """Gateway mode: per upstream requests, errors, retries, ejections, in-flight calls,
    health and call latency, read from the pool when scraped."""

    def __init__(self, upstreams: Callable[[], list[UpstreamStats]]) -> None:
        self._upstreams = upstreams

    def collect(self) -> Iterator[Metric]:
        stats = self._upstreams()
        label = ["upstream"]
        families = {
            "requests": CounterMetricFamily(
                "embedgate_upstream_requests", "Calls sent to the upstream.", labels=label
            ),
            "errors": CounterMetricFamily(
                "embedgate_upstream_errors",
                "Calls that failed or returned bad vectors.",
                labels=label,
            ),
            "retries": CounterMetricFamily(
                "embedgate_upstream_retries",
                "Batches moved to another upstream after this one failed.",
                labels=label,
            ),
            "ejections": CounterMetricFamily(
                "embedgate_upstream_ejections", "Times the upstream was ejected.", labels=label
            ),
        }
        in_flight = GaugeMetricFamily(
            "embedgate_upstream_in_flight", "Calls in flight to the upstream.", labels=label
        )
        healthy = GaugeMetricFamily(
            "embedgate_upstream_healthy", "1 while the upstream is admitted.", labels=label
        )
        latency = HistogramMetricFamily(
            "embedgate_upstream_latency_seconds", "Upstream call latency.", labels=label
        )
        for s in stats:
            for key, family in families.items():
                family.add_metric([s.name], getattr(s, key))
            in_flight.add_metric([s.name], s.in_flight)
            healthy.add_metric([s.name], float(s.healthy))
            buckets = [
                (str(b), c) for b, c in zip(UPSTREAM_BUCKETS, s.latency_buckets, strict=True)
            ]
            latency.add_metric(
                [s.name], [*buckets, ("+Inf", s.latency_count)], sum_value=s.latency_sum
            )
        yield from families.values()
        yield from (in_flight, healthy, latency)


class _ModelCollector(Collector):
    """The model process's restart counters, read from the backend when scraped (they are
    counted where restarts happen, in the engine, which knows nothing of Prometheus)."""

    def __init__(self, counts: ModelCounts) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        restarts, failures, ready = self._counts()
        yield CounterMetricFamily(
            "embedgate_model_restarts",
            "Times the model process died and a replacement started serving.",
            value=restarts,
        )
        yield CounterMetricFamily(
            "embedgate_model_restart_failures",
            "Attempts to start a replacement model process that failed (each is retried).",
            value=failures,
        )
        yield GaugeMetricFamily(
            "embedgate_model_ready",
            "1 while the model can take passes (its process is up and passed the self-test).",
            value=float(ready),
        )
