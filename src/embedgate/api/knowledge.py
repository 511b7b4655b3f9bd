"""Knowledge-base routes: collections, uploads (202 + job), documents, jobs, search."""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Literal

from fastapi import APIRouter, Depends, File, Request, UploadFile
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.responses import JSONResponse

from embedgate.api.body import read_model
from embedgate.api.context import request_context
from embedgate.api.guard import requires
from embedgate.api.state import service
from embedgate.errors import ErrorKind, ServiceError
from embedgate.identity import Permission, Principal
from embedgate.knowledge.analysis import shared_analyzer
from embedgate.services import Services
from embedgate.storage.records import JobRow

router = APIRouter(prefix="/v1")


class Fusion(BaseModel):
    """Weights of hybrid search's two rankings (weighted reciprocal rank fusion)."""

    model_config = ConfigDict(extra="forbid")

    dense: float = Field(default=1.0, ge=0, le=10)
    lexical: float = Field(default=1.0, ge=0, le=10)


class CreateCollection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    model: str | None = None  # a served embedding model; None: the default model
    description: str = ""
    chunk_tokens: StrictInt | None = None
    chunk_overlap: StrictInt | None = None
    dimensions: StrictInt | None = None
    fusion: Fusion | None = None


class UpdateCollection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fusion: Fusion | None


