"""The steps every HTTP request passes, outermost first, each a small pure-ASGI middleware
(no BaseHTTPMiddleware, which would break disconnect detection) that can be tested alone:

1. `RequestIdStep`: starts the request's `RequestContext` (id, clock) and stamps the
   response with `x-request-id` and the rate-limit headers the guard found;
2. `AccessLogStep`: one access-log line and the request metrics, failures included;
3. `AuditStep`: one audit record per guarded request (counts only, never input text);
4. `SizeLimitStep`: header and body size limits (431 / 413), before any route reads a byte.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedgate.api.context import RequestContext, request_context, start_context
from embedgate.api.errors import error_response, limit_headers
from embedgate.api.guard import is_public
from embedgate.errors import ErrorKind, ServiceError
from embedgate.security.audit import AuditLog
from embedgate.services.metrics import Metrics

log = logging.getLogger("embedgate.access")
UPLOAD_PATH = re.compile(r"^/v1/collections/[^/]+/documents$")
# the audit log opens with the services, after the app is built: the step asks per request
AuditSource = Callable[[], AuditLog | None]


def _route_template(scope: Scope) -> str:
    return getattr(scope.get("route"), "path", None) or "unmatched"


def _peer(scope: Scope) -> str:
    return str((scope.get("client") or ("", 0))[0])


class RequestIdStep:
    """Outermost: the context every later step and route writes into."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # request ids must be unique, not secret: a generator seeded from the OS once, since
        # reading the OS's random source on every request costs a syscall on the event loop
        self._ids = random.Random()  # noqa: S311

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = start_context(scope, f"{self._ids.getrandbits(64):016x}")

        async def stamped_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = self._stamp(message, context)
            await send(message)

        await self.app(scope, receive, stamped_send)

    @staticmethod
    def _stamp(message: Message, context: RequestContext) -> Message:
        context.status = message["status"]
        context.response_started = True
        headers = list(message.get("headers", []))
        headers.append((b"x-request-id", context.request_id.encode()))
        if context.limits:
            present = {name.lower() for name, _ in headers}
            for name, value in limit_headers(context.limits.values()).items():
                if name.encode() not in present:
                    headers.append((name.encode(), value.encode()))
        return {**message, "headers": headers}


class AccessLogStep:
    """Status and latency per route template into the metrics, and one access-log line."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._record(scope, request_context(scope))

    def _record(self, scope: Scope, context: RequestContext) -> None:
        template, seconds = _route_template(scope), context.elapsed()
        # the overview's traffic is the API's: not probes of /health and /ready, not the
        # console's own files
        api = not is_public(str(scope.get("path", "")))
        self.metrics.request_done(template, context.status, seconds, api=api)
        log.info(
            "request",
            extra={
                "request_id": context.request_id,
                "method": scope.get("method"),
                "route": template,
                "status": context.status,
                "latency_ms": round(seconds * 1000, 2),
                "client": _peer(scope),
            },
        )


class AuditStep:
    """One audit record per request to a guarded route, refused ones included."""

    def __init__(self, app: ASGIApp, audit: AuditSource) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_public(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        audit = self.audit()
        try:
            if audit is not None and audit.refuses_requests():  # fail_closed: nothing unrecorded
                error = ServiceError(
                    ErrorKind.AUDIT_UNAVAILABLE,
                    "the audit log cannot be written, so requests are refused until it can; "
                    "retry shortly",
                    retry_after_s=5.0,
                )
                await error_response(error)(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        finally:
            audit = self.audit()
            if audit is not None:
                audit.request(self._fields(scope, request_context(scope)))

    @staticmethod
    def _fields(scope: Scope, context: RequestContext) -> dict[str, object]:
        principal, counts = context.principal, context.audit
        return {
            "request_id": context.request_id,
            "key_id": context.key_id,
            "role": principal.role.value if principal is not None else None,
            "client_ip": context.client_ip or _peer(scope),
            "method": scope.get("method"),
            "route": _route_template(scope),
            "status": context.status,
            "latency_ms": round(context.elapsed() * 1000, 2),
            "n_inputs": counts.n_inputs,
            "n_tokens": counts.n_tokens,
            "dimensions": counts.dimensions,
            "user": counts.user,
            "model": counts.model,
        }


class _BodyTooLarge(Exception):
    pass


class SizeLimitStep:
    """431 for oversized headers; 413 for a body over its limit, declared or streamed."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_upload_bytes: int,
        max_header_bytes: int = 16384,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header_bytes = sum(len(k) + len(v) for k, v in scope.get("headers", []))
        limit = self._limit_for(scope)
        if header_bytes > self.max_header_bytes:
            error = ServiceError(
                ErrorKind.HEADERS_TOO_LARGE,
                f"request headers are larger than {self.max_header_bytes} bytes",
            )
            await error_response(error, {"Connection": "close"})(scope, receive, send)
        elif self._declared_too_large(scope, limit):
            await self._send_too_large(scope, receive, send, limit)
        else:
            try:
                await self.app(scope, self._limited(receive, limit), send)
            except _BodyTooLarge:
                if request_context(scope).response_started:
                    raise
                await self._send_too_large(scope, receive, send, limit)

    def _limit_for(self, scope: Scope) -> int:
        """Uploads get their own, larger limit; every other body the general one."""
        if scope.get("method") == "POST" and UPLOAD_PATH.match(scope.get("path", "")):
            return self.max_upload_bytes
        return self.max_body_bytes

    @staticmethod
    def _declared_too_large(scope: Scope, limit: int) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    return int(value) > limit
                except ValueError:
                    return True
        return False

    @staticmethod
    def _limited(receive: Receive, limit: int) -> Receive:
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge
            return message

        return limited_receive

    @staticmethod
    async def _send_too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        error = ServiceError(
            ErrorKind.REQUEST_TOO_LARGE,
            f"the request body is larger than {limit} bytes; split the input",
        )
        await error_response(error, {"Connection": "close"})(scope, receive, send)
