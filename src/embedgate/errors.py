"""One error type for the whole service.

Every part (engine, security, knowledge base, storage) raises `ServiceError` with an
`ErrorKind` and, where it helps the caller, when to retry and the rate-limit windows it hit;
the HTTP layer turns those into statuses and headers (`Retry-After`, `retry-after-ms`,
`x-ratelimit-*`, `WWW-Authenticate`) in exactly one place (`embedgate.api.errors`). The core
therefore never knows about HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

LimitKind = Literal["requests", "tokens", "auth"]


class ErrorKind(Enum):
    """What went wrong, independent of the transport."""

    INVALID_REQUEST = "invalid_request"
    INVALID_INPUT = "invalid_input"
    INPUT_TOO_LONG = "input_too_long"
    TOO_MANY_INPUTS = "too_many_inputs"
    REQUEST_TOO_LARGE = "request_too_large"
    INVALID_DIMENSIONS = "invalid_dimensions"
    TOKEN_OUT_OF_VOCABULARY = "token_out_of_vocabulary"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    MODEL_NOT_FOUND = "model_not_found"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    OVERLOADED = "overloaded"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    RATE_LIMITED_REQUESTS = "rate_limited_requests"
    RATE_LIMITED_TOKENS = "rate_limited_tokens"
    HEADERS_TOO_LARGE = "headers_too_large"
    LIMITS_UNAVAILABLE = "limits_unavailable"
    AUDIT_UNAVAILABLE = "audit_unavailable"
    PARSE_TIMEOUT = "parse_timeout"
    CONFLICT = "conflict"
    NOT_READY = "not_ready"
    STORAGE_UNAVAILABLE = "storage_unavailable"  # the database cannot be reached
    MODEL_UNAVAILABLE = "model_unavailable"  # the model process is being restarted
    INPUT_CRASHED_MODEL = "input_crashed_model"  # this input alone made the model exit
    BACKEND_FAILURE = "backend_failure"
    INTERNAL = "internal"


@dataclass(frozen=True)
class LimitStatus:
    """One rate-limit window after a charge: what the caller has left and when it resets."""

    kind: LimitKind
    limit: int
    remaining: int
    reset_seconds: float


class ServiceError(Exception):
    """An error with a message a person can act on, the request field it is about, and
    (for refusals that pass) when to retry and the limit windows that refused it."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        param: str | None = None,
        *,
        retry_after_s: float | None = None,
        limits: tuple[LimitStatus, ...] = (),
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param
        self.retry_after_s = retry_after_s
        self.limits = limits

    def __repr__(self) -> str:
        return f"ServiceError({self.kind.name}, {self.message!r}, param={self.param!r})"