class Reindex(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None


class RerankOptions(BaseModel):
    """Rescore the best `candidates` hits with a served reranker (the first when unnamed)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    candidates: StrictInt | None = None


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=8192)
    top_k: StrictInt = 5
    mode: Literal["hybrid", "dense", "lexical"] = "hybrid"
    instruction: str | None = Field(default=None, min_length=1, max_length=4096)
    model: str | None = None
    dimensions: StrictInt | None = None
    weights: Fusion | None = None
    rerank: RerankOptions | None = None


@router.post("/collections")
async def create_collection(
    request: Request,
    state: Services = Depends(service),
    principal: Principal = requires(Permission.WRITE),
) -> JSONResponse:
    body: CreateCollection = await read_model(
        request, CreateCollection, state.settings.max_json_depth
    )
    kb = state.require_knowledge()
    created = await asyncio.to_thread(
        functools.partial(
            kb.create_collection,
            principal,
            body.name,
            model=body.model,
            description=body.description,
            chunk_tokens=body.chunk_tokens,
            chunk_overlap=body.chunk_overlap,
            dimensions=body.dimensions,
        )
    )
    if body.fusion is not None:
        created = await asyncio.to_thread(
            kb.set_fusion, principal, body.name, body.fusion.model_dump()
        )
    return JSONResponse(created, status_code=201)


@router.patch("/collections/{name}")
async def update_collection(
    name: str,
    request: Request,
    state: Services = Depends(service),
    principal: Principal = requires(Permission.WRITE),
) -> dict[str, Any]:
    body: UpdateCollection = await read_model(
        request, UpdateCollection, state.settings.max_json_depth
    )
    fusion = body.fusion.model_dump() if body.fusion is not None else None
    return await asyncio.to_thread(state.require_knowledge().set_fusion, principal, name, fusion)


@router.post("/collections/{name}/reindex")
async def reindex_collection(
    name: str,
    request: Request,
    state: Services = Depends(service),
    principal: Principal = requires(Permission.ADMIN),
) -> JSONResponse:
    body: Reindex = await read_model(request, Reindex, state.settings.max_json_depth)
    kb = state.require_knowledge()
    job = await asyncio.to_thread(kb.start_reindex, principal, name, body.model)
    return JSONResponse(job, status_code=202)


@router.get("/collections")
async def list_collections(
    state: Services = Depends(service), principal: Principal = requires(Permission.SEARCH)
) -> dict[str, Any]:
    kb = state.require_knowledge()
    return {"object": "list", "data": await asyncio.to_thread(kb.list_collections, principal)}


@router.get("/collections/{name}")
async def get_collection(
    name: str,
    state: Services = Depends(service),
    principal: Principal = requires(Permission.SEARCH),
) -> dict[str, Any]:
    return await asyncio.to_thread(state.require_knowledge().describe, principal, name)


@router.delete("/collections/{name}")
async def delete_collection(
    name: str,
    state: Services = Depends(service),
    principal: Principal = requires(Permission.DELETE),
) -> dict[str, Any]:
    kb = state.require_knowledge()  # records the deletion first (refused if it cannot)
    await asyncio.to_thread(kb.delete_collection, principal, name)
    return {"deleted": name}


@router.post("/collections/{name}/documents")
async def upload_document(
    name: str,
    request: Request,
    file: UploadFile = File(...),
    state: Services = Depends(service),
    principal: Principal = requires(Permission.WRITE),
) -> JSONResponse:
    kb = state.require_knowledge()
    limit = state.settings.kb_max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise ServiceError(
            ErrorKind.REQUEST_TOO_LARGE, f"the file is over the {limit}-byte limit", "file"
        )
    accepted = await asyncio.to_thread(kb.upload, principal, name, file.filename, data)
    return JSONResponse(accepted, status_code=202)


@router.get("/collections/{name}/documents")
async def list_documents(
    name: str,
    state: Services = Depends(service),
    principal: Principal = requires(Permission.SEARCH),
) -> dict[str, Any]:
    docs = await asyncio.to_thread(state.require_knowledge().documents, principal, name)
    return {"object": "list", "data": docs}


@router.delete("/collections/{name}/documents/{doc_id}")
async def delete_document(
    name: str,
    doc_id: str,
    state: Services = Depends(service),
    principal: Principal = requires(Permission.DELETE),
) -> dict[str, Any]:
    kb = state.require_knowledge()  # records the deletion first (refused if it cannot)
    await asyncio.to_thread(kb.delete_document, principal, name, doc_id)
    return {"deleted": doc_id}


@router.get("/collections/{name}/duplicates")
async def duplicates(
    name: str,
    state: Services = Depends(service),
    principal: Principal = requires(Permission.SEARCH),
) -> dict[str, Any]:
    found = await asyncio.to_thread(state.require_knowledge().duplicates, principal, name)
    return {"object": "list", "data": found}


@router.get("/jobs/{job_id}")
async def get_job(
    job_id: str,
    state: Services = Depends(service),
    principal: Principal = requires(Permission.SEARCH),
) -> JobRow:
    return await asyncio.to_thread(state.require_knowledge().job, principal, job_id)


@router.delete("/jobs/{job_id}")
async def cancel_job(
    job_id: str,
    state: Services = Depends(service),
    principal: Principal = requires(Permission.DELETE),
) -> JobRow:
    kb = state.require_knowledge()
    return await asyncio.to_thread(kb.cancel_job, principal, job_id)


@router.post("/collections/{name}/search")
async def search(
    name: str,
    request: Request,
    state: Services = Depends(service),
    principal: Principal = requires(Permission.SEARCH),
) -> dict[str, Any]:
    body: SearchRequest = await read_model(request, SearchRequest, state.settings.max_json_depth)
    kb = state.require_knowledge()
    found = await kb.search(
        principal,
        name,
        query=body.query,
        top_k=body.top_k,
        mode=body.mode,
        instruction=body.instruction,
        model=body.model,
        dimensions=body.dimensions,
        weights=body.weights.model_dump() if body.weights is not None else None,
        reranker=state.require_reranker_for(body.rerank.model, principal) if body.rerank else None,
        candidates=body.rerank.candidates if body.rerank else None,
    )
    request_context(request.scope).audit.model = found.model
    # the terms the lexical side searched for (jieba for Chinese), so a client can highlight
    # exactly what matched
    analyzer = shared_analyzer()
    if analyzer.loaded:
        cut = analyzer.terms(body.query)
    else:  # never build the dictionary on the event loop: every request would wait
        cut = await asyncio.to_thread(analyzer.terms, body.query)
    terms = list(dict.fromkeys(cut))
    return {
        "object": "list",
        "data": found.hits,
        "mode": body.mode,
        "query_terms": terms,
        "model": found.model,  # the model that embedded the query (the collection's)
        "generation": found.generation,  # the collection's index generation that answered
    }
