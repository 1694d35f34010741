"""A request-body limit for any ASGI app, enforced while reading and before anything parses it.

`BodyLimit(app, limit)` answers 413 at once when `Content-Length` says the body is too large
(without reading a byte of it), and otherwise counts the body as the app reads it: past
`limit` it answers 413 itself, tells the app the client went away, and drops whatever the app
still tries to send. Either way the connection is closed (`connection: close`) so the rest of
the body is not read. It wraps the management app, where the framework reads and parses the
body before any dependency (authentication included) runs.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl

from tallygate.errors import InvalidRequest, PayloadTooLarge
from tallygate.pipeline.wire import JSON_HEADERS, Message, Receive, Scope, Send, drain, send_bytes


def declared_length(scope: Scope) -> int | None:
    """The request's `Content-Length` as an int (None when absent or unreadable)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() and len(value) < 19 else None
    return None


async def send_too_large(send: Send, limit: int, declared: int | None = None) -> None:
    err = PayloadTooLarge(limit, declared)
    body = err.body()
    await send({"type": "http.response.start", "status": 413,
                "headers": [*JSON_HEADERS, (b"content-length", b"%d" % len(body)), *err.headers()]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: at most `limit` bytes of request body, or 413."""

    def __init__(self, app: object, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # type: ignore[operator]
            return
        limit = self.limit
        length = declared_length(scope)
        if length is not None and length > limit:
            if length <= PayloadTooLarge.DRAIN_MAX:
                await drain(receive)
            return await send_too_large(send, limit, length)
        received = 0
        refused = started = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not started:
                        await send_too_large(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if not refused:
                started = True
                await send(message)

        await self.app(scope, limited_receive, guarded_send)  # type: ignore[operator]


def nul_check(scope: Scope) -> None:
    """400 naming the parameter when the path or a query parameter holds a NUL character:
    no stored text has one (the database could not even compare against it)."""
    if "\x00" in scope["path"]:
        raise InvalidRequest("the URL path must not contain a NUL character", param="path")
    query = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                param = name.replace("\x00", "\\0")
                raise InvalidRequest(f"query parameter {param!r} must not contain a NUL character",
                                     param=param)

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable_text(value: object, path: str = "") -> str | None:
    """The path (`scope.key`, `labels.team`, `items[2]`) of the first string, object key
    included, holding a NUL or a lone surrogate, which no database column can store; None if none.
    Iterative, so any nesting the parser allowed is walked without recursion."""
    stack: list[tuple[object, str]] = [(value, path)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                return at or "body"
        elif isinstance(item, dict):
            for k, v in item.items():
                name = f"{at}.{_shown(k)}" if at else _shown(k)
                if _UNSTORABLE.search(k):
                    return name
                stack.append((v, name))
        elif isinstance(item, list):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(item))
    return None


def _shown(name: str) -> str:
    """A field name as an error may show it: NUL and lone surrogates written as escapes."""
    return _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", name)


class StorableText:
    """ASGI middleware for the management app: a JSON body with a NUL or a lone surrogate in
    any string is answered 400 naming the field, before the app parses it; such text would
    otherwise reach the database (PostgreSQL refuses NUL, neither stores a lone surrogate).
    The body is read whole (its size is bounded by `BodyLimit` outside) and replayed."""

    def __init__(self, app: object) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)  # type: ignore[operator,no-any-return]
        chunks: list[bytes] = []
        message: Message = {"type": "http.request", "more_body": True}
        while message.get("more_body", False):
            message = await receive()
            if message["type"] != "http.request":  # gone, or refused by `BodyLimit` (413 sent)
                return None
            chunks.append(message.get("body", b""))
        body = b"".join(chunks)
        if b"\\u" in body:  # in JSON, NUL and lone surrogates can only come as \u escapes
            try:
                field = unstorable_text(json.loads(body))
            except (ValueError, RecursionError):
                field = None  # not JSON: the app answers that
            if field is not None:
                err = InvalidRequest(f"{field} must not contain a NUL character or a lone surrogate",
                                     param=field)
                return await send_bytes(send, err.status, err.body(), [*JSON_HEADERS])
        await self.app(scope, _replay(body, receive), send)  # type: ignore[operator]


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body already read, then what `receive` gives (a disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed
