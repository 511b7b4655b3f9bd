"""`RequestContext`: what one HTTP request has learned about itself, in one typed record.

The first middleware step creates it; the guard fills in who is calling; routes add counts for
the audit record; the last steps read it for the access log, the metrics and the audit log.
It lives under one key of the ASGI scope's `state`, reached only through `request_context`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Scope

from embedgate.errors import LimitStatus
from embedgate.identity import Principal

SCOPE_KEY = "embedgate.request"


@dataclass(slots=True)
class AuditCounts:
    """What the audit record may say about a request's content: counts, never text."""

    n_inputs: int | None = None
    n_tokens: int | None = None
    dimensions: int | None = None
    user: str | None = None
    model: str | None = None  # the served model that answered (embeddings, rerank, search)


@dataclass(slots=True)
class RequestContext:
    request_id: str
    started_at: float = field(default_factory=time.perf_counter)
    client_ip: str | None = None
    principal: Principal | None = None
    tokens_charged: int | None = None
    # the rate-limit windows charged, by kind: the response's x-ratelimit-* headers
    limits: dict[str, LimitStatus] = field(default_factory=dict)
    audit: AuditCounts = field(default_factory=AuditCounts)
    status: int = 500  # what was answered; 500 until a response starts
    response_started: bool = False

    @property
    def key_id(self) -> str | None:
        return self.principal.subject if self.principal is not None else None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started_at


def request_context(scope: Scope) -> RequestContext:
    """The request's context; created on first use, so a route reached without the
    middleware (a unit test's bare app) still has one."""
    state: dict[str, Any] = scope.setdefault("state", {})
    context = state.get(SCOPE_KEY)
    if context is None:
        context = state[SCOPE_KEY] = RequestContext(request_id="-")
    assert isinstance(context, RequestContext)
    return context


def start_context(scope: Scope, request_id: str) -> RequestContext:
    context = RequestContext(request_id=request_id)
    scope.setdefault("state", {})[SCOPE_KEY] = context
    return context
