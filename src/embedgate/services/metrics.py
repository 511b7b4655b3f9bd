"""Prometheus metrics, one registry per app (no global state, so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from embedgate import __version__
from embedgate.services.scrape import ServiceCollector, ServiceSnapshot, Snapshot
from embedgate.services.traffic import RecentTraffic

# the routes the dashboards and alert rules read, exported at 0 before their first request
KEY_ROUTES = ("/v1/embeddings", "/v1/collections/{name}/search")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class Metrics:
    """Request, queue and batch metrics; `for_model` gives each served model's scheduler
    its observer."""

    def __init__(self) -> None:
        # `_created` series double every counter and no rule reads them
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(collector)  # stateless readers of /proc and the interpreter
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
        model = ["model"]  # each served model's own series
        self.tokens = Counter(
            "embedgate_input_tokens",
            "Input tokens embedded (what usage reports).",
            model,
            registry=r,
        )
        self.inputs = Counter("embedgate_inputs", "Inputs embedded.", model, registry=r)
        self.queue_items = Gauge(
            "embedgate_queue_items", "Inputs waiting for the model.", model, registry=r
        )
        self.queue_tokens = Gauge(
            "embedgate_queue_tokens", "Tokens waiting for the model.", model, registry=r
        )
        self.batch_rows = Histogram(
            "embedgate_batch_size",
            "Inputs per forward pass.",
            model,
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.batch_tokens = Histogram(
            "embedgate_batch_tokens",
            "Real tokens per forward pass.",
            model,
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.padded_tokens = Counter(
            "embedgate_batch_padded_tokens",
            "Padded tokens computed (rows x padded length).",
            model,
            registry=r,
        )
        self.forward_seconds = Histogram(
            "embedgate_forward_duration_seconds",
            "Time in one forward pass.",
            model,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.retried_counter = Counter(
            "embedgate_lost_pass_inputs_retried",
            "Inputs rerun alone because their forward pass was lost to a dying model process.",
            model,
            registry=r,
        )
        self.dropped_counter = Counter(
            "embedgate_dropped_inputs",
            "Inputs dropped because their client disconnected.",
            model,
            registry=r,
        )
        self.ready = Gauge(
            "embedgate_ready",
            "1 when the model passed its self-test and its process is up (as /ready).",
            registry=r,
        )
        self.queue_max_tokens = Gauge(
            "embedgate_queue_max_tokens",
            "Tokens the queue admits before it answers 429 (max_queued_tokens).",
            model,
            registry=r,
        )
        for route in KEY_ROUTES:
            self.requests.labels(route, "200")
            self.latency.labels(route)
        self.recent = RecentTraffic()  # the last hour in memory, for the console
        self._snapshot: Snapshot = lambda: ServiceSnapshot(version=__version__, mode="local")
        r.register(ServiceCollector(lambda: self._snapshot()))

    def watch(self, snapshot: Snapshot) -> None:
        """Where the service's state is read at each scrape (`Services.snapshot`)."""
        self._snapshot = snapshot

    def request_done(self, route: str, status: int, seconds: float, *, api: bool = True) -> None:
        """One answered request; `api` False for health probes and the console's files,
        which Prometheus counts but the console's overview of the API's traffic leaves out."""
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if api:
            self.recent.request(status, seconds)

    def embedded(self, model: str, inputs: int, tokens: int) -> None:
        self.tokens.labels(model).inc(tokens)
        self.inputs.labels(model).inc(inputs)
        self.recent.tokens(tokens)

    def for_model(self, name: str, *, max_queued_tokens: int) -> ModelMetrics:
        """The scheduler observer of one served model: its queue and passes, labelled with
        its name, so several models in one server never overwrite each other's gauges."""
        self.queue_max_tokens.labels(name).set(max_queued_tokens)
        for family in (self.tokens, self.inputs, self.queue_items, self.queue_tokens):
            family.labels(name)  # exported at 0 before the first request
        return ModelMetrics(self, name)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ModelMetrics:
    """One served model's `SchedulerObserver`: the shared families, this model's series."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self.model = model
        self._queue_items = metrics.queue_items.labels(model)
        self._queue_tokens = metrics.queue_tokens.labels(model)
        self._rows = metrics.batch_rows.labels(model)
        self._tokens = metrics.batch_tokens.labels(model)
        self._padded = metrics.padded_tokens.labels(model)
        self._forward = metrics.forward_seconds.labels(model)
        self._dropped = metrics.dropped_counter.labels(model)
        self._retried = metrics.retried_counter.labels(model)
        self._recent = metrics.recent

    def queue_changed(self, items: int, tokens: int) -> None:
        self._recent.queue(items)
        self._queue_items.set(items)
        self._queue_tokens.set(tokens)

    def batch_done(self, rows: int, tokens: int, padded_tokens: int, seconds: float) -> None:
        self._rows.observe(rows)
        self._tokens.observe(tokens)
        self._padded.inc(padded_tokens)
        self._forward.observe(seconds)

    def dropped(self, items: int) -> None:
        self._dropped.inc(items)

    def retried_alone(self, items: int) -> None:
        self._retried.inc(items)
