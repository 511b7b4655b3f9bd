"""`POST /v1/embeddings`: parse, hand to the engine, serialise. No model logic here."""

from __future__ import annotations

import asyncio
import threading

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from embedgate.api.body import read_model
from embedgate.api.schemas import EmbeddingsRequest, embeddings_response
from embedgate.api.state import ServiceState, audit_fields, service
from embedgate.engine import Embeddings, EmbedRequest
from embedgate.errors import ErrorKind, ServiceError
from embedgate.security.gate import requires
from embedgate.security.roles import Permission, Principal

router = APIRouter()

CLIENT_CLOSED_REQUEST = 499


async def _wait_for_disconnect(request: Request, flag: threading.Event) -> None:
    """The body has been read, so the next ASGI message can only be the disconnect."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            flag.set()
            return


@router.post(
    "/v1/embeddings",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": EmbeddingsRequest.model_json_schema()}},
        }
    },
)
async def create_embeddings(
    request: Request,
    state: ServiceState = Depends(service),
    principal: Principal = requires(Permission.EMBED),
) -> Response:
    engine = state.require_engine()
    body = await read_model(request, EmbeddingsRequest, state.settings.max_json_depth)
    fields = audit_fields(request)
    fields.update(n_inputs=len(body.input), dimensions=body.dimensions, user=body.user)
    if not engine.serves(body.model):
        raise ServiceError(
            ErrorKind.MODEL_NOT_FOUND,
            f"The model {body.model!r} does not exist here; this server serves {engine.name!r} "
            "(see GET /v1/models)",
            "model",
        )
    job = EmbedRequest(
        inputs=body.input,
        dimensions=body.dimensions,
        input_type=body.input_type,
        instruction=body.instruction,
        truncate=body.truncate,
    )
    security = state.security

    async def admit(tokens: int) -> None:
        fields["n_tokens"] = tokens
        if security is not None:
            await security.charge_tokens(request, principal, tokens)

    gone = threading.Event()
    work = asyncio.ensure_future(engine.embed(job, gone, admit))
    watcher = asyncio.ensure_future(_wait_for_disconnect(request, gone))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not work.done():
        work.cancel()
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    result: Embeddings = work.result()
    state.metrics.tokens.inc(result.prompt_tokens)
    state.metrics.inputs.inc(len(result.vectors))
    payload = embeddings_response(
        result.vectors, engine.name, result.prompt_tokens, body.encoding_format
    )
    return Response(payload, media_type="application/json")
