"""Reading a JSON request body defensively: type, size, encoding and nesting are checked
before anything else sees it, each with its own clear 4xx."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from embedgate.errors import ErrorKind, ServiceError

Model = TypeVar("Model", bound=BaseModel)


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Iterative depth check (no recursion, so hostile nesting cannot blow the stack)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > limit:
                return True
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


async def read_json_body(request: Request, max_depth: int) -> Any:
    content_type = request.headers.get("content-type", "application/json")
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise ServiceError(
            ErrorKind.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type {media!r} is not supported; send a JSON body with "
            "Content-Type: application/json",
        )
    raw = await request.body()
    if not raw.strip():
        raise ServiceError(ErrorKind.INVALID_REQUEST, "the request body is empty; send JSON")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = "it is not valid UTF-8" if "utf-8" in str(exc).lower() else str(exc)
        raise ServiceError(
            ErrorKind.INVALID_REQUEST, f"the request body is not valid JSON: {reason}"
        ) from None
    if isinstance(data, dict) and _may_repeat_a_key(raw, data) and _repeats_a_key(raw):
        raise ServiceError(
            ErrorKind.INVALID_REQUEST,
            "the JSON body has the same key twice; send each field once (proxies and "
            "parsers disagree on which one counts)",
        )
    if json_depth_exceeds(data, max_depth):
        raise ServiceError(
            ErrorKind.INVALID_REQUEST, f"the JSON body is nested deeper than {max_depth} levels"
        )
    return data


def _may_repeat_a_key(raw: bytes, data: dict[str, Any]) -> bool:
    """Cheap screen on the hot path: a top-level key written twice appears twice as a quoted
    string (inside a string value its quotes would be escaped). Rarely true otherwise."""
    return any(raw.count(orjson.dumps(key)) > 1 for key in data)


def _repeats_a_key(raw: bytes) -> bool:
    """The exact check, at any depth, run only when the screen says maybe."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in items]
        if len(keys) != len(set(keys)):
            raise _DuplicateKey
        return dict(items)

    try:
        json.loads(raw, object_pairs_hook=pairs)
    except _DuplicateKey:
        return True
    return False


class _DuplicateKey(Exception):
    pass


async def read_model(request: Request, model: type[Model], max_depth: int) -> Model:
    """The JSON body validated into `model`; the first problem becomes one readable 400."""
    from embedgate.api.errors import validation_error

    data = await read_json_body(request, max_depth)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None
