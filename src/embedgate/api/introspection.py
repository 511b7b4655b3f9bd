"""What a caller may ask about itself and about the model's view of its text.

`GET /v1/me`: the key's role, permissions and collection grants, so a client (the console)
shows only what the key may do; the API still checks every request on its own.
`POST /v1/tokenize`: the texts after the prompt rules and their token counts, without running
the model; the console's embeddings playground shows "what the model saw". It needs the embed
permission, like the embeddings it previews, and is limited like any other request.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from embedgate.api.body import read_model
from embedgate.api.guard import requires
from embedgate.api.state import service
from embedgate.engine import EmbedRequest
from embedgate.identity import ROLE_PERMISSIONS, Permission, Principal
from embedgate.services import Services

router = APIRouter(prefix="/v1")


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: list[StrictStr] = Field(min_length=1, max_length=256)
    model: StrictStr | None = None
    input_type: Literal["query", "document"] | None = None
    instruction: StrictStr | None = Field(default=None, min_length=1, max_length=4096)
    truncate: StrictBool = False


@router.get("/me")
async def who_am_i(principal: Principal = requires(Permission.SEARCH)) -> dict[str, Any]:
    return {
        "object": "principal",
        "subject": principal.subject,
        "via": principal.via,
        "role": principal.role.value,
        "permissions": sorted(p.value for p in ROLE_PERMISSIONS[principal.role]),
        "collections": list(principal.collections) if principal.collections is not None else None,
        "models": list(principal.models) if principal.models is not None else None,
        "rpm": principal.rpm,
        "tpm": principal.tpm,
    }


@router.post("/tokenize")
async def tokenize(
    request: Request,
    state: Services = Depends(service),
    principal: Principal = requires(Permission.EMBED),
) -> dict[str, Any]:
    body: TokenizeRequest = await read_model(
        request, TokenizeRequest, state.settings.max_json_depth
    )
    engine = state.require_engine_for(body.model, principal)
    job = EmbedRequest(
        inputs=body.input,
        input_type=body.input_type,
        instruction=body.instruction,
        truncate=body.truncate,
    )
    previews = await asyncio.to_thread(engine.preview, job)
    return {
        "object": "list",
        "model": engine.name,
        "data": [
            {"index": i, "text": p.text, "tokens": p.tokens, "truncated": p.truncated}
            for i, p in enumerate(previews)
        ],
        "usage": {"prompt_tokens": sum(p.tokens for p in previews)},
    }
