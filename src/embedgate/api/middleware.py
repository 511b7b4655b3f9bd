"""Pure ASGI middleware (no BaseHTTPMiddleware, which would break disconnect detection):
a request id, header and body size limits, rate-limit headers, metrics, one access-log line
and one audit record per request (counts only, never input text)."""

from __future__ import annotations

import logging
import random
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedgate.api.errors import error_response
from embedgate.api.metrics import Metrics
from embedgate.api.state import ServiceState
from embedgate.errors import ErrorKind, ServiceError
from embedgate.security.gate import PUBLIC_PATHS
from embedgate.security.roles import Principal

log = logging.getLogger("embedgate.access")
UPLOAD_PATH = re.compile(r"^/v1/collections/[^/]+/documents$")


class _BodyTooLarge(Exception):
    pass


class RequestContextMiddleware:
    """Wraps every HTTP request: id, size limit, status/latency metrics, access log."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        max_body_bytes: int,
        max_header_bytes: int = 16384,
        state: ServiceState | None = None,
        max_upload_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.state = state
        self.max_upload_bytes = max_upload_bytes or max_body_bytes
        # request ids must be unique, not secret: a generator seeded from the OS once, since
        # reading the OS's random source on every request costs a syscall on the event loop
        self._ids = random.Random()  # noqa: S311

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"{self._ids.getrandbits(64):016x}"
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = {"code": 500, "sent": False}
        header_bytes = sum(len(k) + len(v) for k, v in scope.get("headers", []))
        limit = self._limit_for(scope)
        if header_bytes > self.max_header_bytes:
            error = ServiceError(
                ErrorKind.HEADERS_TOO_LARGE,
                f"request headers are larger than {self.max_header_bytes} bytes",
            )
            await error_response(error, {"Connection": "close"})(scope, receive, send)
            status["code"] = 431
        elif self._declared_too_large(scope, limit):
            await self._send_too_large(scope, receive, send, limit)
            status["code"] = 413
        else:
            try:
                await self.app(
                    scope,
                    self._limited(receive, limit),
                    self._tracking(scope, send, status, request_id),
                )
            except _BodyTooLarge:
                if status["sent"]:
                    raise
                await self._send_too_large(scope, receive, send, limit)
                status["code"] = 413
        elapsed = time.perf_counter() - started
        self._record(scope, int(status["code"]), elapsed, request_id)
        self._audit(scope, int(status["code"]), elapsed, request_id)

    def _limit_for(self, scope: Scope) -> int:
        """Uploads get their own, larger limit; every other body the general one."""
        path = scope.get("path", "")
        if scope.get("method") == "POST" and UPLOAD_PATH.match(path):
            return self.max_upload_bytes
        return self.max_body_bytes

    def _declared_too_large(self, scope: Scope, limit: int) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    return int(value) > limit
                except ValueError:
                    return True
        return False

    def _limited(self, receive: Receive, limit: int) -> Receive:
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

    def _tracking(self, scope: Scope, send: Send, status: dict[str, Any], request_id: str) -> Send:
        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["sent"] = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                present = {name.lower() for name, _ in headers}
                limits = scope.get("state", {}).get("ratelimit_headers", {})
                for name, value in limits.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        return tracking_send

    async def _send_too_large(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        error = ServiceError(
            ErrorKind.REQUEST_TOO_LARGE,
            f"the request body is larger than {limit} bytes; split the input",
        )
        await error_response(error, {"Connection": "close"})(scope, receive, send)

    def _audit(self, scope: Scope, status: int, seconds: float, request_id: str) -> None:
        if self.state is None or self.state.audit is None:
            return
        path = scope.get("path", "")
        if path in PUBLIC_PATHS:
            return
        route = scope.get("route")
        info = scope.get("state", {})
        principal = info.get("principal")
        fields: dict[str, Any] = {
            "request_id": request_id,
            "key_id": principal.subject if isinstance(principal, Principal) else None,
            "role": principal.role.value if isinstance(principal, Principal) else None,
            "client_ip": info.get("client_ip") or (scope.get("client") or ("", 0))[0],
            "method": scope.get("method"),
            "route": getattr(route, "path", None) or "unmatched",
            "status": status,
            "latency_ms": round(seconds * 1000, 2),
            "n_inputs": None,
            "n_tokens": None,
            "dimensions": None,
            "user": None,
        }
        fields.update(info.get("audit", {}))
        self.state.audit.request(fields)

    def _record(self, scope: Scope, status: int, seconds: float, request_id: str) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        self.metrics.requests.labels(template, str(status)).inc()
        self.metrics.latency.labels(template).observe(seconds)
        log.info(
            "request",
            extra={
                "request_id": request_id,
                "method": scope.get("method"),
                "route": template,
                "status": status,
                "latency_ms": round(seconds * 1000, 2),
                "client": (scope.get("client") or ("", 0))[0],
            },
        )
