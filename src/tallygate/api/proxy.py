"""The proxied routes, on raw ASGI (the hot path): each reads as the pipeline's stages.

Chat completions, embeddings, Anthropic's Messages (and its token count) and OpenAI's Responses
all take `pipeline.exchange.Pipeline`: authenticate, read the body (tags, model), plan, reserve,
relay with the API's own relay. Leaving the exchange settles and records. `GET /v1/models` is
only authenticated, with keys as every process holds them since the last change anywhere (`fresh`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson

from tallygate.errors import GatewayError, ModelNotFound
from tallygate.pipeline.chat import ChatRelay
from tallygate.pipeline.exchange import AUTHORIZATION, X_API_KEY, Pipeline, credential
from tallygate.pipeline.messages import MessagesRelay, client_headers, send_anthropic_error
from tallygate.pipeline.responses import ResponsesRelay
from tallygate.pipeline.wire import (
    JSON_HEADERS,
    Receive,
    Scope,
    Send,
    client_address,
    headers_of,
    new_request_id,
    send_bytes,
    send_error,
)


class ProxyRoutes:
    """`/v1/chat/completions`, `/v1/embeddings`, `/v1/messages[/count_tokens]`, `/v1/responses`
    and `/v1/models`."""

    def __init__(self, pipeline: Pipeline, fresh: Callable[[], Awaitable[None]] | None = None) -> None:
        """`fresh()` catches up with keys changed by another process (`Freshness.latest`)."""
        self._pipeline = pipeline
        self._fresh = fresh
        self._chat = ChatRelay(pipeline.catalog.rate)
        self._messages = MessagesRelay(pipeline.catalog.rate)
        self._responses = ResponsesRelay(pipeline.catalog.rate)

    async def chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self._pipeline.exchange(scope, receive, send, "chat") as ex:
            call = await ex.authenticate()
            body = await ex.read_body()
            plan = ex.plan(body)
            await ex.reserve(body, plan)
            await self._chat.chat(call, plan, body, ex.send)

    async def embeddings(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self._pipeline.exchange(scope, receive, send, "embeddings") as ex:
            call = await ex.authenticate()
            body = await ex.read_body()
            plan = ex.plan(body)
            await ex.reserve(body, plan)
            await self._chat.embeddings(call, plan, body, ex.send)

    async def messages(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self._pipeline.exchange(scope, receive, send, "messages", send_anthropic_error) as ex:
            call = await ex.authenticate()
            body = await ex.read_body()
            plan = ex.plan(body)
            await ex.reserve(body, plan)
            await self._messages.messages(call, plan, body, ex.send, client_headers(scope))

    async def count_tokens(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Counting costs nothing: no reservation."""
        async with self._pipeline.exchange(scope, receive, send, "count_tokens", send_anthropic_error) as ex:
            call = await ex.authenticate()
            body = await ex.read_body()
            plan = ex.plan(body)
            await self._messages.count_tokens(call, plan, body, send, client_headers(scope))

    async def responses(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self._pipeline.exchange(scope, receive, send, "responses") as ex:
            call = await ex.authenticate()
            body = await ex.read_body()
            plan = ex.plan(body)
            await ex.reserve(body, plan)
            await self._responses.responses(call, plan, body, ex.send)

    async def models(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`GET /v1/models`, and `GET /v1/models/{id}` (ids may hold a "/")."""
        rid = new_request_id()
        try:
            auth = self._pipeline.auth
            principal = await auth.authenticate(credential(headers_of(scope, AUTHORIZATION, X_API_KEY)),
                                                client_address(scope))
            if self._fresh is not None and principal.key_id is not None:  # revoked elsewhere a moment ago: 401
                await self._fresh()
                auth.recheck(principal)
            listing = self._pipeline.catalog.listing()
            if scope["path"] != "/v1/models":
                name = scope["path"][len("/v1/models/"):]
                found = [m for m in listing["data"] if m["id"] == name]
                if not found:
                    raise ModelNotFound(f"the model {name!r} does not exist on this gateway; "
                                        "GET /v1/models lists the ones that do", param="model")
                listing = found[0]
        except GatewayError as err:
            return await send_error(send, err, rid)
        await send_bytes(send, 200, orjson.dumps(listing), [*JSON_HEADERS, (b"x-request-id", rid.encode())])
