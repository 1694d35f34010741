"""The request fields the gateway checks itself, so bad input gets a 400 naming the field
instead of a provider's puzzling answer. Everything else is the provider's to judge."""

from __future__ import annotations

from typing import Any

from tallygate.errors import InvalidRequest

_NUMBERS = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0), "presence_penalty": (-2.0, 2.0),
            "frequency_penalty": (-2.0, 2.0)}
_COUNTS = ("max_tokens", "max_completion_tokens", "n")


def _is_int(value: object) -> bool:
    return type(value) is int


def check_chat(body: dict[str, Any]) -> bool:
    """Validate a chat completion request; returns whether the client wants a stream."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty array", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidRequest(f"messages[{i}] must be an object", param=f"messages[{i}]")
        if not isinstance(m.get("role"), str):
            raise InvalidRequest(f"messages[{i}].role must be a string", param=f"messages[{i}].role")
        _check_content(m.get("content"), f"messages[{i}].content")
    for name in _COUNTS:
        value = body.get(name)
        if value is not None and (not _is_int(value) or value < 1):
            raise InvalidRequest(f"{name} must be a positive integer", param=name)
    check_numbers(body, _NUMBERS)
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("stream must be a boolean", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("stream_options must be an object", param="stream_options")
    return bool(stream)


def check_numbers(body: dict[str, Any], ranges: dict[str, tuple[float, float]]) -> None:
    """Each named sampling field, when given, a number in its API's range."""
    for name, (low, high) in ranges.items():
        value = body.get(name)
        if value is not None and (type(value) not in (int, float) or not low <= value <= high):
            raise InvalidRequest(f"{name} must be a number from {low:g} to {high:g}", param=name)


def _check_content(content: object, param: str) -> None:
    """A message's content: text, null, or content parts that each name their `type` (and a
    text part its `text`) with a string, so that no provider or translation meets another type."""
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise InvalidRequest(f"{param} must be a string, an array of content parts or null", param=param)
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise InvalidRequest(f"{param}[{j}].type must be a string", param=f"{param}[{j}].type")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise InvalidRequest(f"{param}[{j}].text must be a string", param=f"{param}[{j}].text")


def check_embeddings(body: dict[str, Any]) -> None:
    """`input`: a non-empty string, an array of them, an array of token ids or an array of such arrays."""
    value = body.get("input")
    ok = isinstance(value, str) or (isinstance(value, list) and value and (
        all(isinstance(x, str) for x in value)
        or all(_is_int(x) for x in value)
        or all(isinstance(x, list) and x and all(_is_int(t) for t in x) for x in value)))
    if not ok:
        raise InvalidRequest("input must be a string, an array of strings, or token ids", param="input")
    if value == "":  # OpenAI refuses an empty input; each would be billed a token its bytes do not bound
        raise InvalidRequest("input must not be an empty string", param="input")
    if isinstance(value, list) and "" in value:
        i = value.index("")
        raise InvalidRequest(f"input[{i}] must not be an empty string", param=f"input[{i}]")
