"""The bodies a request's targets are sent where the gateway translates it (pure, no I/O).

A limited request reserves its prompt at a token per byte of what a provider reads
(`budget.prompt_bound`), and a body can grow in translation: a Responses namespace's name is
repeated on each of its tools and each custom tool gains a schema (Responses -> chat), an object
becomes the text of its JSON (a Messages `tool_use` input -> chat arguments), each tool or tool
result gains a wrapper (Messages -> chat, chat -> Anthropic, Gemini or Converse). So the
reservation bounds the largest of the client's body and every body a target would be sent
(`sent_bodies`), never the client's alone. A target whose translation refuses the request is
sent nothing (the attempt there fails the same way). Image parts are measured as a tiny stand-in
of the same kind (`_without_images`): the bound counts each image at what it may be billed,
whatever the size of its data, in whatever shape a translation gives it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tallygate.errors import GatewayError
from tallygate.pipeline.image_tokens import IMAGE_PARTS
from tallygate.pipeline.models import Route
from tallygate.providers.messages_translate import messages_to_chat
from tallygate.providers.responses_translate import responses_to_chat

_PIXEL = "data:image/png;base64,AA=="  # an image's stand-in: valid for every translation


def sent_bodies(body: dict[str, Any], endpoint: str, routes: Sequence[Route]) -> list[dict[str, Any]]:
    """The bodies `routes` are sent for `body` that are not `body` itself (with its target's
    model): the translated ones; none (and no copy made) when no target translates."""
    translating = [r for r in routes if _translates(r, endpoint)]
    if not translating:
        return []
    measured = _without_images(body)
    assert isinstance(measured, dict)
    out: list[dict[str, Any]] = []
    for route in translating:
        try:
            out.append(_sent(measured, endpoint, route))
        except GatewayError:  # refused in translation: nothing is sent there
            continue
    return out


def _translates(route: Route, endpoint: str) -> bool:
    native = route.native
    if endpoint == "chat":
        return native.chat_payload is not None
    if endpoint == "messages":
        return native.messages is None or native.messages_payload is not None
    return endpoint == "responses" and native.responses is None


def _sent(body: dict[str, Any], endpoint: str, route: Route) -> dict[str, Any]:
    """The body `route` is sent (it translates: `_translates`)."""
    native, upstream = route.native, {**body, "model": route.upstream_model}
    if endpoint == "messages" and native.messages_payload is not None:
        return native.messages_payload.messages_payload(upstream)
    if endpoint == "messages":
        upstream = messages_to_chat(body, route.upstream_model)
    elif endpoint == "responses":
        upstream = responses_to_chat(body, route.upstream_model)
    return upstream if native.chat_payload is None else native.chat_payload.chat_payload(upstream)


def _without_images(value: object) -> object:
    """`value` with each image part's data replaced by `_PIXEL` (a copy; the rest shared)."""
    if isinstance(value, list):
        return [_without_images(v) for v in value]
    if not isinstance(value, dict):
        return value
    kind = value.get("type")
    if isinstance(kind, str) and kind in IMAGE_PARTS:
        return _stand_in(value)
    return {k: _without_images(v) for k, v in value.items()}


def _stand_in(part: dict[str, Any]) -> dict[str, Any]:
    source = part.get("source")
    if isinstance(source, dict):  # Messages: base64 or URL source
        return {**part, "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}
    url = part.get("image_url")
    return {**part, "image_url": {**url, "url": _PIXEL} if isinstance(url, dict) else _PIXEL}
