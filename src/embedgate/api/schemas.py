"""The OpenAI embeddings contract (with embedgate's documented extensions) as pydantic models.

`input` is checked by hand so that each malformed shape gets a message a person can act on.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

from embedgate.engine.pooling import FloatArray

INPUT_SHAPES = "a string, a list of strings, a list of token ids, or a list of token-id lists"


def _check_input(value: Any) -> list[str] | list[list[int]]:
    if value is None:
        raise ValueError(f"input is required: {INPUT_SHAPES}")
    if isinstance(value, str):
        if not value:
            raise ValueError("input must not be an empty string")
        return [value]
    if not isinstance(value, list):
        raise ValueError(f"input must be {INPUT_SHAPES}; got {type(value).__name__}")
    if not value:
        raise ValueError("input must not be an empty list")
    first = value[0]
    if isinstance(first, str):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ValueError(f"input[{i}] is {type(item).__name__}; all items must be strings")
            if not item:
                raise ValueError(f"input[{i}] is an empty string; every input needs text")
        return value
    if isinstance(first, int) and not isinstance(first, bool):
        _check_ids(value, "input")
        return [value]
    if isinstance(first, list):
        for i, item in enumerate(value):
            if not isinstance(item, list):
                raise ValueError(f"input[{i}] is {type(item).__name__}; expected a token-id list")
            if not item:
                raise ValueError(f"input[{i}] is an empty token-id list")
            _check_ids(item, f"input[{i}]")
        return value
    raise ValueError(f"input must be {INPUT_SHAPES}; input[0] is {type(first).__name__}")


def _check_ids(ids: list[Any], where: str) -> None:
    for j, token in enumerate(ids):
        if isinstance(token, bool) or not isinstance(token, int):
            raise ValueError(
                f"{where}[{j}] is {token!r}, not a token id; token ids are integers from the "
                "model's vocabulary (text goes in as strings)"
            )


class EmbeddingsRequest(BaseModel):
    """`POST /v1/embeddings`."""

    model_config = ConfigDict(extra="forbid")

    input: Any = Field(description=INPUT_SHAPES)
    model: StrictStr | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = None
    user: StrictStr | None = Field(default=None, max_length=256)
    input_type: Literal["query", "document"] | None = None
    instruction: StrictStr | None = Field(default=None, min_length=1, max_length=4096)
    truncate: StrictBool = False

    @field_validator("model", mode="before")
    @classmethod
    def _model_not_null(cls, value: Any) -> Any:
        if value is None:  # only an explicit null reaches here; a missing field is allowed
            raise ValueError(
                "model must be the served model's name (see GET /v1/models), not null; "
                "leave the field out to use the served model"
            )
        return value

    @field_validator("input", mode="before")
    @classmethod
    def _valid_input(cls, value: Any) -> list[str] | list[list[int]]:
        return _check_input(value)


def embeddings_response(
    vectors: FloatArray, model: str, prompt_tokens: int, encoding: str
) -> bytes:
    """Serialise straight from the float32 array (no Python float lists)."""
    data: list[dict[str, Any]] = []
    for i in range(vectors.shape[0]):
        row = vectors[i]
        embedding: Any = (
            base64.b64encode(row.astype("<f4", copy=False).tobytes()).decode("ascii")
            if encoding == "base64"
            else row
        )
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    body = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def decode_base64_embedding(text: str) -> FloatArray:
    """Inverse of the base64 encoding (little-endian float32), for clients and tests."""
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)


def is_token_ids(inputs: list[str] | list[list[int]]) -> bool:
    return bool(inputs) and isinstance(inputs[0], list)
