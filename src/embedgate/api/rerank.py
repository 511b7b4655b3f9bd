"""`POST /v1/rerank`: score documents against a query with a served reranker.

The request and response are the shape Cohere, Jina and vLLM share, which is what Open
WebUI's external reranker and LangChain's rerankers post: `{model, query, documents (strings
or {text}), top_n, return_documents}` in, `{results: [{index, relevance_score, document?}],
model, usage}` out, results sorted by score, best first. `instruction` is Qwen3-Reranker's
task. Same permission and limits as embeddings: the token limit counts every pair's tokens.

`POST /rerank` takes text-embeddings-inference's shape for its clients: `{query, texts,
return_text}` in, `[{index, score, text?}]` out, best first.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from embedgate.api.body import read_model
from embedgate.api.context import request_context
from embedgate.api.guard import DeferredUsage, fair_queue_caller, requires
from embedgate.api.state import service
from embedgate.engine import RerankRequest, Scores
from embedgate.errors import ErrorKind, ServiceError
from embedgate.identity import Permission, Principal
from embedgate.services import Services

router = APIRouter()

MAX_QUERY_CHARS = 32_768
MAX_DOCUMENT_CHARS = 1_048_576


class RerankDocument(BaseModel):
    """A document as an object (Cohere's and Jina's `{text}` form); other fields ignored."""

    model_config = ConfigDict(extra="ignore")

    text: StrictStr = Field(max_length=MAX_DOCUMENT_CHARS)


class RerankBody(BaseModel):
    # clients send their own extras (Cohere's max_tokens_per_doc, rank_fields): ignored,
    # as the APIs they were written for ignore what a model does not use
    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = None
    query: StrictStr = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    documents: list[StrictStr | RerankDocument] = Field(min_length=1)
    top_n: StrictInt | None = Field(default=None, ge=1)
    return_documents: StrictBool = False
    instruction: StrictStr | None = Field(default=None, min_length=1, max_length=4096)

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class TeiRerankBody(BaseModel):
    """text-embeddings-inference's `/rerank` request."""

    model_config = ConfigDict(extra="ignore")

    query: StrictStr = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    texts: list[StrictStr] = Field(min_length=1)
    raw_scores: StrictBool = False
    return_text: StrictBool = False
    truncate: StrictBool = False  # pairs are always cut as the model card says


async def _score(
    request: Request,
    state: Services,
    principal: Principal,
    *,
    model: str | None,
    query: str,
    texts: list[str],
    instruction: str | None,
) -> tuple[str, Scores]:
    """The served reranker's scores, with the token limit charged as embeddings charge it."""
    assert state.security is not None  # the guard refuses while the server is starting
    usage = DeferredUsage(state.security, request, principal)
    usage.context.audit.n_inputs = len(texts)
    try:
        engine = state.require_reranker_for(model, principal)
        usage.context.audit.model = engine.name
        job = RerankRequest(
            query=query,
            documents=texts,
            instruction=instruction,
            caller=fair_queue_caller(principal, request),
        )
        return engine.name, await engine.rerank(job, admit=usage.charge)
    except ServiceError:
        await usage.charge_if_not_yet()  # refused requests count against the limit too
        raise


def _best_first(scores: Scores) -> list[int]:
    return sorted(range(len(scores.scores)), key=lambda i: -float(scores.scores[i]))


@router.post("/v1/rerank")
async def rerank(
    request: Request,
    state: Services = Depends(service),
    principal: Principal = requires(Permission.EMBED, defer_limits=True),
) -> dict[str, Any]:
    try:
        body: RerankBody = await read_model(request, RerankBody, state.settings.max_json_depth)
    except ServiceError:
        await _charge_refused(request, state, principal)
        raise
    texts = body.texts()
    name, result = await _score(
        request,
        state,
        principal,
        model=body.model,
        query=body.query,
        texts=texts,
        instruction=body.instruction,
    )
    order = _best_first(result)
    if body.top_n is not None:
        order = order[: body.top_n]
    results: list[dict[str, Any]] = []
    for index in order:
        entry: dict[str, Any] = {"index": index, "relevance_score": float(result.scores[index])}
        if body.return_documents:
            entry["document"] = {"text": texts[index]}
        results.append(entry)
    return {
        "id": f"rerank-{request_context(request.scope).request_id}",
        "object": "list",
        "model": name,
        "results": results,
        "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
    }


@router.post("/rerank")
async def rerank_tei(
    request: Request,
    state: Services = Depends(service),
    principal: Principal = requires(Permission.EMBED, defer_limits=True),
) -> list[dict[str, Any]]:
    try:
        body: TeiRerankBody = await read_model(
            request, TeiRerankBody, state.settings.max_json_depth
        )
        if body.raw_scores:
            raise ServiceError(
                ErrorKind.INVALID_REQUEST,
                "raw_scores is not supported: scores are the model's relevance probability "
                "(sigmoid of a cross-encoder's logit, Qwen3-Reranker's P(yes))",
                "raw_scores",
            )
    except ServiceError:
        await _charge_refused(request, state, principal)
        raise
    _, result = await _score(
        request,
        state,
        principal,
        model=None,
        query=body.query,
        texts=body.texts,
        instruction=None,
    )
    answer: list[dict[str, Any]] = []
    for index in _best_first(result):
        entry: dict[str, Any] = {"index": index, "score": float(result.scores[index])}
        if body.return_text:
            entry["text"] = body.texts[index]
        answer.append(entry)
    return answer


async def _charge_refused(request: Request, state: Services, principal: Principal) -> None:
    """A request refused before it was scored still counts against the request limit."""
    assert state.security is not None
    await DeferredUsage(state.security, request, principal).charge_if_not_yet()
