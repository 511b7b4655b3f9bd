"""The OpenAPI document served to admins at /openapi.json.

FastAPI documents the routes it dispatches itself; the plain ASGI embeddings endpoint is
described here by hand from the same pydantic schema that validates its body.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI

from embedgate.api.embeddings import PATH
from embedgate.api.schemas import EmbeddingsRequest

_ERROR = {"description": "An error in OpenAI's envelope: {error: {message, type, param, code}}"}


def embeddings_operation() -> dict[str, Any]:
    return {
        "summary": "Create embeddings (OpenAI-compatible)",
        "operationId": "create_embeddings",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": EmbeddingsRequest.model_json_schema()}},
        },
        "responses": {
            "200": {"description": "`{object: list, data: [{embedding, index}], model, usage}`"},
            **{code: _ERROR for code in ("400", "401", "403", "404", "413", "415", "429", "503")},
        },
    }


def openapi_document(app: FastAPI) -> dict[str, Any]:
    document = copy.deepcopy(app.openapi())
    document.setdefault("paths", {})[PATH] = {"post": embeddings_operation()}
    return document
