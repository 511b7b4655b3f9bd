"""`Services`: the one composition root. The server, the in-process CLI, the benchmarks and
the tests build everything through it, and a new backend or store is chosen here, from
settings, and nowhere else.

`Services.open()` starts the parts in dependency order on one `AsyncExitStack`, so leaving it
closes them in reverse: the ingest runner stops (and its parse worker with it) before the
model and the vector store go, and the database goes last.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, overload

from sqlalchemy import Engine

from embedgate import __version__
from embedgate.config import Settings
from embedgate.engine import EmbeddingEngine, EngineConfig, RerankEngine, load_engine, load_reranker
from embedgate.engine.backend import BackendHealth
from embedgate.engine.loading import served_name
from embedgate.engine.scheduler import SchedulerObserver
from embedgate.engine.selftest import run_rerank_self_test, run_self_test
from embedgate.errors import ErrorKind, ServiceError
from embedgate.knowledge.analysis import shared_analyzer
from embedgate.knowledge.base import KnowledgeBase
from embedgate.knowledge.job_queue import JobOutcomes
from embedgate.knowledge.vector_store import VectorStore
from embedgate.security.audit import AuditLog, AuditSink
from embedgate.security.gate import Security
from embedgate.security.key_service import KeyService
from embedgate.services.engine import engine_config, extra_model_configs
from embedgate.services.knowledge import build_knowledge, open_vector_store
from embedgate.services.metrics import Metrics
from embedgate.services.model import EngineFactory, ModelSupervisor
from embedgate.services.routing import ModelRouting
from embedgate.services.scrape import ModelState, ServiceSnapshot
from embedgate.services.security import build_security, ensure_first_admin_key
from embedgate.services.storage import open_configured_database
from embedgate.storage.database import ping
from embedgate.storage.key_store import KeyStore

log = logging.getLogger("embedgate.app")

ModelStart = Literal["background", "wait", "none"]


@dataclass(frozen=True, kw_only=True)
class Overrides:
    """Boundaries a test or benchmark swaps for its own; None means the real one."""

    engine_factory: EngineFactory | None = None
    key_store: KeyStore | None = None
    audit_sink: AuditSink | None = None
    vector_store: VectorStore | None = None


@dataclass(kw_only=True)
class Services(ModelRouting):
    """Everything a surface (HTTP routes, CLI commands) works with, opened by `open()`."""

    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    database: Engine | None = None
    security: Security | None = None
    audit: AuditLog | None = None
    keys: KeyService | None = None
    bootstrap_key_file: Path | None = None
    knowledge: KnowledgeBase | None = None
    knowledge_error: str = "starting"
    model: ModelSupervisor[EmbeddingEngine] = field(init=False)  # the default model
    embedders: list[ModelSupervisor[EmbeddingEngine]] = field(init=False)  # served beside it
    rerankers: list[ModelSupervisor[RerankEngine]] = field(init=False)
    storage_error: str | None = None  # the database probe's last failure, or None

    def __post_init__(self) -> None:
        self.model = self._supervisor(engine_config(self.settings), task="embed")
        extras = extra_model_configs(self.settings)
        self.embedders = [
            self._supervisor(config, task="embed") for config in extras if config.task != "rerank"
        ]
        self.rerankers = [
            self._supervisor(config, task="rerank") for config in extras if config.task == "rerank"
        ]
        self.metrics.ready.set_function(lambda: float(self.not_ready_reason() is None))
        self.metrics.watch(self.snapshot)

    @overload
    def _supervisor(
        self, config: EngineConfig, *, task: Literal["embed"]
    ) -> ModelSupervisor[EmbeddingEngine]: ...
    @overload
    def _supervisor(
        self, config: EngineConfig, *, task: Literal["rerank"]
    ) -> ModelSupervisor[RerankEngine]: ...
    def _supervisor(
        self, config: EngineConfig, *, task: Literal["embed", "rerank"]
    ) -> ModelSupervisor[EmbeddingEngine] | ModelSupervisor[RerankEngine]:
        """One served model's supervisor, with its own metrics series (the `model` label)."""
        name = served_name(config.model, config.model_name)
        observer = self.metrics.for_model(name, max_queued_tokens=config.max_queued_tokens)
        if task == "rerank":
            return ModelSupervisor(
                config,
                name=name,
                observer=observer,
                check=run_rerank_self_test,
                task="rerank",
                self_test=self.settings.self_test,
            )
        return ModelSupervisor(
            config,
            name=name,
            observer=observer,
            check=run_self_test,
            self_test=self.settings.self_test,
        )

    def snapshot(self) -> ServiceSnapshot:
        """The state Prometheus reads at each scrape (services/scrape.py)."""
        engine, audit = self.model.engine, self.audit
        storage = {"database": self.database is not None and self.storage_error is None}
        if self.knowledge is not None or self.knowledge_error != "starting":
            storage["vector_store"] = self.knowledge is not None
        if self.security is not None and self.security.limiter.shared:
            storage["rate_limit_store"] = not self.security.limiter.store_failing
        jobs = self.knowledge.runner.outcomes if self.knowledge is not None else JobOutcomes()
        fingerprint = engine.describe().fingerprint if engine is not None else None
        supervisors: list[ModelSupervisor[EmbeddingEngine] | ModelSupervisor[RerankEngine]]
        supervisors = [*self.embedding_models(), *self.rerankers]
        models = []
        for supervisor in supervisors:
            served = supervisor.engine
            state = served.health() if served is not None else BackendHealth()
            models.append(
                ModelState(
                    name=supervisor.name,
                    task=supervisor.task,
                    ready=served is not None and supervisor.not_ready_reason() is None,
                    restarts=state.restarts,
                    restart_failures=state.restart_failures,
                    pid=state.model_pid,
                    upstreams=state.upstreams,
                )
            )
        return ServiceSnapshot(
            version=__version__,
            mode="gateway" if self.settings.upstreams else "local",
            model=engine.name if engine is not None else (self.settings.model_name or ""),
            fingerprint=fingerprint or "",
            models=models,
            audit_failing=audit is not None and audit.failing is not None,
            audit_write_failures=audit.write_failures if audit is not None else 0,
            storage_up=storage,
            ingest_jobs=jobs.as_dict(),
        )

    @property
    def engine(self) -> EmbeddingEngine | None:
        """The loaded model, ready or not (`require_engine` for one that can serve now)."""
        return self.model.engine

    # --- what the surfaces ask ---------------------------------------------------------------
    def not_ready_reason(self) -> str | None:
        """None when requests can be served now: the model passed its self-test and its
        process (if it has one) is up, not being replaced after a crash, and a replacement
        has passed the self-test again."""
        if not self.model.ready:
            return self.model.reason
        if self.storage_error is not None:
            return self.storage_error
        if self.audit is not None and self.audit.refuses_requests():
            return f"the audit log cannot be written ({self.audit.failing})"
        return self.model.not_ready_reason()

    def require_engine(self) -> EmbeddingEngine:
        return self.model.require()

    def require_knowledge(self) -> KnowledgeBase:
        if self.knowledge is None:
            raise ServiceError(
                ErrorKind.NOT_READY,
                f"the knowledge base is not available ({self.knowledge_error}); check the "
                "vector store (milvus_uri) and the server log",
            )
        return self.knowledge

    # --- lifecycle ---------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def open(
        self,
        *,
        overrides: Overrides | None = None,
        model: ModelStart = "background",
        knowledge: bool = True,
        one_shot: bool = False,
        first_admin_key: bool = False,
        watch: bool = True,
    ) -> AsyncIterator[Services]:
        """Start the parts; leaving closes them in reverse.

        `model`: "background" loads it while the caller already serves (the server's /health
        answers during a long load), "wait" loads it before returning (the CLI), "none" never
        loads one (key administration). `knowledge=False` leaves the vector store closed, so
        a command that needs none never touches a data dir a server holds.
        `first_admin_key`: the server's first start writes an admin key (see `security.py`).
        `watch=False` starts no background task (database probe, model watchdog, last-used
        flusher): for callers whose event loop does not run between their calls (the CLI),
        where a probe would time out while the loop is paused.
        """
        overrides = overrides or Overrides()
        settings = self.settings
        async with contextlib.AsyncExitStack() as stack:
            self.database = await asyncio.to_thread(open_configured_database, settings)
            stack.callback(self.database.dispose)
            parts = await asyncio.to_thread(
                lambda: build_security(
                    settings,
                    database=_opened(self.database),
                    store=overrides.key_store,
                    audit_sink=overrides.audit_sink,
                )
            )
            self.security, self.audit, self.keys = parts.security, parts.audit, parts.keys
            if overrides.audit_sink is None:  # a sink handed in belongs to the caller
                stack.callback(parts.audit.close)
            stack.push_async_callback(self._close_security)
            if first_admin_key:  # the server's start: settle a crash's leftovers first
                await asyncio.to_thread(_reconcile_keys, parts.keys)
                self.bootstrap_key_file = await asyncio.to_thread(
                    ensure_first_admin_key, settings, parts.keys
                )
            if model != "none":
                factory = overrides.engine_factory or _default_factory(one_shot=one_shot)
                loader = asyncio.create_task(self.model.bring_up(factory))
                stack.push_async_callback(self._stop_model, loader)
                if watch:
                    watchdog = asyncio.create_task(self.model.watch())
                    stack.push_async_callback(_cancel, watchdog)
                loaders = [loader]
                for embedder in self.embedders:
                    loading = asyncio.create_task(embedder.bring_up(factory))
                    loaders.append(loading)
                    stack.push_async_callback(_stop_supervised, embedder, loading)
                    if watch:
                        stack.push_async_callback(_cancel, asyncio.create_task(embedder.watch()))
                for reranker in self.rerankers:
                    load = functools.partial(load_reranker, one_shot=one_shot)
                    loading = asyncio.create_task(reranker.bring_up(load))
                    loaders.append(loading)
                    stack.push_async_callback(_stop_supervised, reranker, loading)
                    if watch:
                        stack.push_async_callback(_cancel, asyncio.create_task(reranker.watch()))
                if model == "wait":  # every model, so a command can use any of them
                    await asyncio.shield(asyncio.gather(*loaders))
                    extras: list[
                        ModelSupervisor[EmbeddingEngine] | ModelSupervisor[RerankEngine]
                    ] = [*self.embedders, *self.rerankers]
                    reasons = [s.reason for s in extras if not s.ready]
                    if not self.model.ready:
                        reasons.insert(0, self.model.reason)
                    if reasons:
                        raise ServiceError(ErrorKind.NOT_READY, reasons[0])
            if knowledge:
                await self._open_knowledge(stack, overrides.vector_store)
            if watch:
                for task in (self._flush_last_used(), self._probe_storage()):
                    stack.push_async_callback(_cancel, asyncio.create_task(task))
            yield self
            self.model.ready = False

    async def _open_knowledge(
        self, stack: contextlib.AsyncExitStack, store: VectorStore | None
    ) -> None:
        """Embeddings keep working when the vector store cannot be opened."""
        try:
            opened = (
                store
                if store is not None
                else await asyncio.to_thread(open_vector_store, self.settings)
            )
        except Exception as exc:
            self.knowledge_error = f"{type(exc).__name__}: {exc}"
            log.error("knowledge base unavailable", extra={"reason": self.knowledge_error})
            return
        if store is None:  # a store handed in belongs to the caller, who closes it
            stack.callback(opened.close)
        self.knowledge = build_knowledge(
            self.settings,
            database=_opened(self.database),
            store=opened,
            engines=self.require_engine_for,
            ready_engine=self.ready_engine_for,
            audit=self.audit,
        )
        # the search dictionary is built once, off the event loop, before the first query
        # needs it (the first search would otherwise build it: ~1.5 s)
        warm = asyncio.create_task(asyncio.to_thread(shared_analyzer().segmenter))
        stack.push_async_callback(_cancel, warm)
        runner = self.knowledge.runner
        runner.start()
        stack.callback(runner.stop)
        try:
            await asyncio.to_thread(runner.recover)
        except Exception as exc:
            self.knowledge_error = f"{type(exc).__name__}: {exc}"
            log.error("knowledge base unavailable", extra={"reason": self.knowledge_error})
            self.knowledge = None

    async def _stop_model(self, loader: asyncio.Task[None]) -> None:
        self.model.ready = False
        await _cancel(loader)
        await self.model.stop()

    async def _probe_storage(self, every: float = 2.0) -> None:
        """/ready reflects the database: one cheap query every `every` seconds, cached, so a
        load balancer stops sending traffic while it is down (requests get 503 meanwhile)."""
        database = _opened(self.database)
        while True:
            try:
                await asyncio.wait_for(asyncio.to_thread(ping, database), timeout=every * 3)
            except Exception as exc:
                if self.storage_error is None:
                    log.error("the database is unreachable", extra={"reason": str(exc)})
                self.storage_error = "the database is unreachable"
            else:
                if self.storage_error is not None:
                    log.warning("the database is reachable again")
                self.storage_error = None
            await asyncio.sleep(every)

    async def _close_security(self) -> None:
        if self.keys is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.keys.flush_last_used)
        if self.security is not None:
            with contextlib.suppress(Exception):
                await self.security.limiter.aclose()

    async def _flush_last_used(self, every: float = 30.0) -> None:
        """Key last-used times are buffered off the hot path and written periodically."""
        while True:
            await asyncio.sleep(every)
            if self.keys is not None:
                try:
                    await asyncio.to_thread(self.keys.flush_last_used)
                except Exception:
                    log.warning("could not record key last-used times", exc_info=True)


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    overrides: Overrides | None = None,
    model: ModelStart = "wait",
    knowledge: bool = True,
    one_shot: bool = False,
    watch: bool = True,
) -> AsyncIterator[Services]:
    """A fresh `Services`, opened (see `Services.open`)."""
    services = Services(settings=settings)
    async with services.open(
        overrides=overrides, model=model, knowledge=knowledge, one_shot=one_shot, watch=watch
    ):
        yield services


