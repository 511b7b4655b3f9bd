"""Admin routes: keys, audit log, usage, API schema. All need the admin permission."""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict
from typing import Any, Literal

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
    models: list[str] | None = None  # served model names it may use; None: every model
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
            models=body.models,
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


@router.get("/audit/verify", dependencies=[requires(Permission.ADMIN)])
async def verify_audit(state: Services = Depends(service)) -> dict[str, Any]:
    """The whole chain checked, as `embedgate audit verify` does."""
    result = await asyncio.to_thread(_audit(state).verify)
    return {
        "object": "audit.verification",
        "intact": result.ok,
        "records": result.records,
        "bad_line": result.bad_line,
        "reason": result.reason,
    }


@router.get("/usage", dependencies=[requires(Permission.ADMIN)])
async def usage(
    state: Services = Depends(service),
    since: str | None = None,
    bucket: Literal["hour", "day"] | None = None,
) -> dict[str, Any]:
    """Requests, input tokens and 4xx / 5xx answers per key, from the audit log, with the
    requests and tokens per model (`models`); with `bucket`, also per hour or day
    (`series`, oldest first)."""
    records = await asyncio.to_thread(
        functools.partial(_audit(state).query, since=since, limit=10**9)
    )
    cut = {"hour": 13, "day": 10}.get(bucket or "", 0)  # "2026-12-03T09" / "2026-12-03"
    totals: dict[str, dict[str, int]] = defaultdict(_usage_counts)
    series: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(_usage_counts))
    per_model: dict[str, dict[str, dict[str, int]]] = defaultdict(
        lambda: defaultdict(lambda: {"requests": 0, "tokens": 0})
    )
    for record in records:
        if record.get("kind") != "request" or not record.get("key_id"):
            continue
        key_id = str(record["key_id"])
        entries = [totals[key_id]]
        if cut:
            entries.append(series[key_id][str(record.get("ts", ""))[:cut]])
        status = int(record.get("status") or 0)
        for entry in entries:
            entry["requests"] += 1
            entry["tokens"] += int(record.get("n_tokens") or 0)
            entry["errors_4xx"] += 400 <= status < 500
            entry["errors_5xx"] += status >= 500
        if record.get("model"):
            by_model = per_model[key_id][str(record["model"])]
            by_model["requests"] += 1
            by_model["tokens"] += int(record.get("n_tokens") or 0)
    data = []
    for key_id, counts in sorted(totals.items()):
        row: dict[str, Any] = {"key_id": key_id, **counts, "models": dict(per_model[key_id])}
        if cut:
            row["series"] = [{"t": t, **series[key_id][t]} for t in sorted(series[key_id])]
        data.append(row)
    return {"object": "list", "bucket": bucket, "data": data}


def _usage_counts() -> dict[str, int]:
    return {"requests": 0, "tokens": 0, "errors_4xx": 0, "errors_5xx": 0}


@router.get("/stats", dependencies=[requires(Permission.ADMIN)])
async def stats(state: Services = Depends(service)) -> dict[str, Any]:
    """The last hour, minute by minute (requests, tokens, 4xx / 5xx, p50 / p95 latency,
    deepest queue): the console's overview charts, without a Prometheus to ask."""
    recent = state.metrics.recent
    return {
        "object": "stats",
        "uptime_s": round(recent.uptime_s(), 1),
        "ready": state.model.ready,
        "minutes": recent.series(),
    }
