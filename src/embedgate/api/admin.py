"""Admin routes: keys, audit log, usage, API schema. All need the admin permission."""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse

from embedgate.api.body import read_model
from embedgate.api.guard import requires
from embedgate.api.state import service
from embedgate.errors import ErrorKind, ServiceError
from embedgate.identity import Permission, Principal
from embedgate.security.audit import AuditLog
from embedgate.security.key_service import KeyService, KeyView, parse_duration, public_view
from embedgate.services import Services

router = APIRouter(prefix="/v1/admin")


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    role: str
    collections: list[str] | None = None
    expires_in: str | None = None
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    cidrs: list[str] | None = None


class RotateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace: str | None = None


def _keys(state: Services) -> KeyService:
    if state.keys is None:
        raise ServiceError(ErrorKind.NOT_READY, "the key store is not available")
    return state.keys


def _audit(state: Services) -> AuditLog:
    if state.audit is None:
        raise ServiceError(ErrorKind.NOT_READY, "the audit log is not available")
    return state.audit


@router.post("/keys")
async def create_key(
    request: Request,
    state: Services = Depends(service),
    admin: Principal = requires(Permission.ADMIN),
) -> JSONResponse:
    body: CreateKey = await read_model(request, CreateKey, state.settings.max_json_depth)
    expires = parse_duration(body.expires_in) if body.expires_in else None
    issued = await asyncio.to_thread(
        functools.partial(
            _keys(state).create,
            body.name,
            body.role,
            actor=admin.subject,
            collections=body.collections,
            expires_in=expires,
            rpm=body.rpm,
            tpm=body.tpm,
            cidrs=body.cidrs,
        )
    )
    return JSONResponse({**public_view(issued.record), "key": issued.key}, status_code=201)


@router.get("/keys", dependencies=[requires(Permission.ADMIN)])
async def list_keys(state: Services = Depends(service)) -> dict[str, Any]:
    return {"object": "list", "data": await asyncio.to_thread(_keys(state).list)}


@router.post("/keys/{key_id}/rotate")
async def rotate_key(
    key_id: str,
    request: Request,
    state: Services = Depends(service),
    admin: Principal = requires(Permission.ADMIN),
) -> JSONResponse:
    body: RotateKey = (
        await read_model(request, RotateKey, state.settings.max_json_depth)
        if await request.body()
        else RotateKey()
    )
    grace = parse_duration(body.grace) if body.grace else parse_duration("0s")
    issued = await asyncio.to_thread(_keys(state).rotate, key_id, admin.subject, grace)
    return JSONResponse({**public_view(issued.record), "key": issued.key}, status_code=201)


@router.delete("/keys/{key_id}")
async def revoke_key(
    key_id: str,
    state: Services = Depends(service),
    admin: Principal = requires(Permission.ADMIN),
) -> KeyView:
    return await asyncio.to_thread(_keys(state).revoke, key_id, admin.subject)


@router.get("/audit", dependencies=[requires(Permission.ADMIN)])
async def read_audit(
    state: Services = Depends(service),
    key_id: str | None = None,
    route: str | None = None,
    status: int | None = None,
    since: str | None = Query(default=None, description="ISO-8601, e.g. 2026-11-21T00:00:00Z"),
    until: str | None = None,
    limit: int = Query(default=100, ge=1, le=10000),
) -> dict[str, Any]:
    query = functools.partial(
        _audit(state).query,
        key_id=key_id,
        route=route,
        status=status,
        since=since,
        until=until,
        limit=limit,
    )
    records = await asyncio.to_thread(query)
    return {"object": "list", "data": records}


@router.get("/usage", dependencies=[requires(Permission.ADMIN)])
async def usage(state: Services = Depends(service), since: str | None = None) -> dict[str, Any]:
    """Requests and input tokens per key, from the audit log."""
    records = await asyncio.to_thread(
        functools.partial(_audit(state).query, since=since, limit=10**9)
    )
    totals: dict[str, dict[str, int]] = defaultdict(lambda: {"requests": 0, "tokens": 0})
    for record in records:
        if record.get("kind") != "request" or not record.get("key_id"):
            continue
        entry = totals[str(record["key_id"])]
        entry["requests"] += 1
        entry["tokens"] += int(record.get("n_tokens") or 0)
    return {"object": "list", "data": [{"key_id": k, **v} for k, v in sorted(totals.items())]}