@contextlib.contextmanager
def open_services_sync(
    settings: Settings,
    *,
    overrides: Overrides | None = None,
    model: ModelStart = "wait",
    knowledge: bool = True,
    one_shot: bool = False,
) -> Iterator[tuple[Services, asyncio.Runner]]:
    """For synchronous callers (CLI commands, benchmarks): the services on an event loop of
    their own, with the runner to `run()` their coroutines (a search) on that same loop."""
    runner = asyncio.Runner()
    manager = open_services(
        settings,
        overrides=overrides,
        model=model,
        knowledge=knowledge,
        one_shot=one_shot,
        watch=False,  # this loop runs only inside `runner.run()`
    )
    try:
        services = runner.run(manager.__aenter__())
        try:
            yield services, runner
        except BaseException as exc:
            if not runner.run(manager.__aexit__(type(exc), exc, exc.__traceback__)):
                raise
        else:
            runner.run(manager.__aexit__(None, None, None))
    finally:
        runner.close()


def _opened(database: Engine | None) -> Engine:
    assert database is not None, "the database opens first"
    return database


def _default_factory(*, one_shot: bool) -> EngineFactory:
    def factory(config: EngineConfig, observer: SchedulerObserver) -> EmbeddingEngine:
        return load_engine(config, observer, one_shot=one_shot)

    return factory


def _reconcile_keys(keys: KeyService) -> None:
    if keys.audit.sink is None:
        return
    done = keys.reconcile()
    if done:
        log.warning("reconciled key changes a crash left half done", extra={"done": done})


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _stop_supervised(
    supervisor: ModelSupervisor[EmbeddingEngine] | ModelSupervisor[RerankEngine],
    loader: asyncio.Task[None],
) -> None:
    supervisor.ready = False
    await _cancel(loader)
    await supervisor.stop()
