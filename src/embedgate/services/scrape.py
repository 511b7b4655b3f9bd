"""What Prometheus reads from the running service at each scrape: build, model, audit, storage,
ingest and upstream state, taken from one `ServiceSnapshot`.

The counters live where things happen (the model process, the audit log, the ingest runner,
the upstream pool), which know nothing of Prometheus; `Services.snapshot()` gathers them and
the collectors here turn a snapshot into metric families. Every family is yielded at every
scrape, before any traffic, so dashboards and alert rules never query a series that does not
exist yet (a store that is not configured has no `storage_up` series rather than a false 0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from embedgate.engine.backend import UPSTREAM_LATENCY_BUCKETS as UPSTREAM_BUCKETS
from embedgate.engine.backend import UpstreamStats

PAGE_SIZE = 4096


@dataclass(frozen=True, kw_only=True)
class ServiceSnapshot:
    """The service's state at one scrape."""

    version: str
    mode: str  # "local" (a model in this server) or "gateway"
    model: str = ""  # the default model's name; "" until it is known
    fingerprint: str = ""  # gateway mode: the hash naming the upstreams' vectors
    models: list[ModelState] = field(default_factory=list)  # every served model
    audit_failing: bool = False
    audit_write_failures: int = 0
    storage_up: dict[str, bool] = field(default_factory=dict)  # configured stores only
    ingest_jobs: dict[str, int] = field(default_factory=dict)  # outcome -> jobs ended so


@dataclass(frozen=True, kw_only=True)
class ModelState:
    """One served model at one scrape."""

    name: str
    task: str  # embed | rerank
    ready: bool = False
    restarts: int = 0
    restart_failures: int = 0
    pid: int | None = None  # the model's own process, where it has one
    upstreams: tuple[UpstreamStats, ...] = ()  # gateway mode: its upstreams


Snapshot = Callable[[], ServiceSnapshot]


class ServiceCollector(Collector):
    """Build, model, audit, storage and ingest families."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        build = InfoMetricFamily("embedgate_build", "The running version, model and mode.")
        build.add_metric(
            [],
            {"version": s.version, "model": s.model, "fingerprint": s.fingerprint, "mode": s.mode},
        )
        yield build
        yield from _model_families(s.models)
        simple: list[tuple[type[GaugeMetricFamily | CounterMetricFamily], str, str, float]] = [
            (GaugeMetricFamily, "embedgate_audit_failing",
             "1 while the audit log cannot be written.", float(s.audit_failing)),
            (CounterMetricFamily, "embedgate_audit_write_failures",
             "Audit records that could not be written.", s.audit_write_failures),
        ]  # fmt: skip
        for family, name, documentation, value in simple:
            yield family(name, documentation, value=value)
        storage = GaugeMetricFamily(
            "embedgate_storage_up",
            "1 while a configured store answers: database, vector_store, rate_limit_store.",
            labels=["store"],
        )
        for store, up in sorted(s.storage_up.items()):
            storage.add_metric([store], float(up))
        yield storage
        jobs = CounterMetricFamily(
            "embedgate_ingest_jobs",
            "Ingest jobs ended, by outcome: succeeded, failed, cancelled.",
            labels=["outcome"],
        )
        for outcome, count in sorted(s.ingest_jobs.items()):
            jobs.add_metric([outcome], count)
        yield jobs
        yield from _upstream_families(s.models)


def _model_families(models: list[ModelState]) -> Iterator[Metric]:
    """Per served model: readiness, restarts, failed restarts, its process's memory."""
    ready = GaugeMetricFamily(
        "embedgate_model_ready",
        "1 while the model can take passes (its process is up and passed the self-test).",
        labels=["model", "task"],
    )
    restarts = CounterMetricFamily(
        "embedgate_model_restarts",
        "Times the model process died and a replacement started serving.",
        labels=["model"],
    )
    failures = CounterMetricFamily(
        "embedgate_model_restart_failures",
        "Attempts to start a replacement model process that failed (each is retried).",
        labels=["model"],
    )
    resident = GaugeMetricFamily(
        "embedgate_model_process_resident_bytes",
        "Resident memory of the model's own process (0 where the model runs in-process).",
        labels=["model"],
    )
    for m in models:
        ready.add_metric([m.name, m.task], float(m.ready))
        restarts.add_metric([m.name], m.restarts)
        failures.add_metric([m.name], m.restart_failures)
        resident.add_metric([m.name], _resident_bytes(m.pid))
    yield from (ready, restarts, failures, resident)


def _resident_bytes(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return float(int(statm.read().split()[1]) * PAGE_SIZE)
    except (OSError, ValueError, IndexError):
        return 0.0  # gone between the snapshot and now (a restart)


def _upstream_families(models: list[ModelState]) -> Iterator[Metric]:
    """Gateway mode: per model and upstream requests, errors, retries, ejections, in-flight
    calls, health and call latency; empty families elsewhere."""
    label = ["model", "upstream"]
    counters = {
        "requests": CounterMetricFamily(
            "embedgate_upstream_requests", "Calls sent to the upstream.", labels=label
        ),
        "errors": CounterMetricFamily(
            "embedgate_upstream_errors", "Calls that failed or returned bad vectors.", labels=label
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
    for model, s in ((m.name, s) for m in models for s in m.upstreams):
        names = [model, s.name]
        for key, family in counters.items():
            family.add_metric(names, getattr(s, key))
        in_flight.add_metric(names, s.in_flight)
        healthy.add_metric(names, float(s.healthy))
        buckets = [(str(b), c) for b, c in zip(UPSTREAM_BUCKETS, s.latency_buckets, strict=True)]
        latency.add_metric(names, [*buckets, ("+Inf", s.latency_count)], sum_value=s.latency_sum)
    yield from counters.values()
    yield from (in_flight, healthy, latency)
