"""The one place where error kinds become HTTP statuses, in OpenAI's envelope.

`{"error": {"message", "type", "param", "code"}}` for every failure: our own errors, FastAPI's
validation errors, unknown routes, wrong methods and unexpected exceptions alike.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from embedgate.errors import ErrorKind, LimitStatus, ServiceError

log = logging.getLogger(__name__)

# kind -> (status, type, code)
_MAPPING: dict[ErrorKind, tuple[int, str, str | None]] = {
    ErrorKind.INVALID_REQUEST: (400, "invalid_request_error", "invalid_request"),
    ErrorKind.INVALID_INPUT: (400, "invalid_request_error", "invalid_input"),
    ErrorKind.INPUT_TOO_LONG: (400, "invalid_request_error", "context_length_exceeded"),
    ErrorKind.TOO_MANY_INPUTS: (400, "invalid_request_error", "too_many_inputs"),
    ErrorKind.INVALID_DIMENSIONS: (400, "invalid_request_error", "invalid_dimensions"),
    ErrorKind.TOKEN_OUT_OF_VOCABULARY: (400, "invalid_request_error", "invalid_token_id"),
    ErrorKind.REQUEST_TOO_LARGE: (413, "invalid_request_error", "request_too_large"),
    ErrorKind.UNSUPPORTED_MEDIA_TYPE: (415, "invalid_request_error", "unsupported_media_type"),
    ErrorKind.MODEL_NOT_FOUND: (404, "invalid_request_error", "model_not_found"),
    ErrorKind.NOT_FOUND: (404, "invalid_request_error", "not_found"),
    ErrorKind.METHOD_NOT_ALLOWED: (405, "invalid_request_error", "method_not_allowed"),
    ErrorKind.OVERLOADED: (429, "overloaded", "overloaded"),
    ErrorKind.UNAUTHENTICATED: (401, "invalid_request_error", "invalid_api_key"),
    ErrorKind.FORBIDDEN: (403, "permission_error", "insufficient_permissions"),
    ErrorKind.RATE_LIMITED_REQUESTS: (429, "requests", "rate_limit_exceeded"),
    ErrorKind.RATE_LIMITED_TOKENS: (429, "tokens", "rate_limit_exceeded"),
    ErrorKind.HEADERS_TOO_LARGE: (431, "invalid_request_error", "headers_too_large"),
    ErrorKind.LIMITS_UNAVAILABLE: (503, "service_unavailable", "rate_limiter_unavailable"),
    ErrorKind.AUDIT_UNAVAILABLE: (503, "service_unavailable", "audit_unavailable"),
    ErrorKind.PARSE_TIMEOUT: (422, "invalid_request_error", "parse_timeout"),
    ErrorKind.CONFLICT: (409, "invalid_request_error", "conflict"),
    ErrorKind.NOT_READY: (503, "service_unavailable", "not_ready"),
    ErrorKind.STORAGE_UNAVAILABLE: (503, "service_unavailable", "storage_unavailable"),
    ErrorKind.MODEL_UNAVAILABLE: (503, "service_unavailable", "model_unavailable"),
    ErrorKind.INPUT_CRASHED_MODEL: (400, "invalid_request_error", "input_crashed_model"),
    ErrorKind.BACKEND_FAILURE: (500, "server_error", "model_error"),
    ErrorKind.INTERNAL: (500, "server_error", "internal_error"),
}


def status_for(kind: ErrorKind) -> int:
    return _MAPPING[kind][0]


def envelope(message: str, type_: str, param: str | None, code: str | None) -> bytes:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return orjson.dumps(body)


def limit_headers(limits: Iterable[LimitStatus]) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the windows a request was charged (the failed-auth
    window is the address's, not the caller's: it is not shown)."""
    headers = {}
    for status in limits:
        if status.kind == "auth":
            continue
        headers[f"x-ratelimit-limit-{status.kind}"] = str(status.limit)
        headers[f"x-ratelimit-remaining-{status.kind}"] = str(max(status.remaining, 0))
        headers[f"x-ratelimit-reset-{status.kind}"] = f"{max(status.reset_seconds, 0.0):.3f}s"
    return headers


def error_headers(error: ServiceError) -> dict[str, str]:
    """What a client needs to act on the error: when to retry (whole seconds for
    Retry-After, milliseconds for OpenAI's clients), the refusing windows, the auth scheme."""
    headers = limit_headers(error.limits)
    retry = error.retry_after_s
    if retry is None and error.kind is ErrorKind.OVERLOADED:
        retry = 1.0
    if retry is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry)))
        headers["retry-after-ms"] = str(max(1, math.ceil(retry * 1000)))
    if error.kind is ErrorKind.UNAUTHENTICATED:
        headers["WWW-Authenticate"] = 'Bearer realm="embedgate"'
    return headers


def error_response(error: ServiceError, headers: dict[str, str] | None = None) -> Response:
    status, type_, code = _MAPPING[error.kind]
    all_headers = {**error_headers(error), **(headers or {})}
    return Response(
        envelope(error.message, type_, error.param, code),
        status_code=status,
        media_type="application/json",
        headers=all_headers,
    )


def validation_error(errors: Sequence[Any]) -> ServiceError:
    """The first pydantic / FastAPI validation error as one readable 400."""
    if not errors:
        return ServiceError(ErrorKind.INVALID_REQUEST, "the request is invalid")
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    param = ".".join(loc) or None
    where = f"'{param}'" if param else "the request"
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        return ServiceError(
            ErrorKind.INVALID_REQUEST, f"Unrecognized request argument supplied: {param}", param
        )
    if first.get("type") == "missing":
        return ServiceError(ErrorKind.INVALID_REQUEST, f"Missing required field {where}", param)
    return ServiceError(ErrorKind.INVALID_REQUEST, f"Invalid value for {where}: {message}", param)


def install_error_handlers(app: FastAPI) -> None:
    async def on_service_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        return error_response(exc)

    async def on_validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc.errors()))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            error = ServiceError(
                ErrorKind.NOT_FOUND, f"no route {request.method} {request.url.path}; see /docs"
            )
        elif exc.status_code == 405:
            error = ServiceError(
                ErrorKind.METHOD_NOT_ALLOWED,
                f"method {request.method} is not allowed on {request.url.path}",
            )
        else:
            return Response(
                envelope(str(exc.detail), "invalid_request_error", None, None),
                status_code=exc.status_code,
                media_type="application/json",
            )
        return error_response(error)

    async def on_unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return error_response(ServiceError(ErrorKind.INTERNAL, "internal server error"))

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
