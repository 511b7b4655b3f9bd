"""`POST /v1/embeddings`: parse, hand to the engine, serialise. No model logic here.

This is the one route whose cost per request matters: a 50-token sentence is ~3 ms of model
time on a 2-core CPU, and FastAPI's request/dependency machinery cost ~0.3 ms of event-loop CPU
on top (measured, docs/benchmarks.md). So it is a plain ASGI endpoint: registered as a route
(so routing, 405s, the route table and the deny-by-default check see it), reached without the
router by `HotRoutes`, and guarded by the same `guard.admit` every other route uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from embedgate.api.body import read_model
from embedgate.api.context import RequestContext
from embedgate.api.errors import error_response
from embedgate.api.guard import DeferredUsage, admit, fair_queue_caller
from embedgate.api.schemas import EmbeddingsRequest, embeddings_response, is_token_ids
from embedgate.engine import EmbeddingEngine, Embeddings, EmbedRequest
from embedgate.engine.delivery import CancelFlag
from embedgate.errors import ErrorKind, ServiceError
from embedgate.identity import Permission
from embedgate.services import Services

CLIENT_CLOSED_REQUEST = 499
PATH = "/v1/embeddings"
_JSON = (b"content-type", b"application/json")


async def _wait_for_disconnect(receive: Receive) -> None:
    """The body has been read, so the next ASGI message can only be the disconnect."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _embed_unless_gone(
    engine: EmbeddingEngine,
    job: EmbedRequest,
    admit: Callable[[int], Awaitable[None]],
    receive: Receive,
) -> Embeddings | None:
    """The engine's result, or None when the client went away first (its work is dropped).

    The engine runs in this task; a watcher task cancels it on disconnect. (Running the
    engine in a task of its own and waiting for either costs two more task steps and a
    wait's futures on every request.)
    """
    gone = CancelFlag()  # the engine also sets it when this task is cancelled for any reason
    disconnected = False
    waiting = True  # a done callback may already be scheduled when the engine returns
    this = asyncio.current_task()
    assert this is not None

    def on_disconnect(watcher: asyncio.Future[None]) -> None:
        nonlocal disconnected
        if waiting and not watcher.cancelled() and watcher.exception() is None:
            disconnected = True
            gone.set()
            this.cancel()

    watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
    watcher.add_done_callback(on_disconnect)
    try:
        return await engine.embed(job, gone, admit)
    except asyncio.CancelledError:
        if disconnected and this.uncancel() == 0:
            return None
        raise
    finally:
        waiting = False
        watcher.cancel()


class EmbeddingsEndpoint:
    """The ASGI app behind `POST /v1/embeddings`; `permission` is what the gate checks."""

    permission = Permission.EMBED

    def __init__(self, state: Services) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            status, payload = await self._handle(request)
        except ServiceError as error:
            await error_response(error)(scope, receive, send)
            return
        headers = [_JSON, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _handle(self, request: Request) -> tuple[int, bytes]:
        state = self.state
        principal = await admit(request, state.security, self.permission, defer_limits=True)
        assert state.security is not None  # admit refuses while the server is starting
        usage = DeferredUsage(state.security, request, principal)
        try:
            body = await self._read(request, usage.context)
            engine = self.state.require_engine_for(body.model, principal)
            usage.context.audit.model = engine.name
            job = EmbedRequest(
                inputs=body.input,
                dimensions=body.dimensions,
                input_type=body.input_type,
                instruction=body.instruction,
                truncate=body.truncate,
                caller=fair_queue_caller(principal, request),
            )
            result = await _embed_unless_gone(engine, job, usage.charge, request.receive)
        except ServiceError:
            await usage.charge_if_not_yet()  # refused requests count against the limit too
            raise
        if result is None:
            return CLIENT_CLOSED_REQUEST, b""
        state.metrics.embedded(engine.name, len(result.vectors), result.prompt_tokens)
        payload = embeddings_response(
            result.vectors, engine.name, result.prompt_tokens, body.encoding_format
        )
        return 200, payload

    async def _read(self, request: Request, context: RequestContext) -> EmbeddingsRequest:
        settings = self.state.settings
        body = await read_model(request, EmbeddingsRequest, settings.max_json_depth)
        if not settings.accept_token_ids and is_token_ids(body.input):
            raise ServiceError(
                ErrorKind.INVALID_INPUT,
                "token-id input is off on this server: ids from another tokenizer embed as "
                "meaningless vectors. Send text. LangChain's OpenAIEmbeddings sends tiktoken "
                "ids unless created with check_embedding_ctx_length=False. (An operator can "
                "set accept_token_ids = true for callers that use the served model's own "
                "tokenizer.)",
                "input",
            )
        audit = context.audit
        audit.n_inputs, audit.dimensions, audit.user = len(body.input), body.dimensions, body.user
        return body
