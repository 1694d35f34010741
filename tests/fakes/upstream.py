"""A fake LLM provider (OpenAI + Anthropic wire formats) for the test suite. No pytest import.

    with FakeUpstream() as up:                      # serves on 127.0.0.1:<free port>, own thread+loop
        url = up.base_url                           # "http://127.0.0.1:PORT/v1" (OpenAI clients)
        root = up.root_url                          # "http://127.0.0.1:PORT"    (Anthropic SDK)
        ...                                         # point the gateway / an SDK at it
        up.requests[-1]["body"]["model"]            # what the gateway forwarded

Routes: POST /v1/chat/completions (JSON, or SSE when "stream": true), POST /v1/embeddings,
GET /v1/models, POST /v1/responses (OpenAI Responses JSON or typed SSE events, see
wire_responses), POST /v1/messages (Anthropic JSON or SSE), POST /v1/messages/count_tokens. OpenAI routes need
``Authorization: Bearer <anything>``; /v1/messages needs ``x-api-key`` (else 401
authentication_error; ``anthropic_bearer_ok=True`` also takes a Bearer token, as the real API
does) and ``anthropic-version`` (else 400 invalid_request_error, as the real API).
Bodies are checked like the real APIs (unknown parameters, e.g. ``request_tags``, are a 400).

The MODEL NAME in the request body picks a scenario (see wire.parse_scenario):
  fail-<status>        that HTTP status with the provider's error body (429 adds ``retry-after: 2``;
                       fail-529 is Anthropic's overloaded_error)
  flaky-<status>-<k>   the first k requests naming this model fail as fail-<status>, then succeed
  slow-<ms>            wait before answering (JSON or stream)
  slowstream-<ms>      wait between stream events
  cut-stream           a few stream events, then the connection is closed mid-body (no final
                       chunk, no [DONE], no terminating zero-length HTTP chunk); for a JSON
                       answer: Content-Length of the full body, half of it, then close
  cut-head             a stream's 200 and headers, then the connection closed before any event
  stream-error         a few stream events, then the provider's in-band error event, then EOF
  batch-error          as stream-error, but the first events (text among them) and the error event
                       go in one write: the gateway reads them in one batch
  reset                close the connection (TCP reset) without any response
  garbage              200, content-type application/json, body that is not JSON
  cached-<n>           success; OpenAI: prompt_tokens = base + n with cached_tokens = n;
                       Anthropic: input_tokens = base, cache_read_input_tokens = n
  cut-cached-<n>       as cached-<n> (Anthropic's message_start says so), then cut as cut-stream
  cut-at-end           every stream event but the last (OpenAI's [DONE], after its usage chunk;
                       Anthropic's message_stop), then cut as cut-stream
  cachewrite-<n>       success; Anthropic cache_creation_input_tokens = n
  cachewrite1h-<n>     success; Anthropic cache_creation_input_tokens = n, all with the 1-hour TTL
  reasoning-<n>        success; OpenAI completion_tokens += n, reasoning_tokens = n
  long-<n>             success; a reply of n words (n tokens), cut at the request's output cap
  bytetokens           success; prompt tokens = UTF-8 bytes of the message text (the worst tokenizer)
  bodytokens           success; prompt tokens = UTF-8 bytes of the whole body received (every field)
  docpages-<n>         success; each document, file or audio part adds n prompt tokens (billed by pages)
  nousage              success; OpenAI answers (chat JSON and streams, embeddings) carry no usage
  anything else        success, the response ``model`` echoes the request's model
A chat model named ``deepseek-*`` reports its usage as DeepSeek documents it (the cache hits in
``prompt_cache_hit_tokens`` / ``prompt_cache_miss_tokens``, no ``prompt_tokens_details``) and
caps its output by ``max_tokens`` only (DeepSeek has no ``max_completion_tokens``);
``deepseek-<scenario>`` plays that scenario so (``deepseek-long-3000``). A chat model named
``openrouter-*`` takes OpenRouter's own fields too (``models``, ``plugins`` ...), as OpenRouter does;
``xai-*`` xAI's ``search_parameters``.
With ``prompt_caching = True``, a successful answer also emulates prompt caching as the real APIs
do it (``wire.prompt_cache``): OpenAI's automatic caching of a long prompt's earlier messages, and
Anthropic's ``cache_control`` breakpoints, written once and read after (``prompt_cache`` holds the
prefixes seen).
Base counts: prompt tokens = wire.count_prompt_tokens(body) (message chars // 4, at least 1);
completion tokens = number of words of the reply (wire.reply_text: "Echo: <40 chars>"), times n.
A Responses request whose `previous_response_id` starts with `resp_unknown` is OpenAI's 404
previous_response_not_found (a response id this account does not have).

Run standalone: ``python tests/fakes/upstream.py --port 9100``.
"""
from __future__ import annotations

