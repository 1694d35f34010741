"""The few raw-ASGI pieces the proxied routes need (they skip the framework on purpose): types,
reading a JSON body, sending an answer, request ids."""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from tallygate.errors import GatewayError, InvalidRequest, PayloadTooLarge, RequestTimeout

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]


EDGE_ANSWER = "tallygate.edge_answer"  # scope key: (status, message, code) the HTTP edge answered
REQUEST_ID = "tallygate.request_id"  # scope key: the id of the request's ledger record, once it has one


def edge_answer(scope: Scope) -> GatewayError | None:
    """The error the HTTP edge answered this request with (a body too slow: the app then sees
    the client disconnect), so that its record says what the client got."""
    answer = scope.get(EDGE_ANSWER)
    if answer is None:
        return None
    status, message, code = answer
    err = RequestTimeout(message, code=code)
    err.status = status
    return err


def client_address(scope: Scope) -> str | None:
    """The caller's address (the one a trusted proxy forwarded, when proxy headers are on)."""
    client = scope.get("client")
    return client[0] if client else None


def new_request_id() -> str:
    """Time-ordered, unique: 11 hex digits of epoch milliseconds and 14 random ones."""
    return f"req_{time.time_ns() // 1_000_000:011x}{os.urandom(7).hex()}"


def headers_of(scope: Scope, *names: bytes) -> dict[bytes, str]:
    """The named request headers (lower-case names), decoded as latin-1 like HTTP says."""
    found: dict[bytes, str] = {}
    for key, value in scope["headers"]:
        if key in names:
            found[key] = value.decode("latin-1")
    return found


async def read_json(receive: Receive, limit: int, content_type: str | None,
                    content_length: str | None = None, content_encoding: str | None = None) -> dict[str, Any]:
    """Read the whole body (at most `limit` bytes: a larger `Content-Length` is refused before
    reading), decode its `Content-Encoding` (`decoded`) and parse it as a JSON object."""
    if content_type is not None and "json" not in content_type.lower():
        raise InvalidRequest(f"Content-Type must be application/json, got {content_type!r}",
                             code="unsupported_media_type")
    if content_length is not None and (not content_length.isdigit() or int(content_length) > limit):
        err = PayloadTooLarge(limit, int(content_length) if content_length.isdigit() else None)
        if not err.close:
            await drain(receive)
        raise err
    message = await receive()
    if message["type"] == "http.disconnect":
        raise InvalidRequest("the client disconnected before sending the whole body")
    body = message.get("body", b"")
    if message.get("more_body", False):  # several chunks: join once, never re-copy
        chunks, size, more = [body], len(body), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InvalidRequest("the client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(limit)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
    if len(body) > limit:
        raise PayloadTooLarge(limit, len(body))  # all read already: nothing left to drain
    if content_encoding is not None:
        body = decoded(body, content_encoding, limit)
    if not body:
        raise InvalidRequest("request body is empty; expected a JSON object")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    if body.count(b"[") + body.count(b"{") > MAX_NESTING and _nested_deeper(data, MAX_NESTING):
        raise InvalidRequest(f"request body is nested more than {MAX_NESTING} levels deep",
                             code="too_deeply_nested")
    return data


_WBITS = {"gzip": 16 + 15, "x-gzip": 16 + 15, "deflate": 15}  # zlib's framing of each coding


def decoded(body: bytes, encoding: str, limit: int) -> bytes:
    """`body` decoded from its `Content-Encoding` (gzip or deflate, as api.anthropic.com and
    OpenAI take them; identity), at most `limit` bytes decoded (413 past it: no zip bomb
    inflates past the body limit); any other coding is a 400 naming the header."""
    coding = encoding.strip().lower()
    if coding in ("", "identity"):
        return body
    wbits = _WBITS.get(coding)
    if wbits is None:
        raise InvalidRequest(f"Content-Encoding {encoding!r} is not supported: send the body as it is, "
                             "or gzip- or deflate-encoded", param="Content-Encoding",
                             code="unsupported_content_encoding")
    invalid = InvalidRequest(f"request body is not valid {coding} data (Content-Encoding: {encoding})",
                             param="Content-Encoding", code="invalid_content_encoding")
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise invalid from None
    if len(out) > limit:
        raise PayloadTooLarge(limit)
    if not inflater.eof or inflater.unused_data:
        raise invalid
    return out


MAX_NESTING = 128  # JSON levels; deeper bodies could not even be re-encoded for the provider


def _nested_deeper(value: object, limit: int) -> bool:
    """Whether `value` has arrays or objects nested more than `limit` deep (iteratively: no
    recursion limit to hit). Only run when the body has that many brackets at all."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


async def drain(receive: Receive) -> None:
    """Read the rest of the request body and drop it (so a client still sending reads the
    answer instead of a reset connection); memory stays at one chunk."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def send_bytes(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, err: GatewayError, request_id: str) -> None:
    await send_bytes(send, err.status, err.body(),
                     [*JSON_HEADERS, (b"x-request-id", request_id.encode()), *err.headers()])