import asyncio
import socket
import struct
import threading
from dataclasses import replace

from aiohttp import web

try:
    from . import wire, wire_anthropic, wire_openai, wire_responses
    from .loopback import LoopbackServer, json_or_none
except ImportError:  # run as a script
    import wire  # type: ignore[no-redef]
    import wire_anthropic  # type: ignore[no-redef]
    import wire_openai  # type: ignore[no-redef]
    import wire_responses  # type: ignore[no-redef]
    from loopback import LoopbackServer, json_or_none  # type: ignore[no-redef]

DEFAULT_MODELS = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "claude-sonnet-4-5"]
_CUT_AFTER = 3  # stream events sent before cut-stream / stream-error strike
_BATCHED = {"openai": 3, "anthropic": 5, "responses": 6}  # batch-error: the events sent with the error (text too)


def _reset_connection(request: web.BaseRequest) -> None:
    """Drop the connection with a TCP RST (SO_LINGER 0), discarding anything unsent."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class FakeUpstream(LoopbackServer):
    """Fake OpenAI + Anthropic server on a loopback port (`loopback.py`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, models: list[str] | None = None,
                 anthropic_bearer_ok: bool = False):
        super().__init__(host, port)
        # The real Messages API also takes ``Authorization: Bearer`` (which anthropic SDK >= 2
        # sends); by default only ``x-api-key`` counts, to check what a gateway forwards.
        self.anthropic_bearer_ok = anthropic_bearer_ok
        self.models = list(models or DEFAULT_MODELS)
        self.prompt_caching = False  # emulate the APIs' prompt caching (see the module docstring)
        self.prompt_cache: set[str] = set()  # prompt prefixes written to the cache
        self._flaky: dict[str, int] = {}

    def clear(self) -> None:
        """Forget recorded requests and flaky-<status>-<k> counters."""
        super().clear()
        self._flaky.clear()

    # -- HTTP --------------------------------------------------------------------------------------
    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._record], client_max_size=64 * 2**20)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    @staticmethod
    def _openai_response(status: int, payload: dict | bytes, headers: dict | None = None,
                         indent: int = 4) -> web.Response:
        body = payload if isinstance(payload, bytes) else wire.dumps(payload, indent=indent)
        hdrs = {"x-request-id": wire.next_id("req_fake"), "openai-processing-ms": "1",
                "openai-version": "2020-10-01", **(headers or {})}
        return web.Response(status=status, body=body, content_type="application/json",
                            headers=hdrs)

    @staticmethod
    def _anthropic_response(status: int, payload: dict | bytes,
                            headers: dict | None = None) -> web.Response:
        body = payload if isinstance(payload, bytes) else wire.dumps(payload)
        rid = payload.get("request_id") if isinstance(payload, dict) else None
        hdrs = {"request-id": rid or wire.next_id("req_fake"), **(headers or {})}
        return web.Response(status=status, body=body, content_type="application/json",
                            headers=hdrs)

    def _openai_auth(self, request: web.Request) -> web.Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return None
        return self._openai_response(401, wire_openai.openai_error(
            "You didn't provide an API key. You need to provide your API key in an Authorization "
            "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an "
            "API key from https://platform.openai.com/account/api-keys."))

    def _anthropic_auth(self, request: web.Request) -> web.Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        bearer = self.anthropic_bearer_ok and scheme.lower() == "bearer" and token.strip()
        if not (request.headers.get("x-api-key", "").strip() or bearer):
            return self._anthropic_response(401, wire_anthropic.anthropic_error(
                "authentication_error", "x-api-key header is required"))
        if not request.headers.get("anthropic-version", "").strip():
            return self._anthropic_response(400, wire_anthropic.anthropic_error(
                "invalid_request_error", "anthropic-version: header is required"))
        return None

    async def _openai_body(self, request: web.Request, allowed: frozenset,
                           required: tuple[str, ...]) -> tuple[dict | None, web.Response | None]:
        denied = self._openai_auth(request)
        if denied is not None:
            return None, denied
        body = json_or_none(await request.read())  # read() is cached
        if not isinstance(body, dict):
            return None, self._openai_response(400, wire_openai.openai_error(
                "We could not parse the JSON body of your request. (HINT: This likely means you "
                "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
                "but what was sent was not valid JSON.)"))
        err = wire_openai.check_openai(body, allowed, required)
        return body, (self._openai_response(400, err) if err else None)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        peek = json_or_none(await request.read())  # (cached) an openrouter-* / xai-* model takes its service's fields
        model = str(peek.get("model")) if isinstance(peek, dict) else ""
        allowed = wire_openai.OPENAI_CHAT_PARAMS | next(
            (extra for prefix, extra in wire_openai.SERVICE_PARAMS.items() if model.startswith(prefix)), frozenset())
        body, err = await self._openai_body(request, allowed, ("messages",))
        if err is not None or body is None:
            return err  # type: ignore[return-value]
        return await self._serve(request, body, "openai")

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body, err = await self._openai_body(request, wire_openai.OPENAI_EMBEDDING_PARAMS, ("input",))
        if err is not None or body is None:
            return err  # type: ignore[return-value]
        return await self._serve(request, body, "embeddings")

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        denied = self._anthropic_auth(request)
        if denied is not None:
            return denied
        body = json_or_none(await request.read())  # read() is cached
        if not isinstance(body, dict):
            return self._anthropic_response(400, wire_anthropic.anthropic_error(
                "invalid_request_error", "There was an issue with the format of your request: "
                "the body is not valid JSON"))
        err = wire_anthropic.check_anthropic(body)
        if err is not None:
            return self._anthropic_response(400, err)
        return await self._serve(request, body, "anthropic")

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        denied = self._anthropic_auth(request)
        if denied is not None:
            return denied
        body = json_or_none(await request.read())
        if not isinstance(body, dict) or "messages" not in body or "model" not in body:
            return self._anthropic_response(400, wire_anthropic.anthropic_error(
                "invalid_request_error", "model, messages: Field required"))
        sc = wire.parse_scenario(body["model"])
        if sc.kind == "fail":
            return self._anthropic_response(sc.status, wire_anthropic.anthropic_failure(sc.status, body["model"]))
        return self._anthropic_response(200, {"input_tokens": wire.count_prompt_tokens(body)})

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        denied = self._openai_auth(request)
        if denied is not None:
            return denied
        body = json_or_none(await request.read())
        if not isinstance(body, dict):
            return self._openai_response(400, wire_openai.openai_error("We could not parse the JSON body of "
                                                                "your request."))
        err = wire_responses.check(body)
        if err is not None:
            return self._openai_response(400, err)
        previous = body.get("previous_response_id")
        if isinstance(previous, str) and previous.startswith("resp_unknown"):
            return self._openai_response(404, wire_openai.openai_error(
                f"Previous response with id '{previous}' not found.", "invalid_request_error",
                "previous_response_id", "previous_response_not_found"))
        return await self._serve(request, body, "responses")

    async def _models(self, request: web.Request) -> web.Response:
        if "authorization" not in request.headers and "x-api-key" in request.headers:
            return self._anthropic_auth(request) or self._anthropic_response(
                200, wire_anthropic.anthropic_models_json(self.models))
        return self._openai_auth(request) or self._openai_response(
            200, wire_openai.openai_models_json(self.models))

    async def _not_found(self, request: web.Request) -> web.Response:
        return self._openai_response(404, wire_openai.openai_error(
            f"Invalid URL ({request.method} {request.path})"))

    def _failure_body(self, status: int, model: str) -> dict:
        """The OpenAI-shaped error body of a fail-<status> scenario."""
        return wire_openai.openai_failure(status, model)

    async def _serve(self, request: web.Request, body: dict, api: str) -> web.StreamResponse:
        """Answer a valid request according to the scenario named by its model."""
        sc = wire.parse_scenario(body["model"])
        anthropic = api == "anthropic"
        if sc.kind == "reset":
            _reset_connection(request)
            return web.Response()  # never sent: the connection is gone
        if sc.kind == "slow":
            await asyncio.sleep(sc.delay)
        status = sc.status if sc.kind == "fail" else 0
        if sc.kind == "flaky":
            seen = self._flaky[body["model"]] = self._flaky.get(body["model"], 0) + 1
            status = sc.status if seen <= sc.times else 0
        if status:
            headers = {"retry-after": "2"} if status == 429 else {}
            if anthropic:
                return self._anthropic_response(
                    status, wire_anthropic.anthropic_failure(status, body["model"]), headers)
            return self._openai_response(status, self._failure_body(status, body["model"]), headers)
        if sc.kind == "garbage":
            return web.Response(status=200, body=b"<html><body>upstream exploded {not json",
                                content_type="application/json")
        if api == "openai" and str(body["model"]).startswith("deepseek"):
            sc = replace(sc, dialect="deepseek")
        if self.prompt_caching and api != "embeddings":
            sc = wire.prompt_cache(wire_responses.as_chat(body) if api == "responses" else body, api, sc,
                                   self.prompt_cache)
        if api == "embeddings" or not body.get("stream"):
            if api == "embeddings":
                resp = self._openai_response(200, wire_openai.openai_embeddings_json(body))
            elif api == "responses":
                resp = self._openai_response(200, wire_responses.response_json(body, sc))
            elif anthropic:
                resp = self._anthropic_response(200, wire_anthropic.anthropic_json(body, sc))
            else:
                resp = self._openai_response(200, wire_openai.openai_chat_json(body, sc))
            return await self._cut_body(request, resp) if sc.kind == "cut-stream" else resp
        events = {"anthropic": wire_anthropic.anthropic_events, "responses": wire_responses.events}.get(
            api, wire_openai.openai_chat_events)(body, sc)
        return await self._stream(request, events, sc, api)

    @staticmethod
    async def _cut_body(request: web.Request, full: web.Response) -> web.StreamResponse:
        """Promise the whole JSON body (Content-Length), send half of it, close the connection."""
        body = full.body if isinstance(full.body, bytes) else b""
        resp = web.StreamResponse(status=full.status, headers=full.headers)
        resp.content_length = len(body)
        await resp.prepare(request)
        await resp.write(body[: len(body) // 2])
        if request.transport is not None:
            request.transport.close()
        return resp

    async def _stream(self, request: web.Request, events: list[bytes], sc: wire.Scenario,
                      api: str) -> web.StreamResponse:
        anthropic = api == "anthropic"
        headers = {"Cache-Control": "no-cache"}
        headers.update({"request-id": wire.next_id("req_fake")} if anthropic
                       else {"x-request-id": wire.next_id("req_fake"), "openai-processing-ms": "1"})
        resp = web.StreamResponse(status=200, headers=headers)
        resp.content_type, resp.charset = "text/event-stream", "utf-8"
        await resp.prepare(request)
        error = (wire_anthropic.anthropic_stream_error() if anthropic
                 else wire_responses.stream_error() if api == "responses" else wire_openai.openai_stream_error())
        if sc.kind == "cut-head":
            if request.transport is not None:
                request.transport.close()  # the 200 went out; FIN before any event
            return resp
        if sc.kind == "batch-error":
            await resp.write(b"".join(events[:_BATCHED[api]]) + error)
            await resp.write_eof()
            return resp
        for i, event in enumerate(events):
            if (i == _CUT_AFTER and (sc.kind == "cut-stream" or sc.cut)
                    or i == len(events) - 1 and sc.kind == "cut-at-end"):
                if request.transport is not None:
                    request.transport.close()  # flush what was written, then FIN mid-body
                return resp
            if i == _CUT_AFTER and sc.kind == "stream-error":
                await resp.write(error)
                break
            if i and sc.kind == "slowstream":
                await asyncio.sleep(sc.delay)
            await resp.write(event)
        await resp.write_eof()
        return resp


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Fake OpenAI/Anthropic upstream (loopback).")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    with FakeUpstream(port=args.port) as up:
        print(f"fake upstream on {up.base_url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
