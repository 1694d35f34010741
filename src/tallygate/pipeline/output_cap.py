"""The output a limited request may produce: what is reserved is what is sent.

A request counted against a monthly limit reserves its worst case before it is forwarded
(`pipeline/budget.py`). The output part of that worst case is read from the body exactly as the
targets will receive it, so no choice of fields can make a provider produce more than was
reserved:

- every output cap any API or translation reads (`max_tokens`, `max_completion_tokens`,
  `max_output_tokens`) counts, whichever route it came in on: the bound is the largest of them,
  times `n` (choices) on chat. A cap that is not a positive integer is a 400 naming it.
- a chat `prediction` (OpenAI's predicted outputs) adds its text, a token per UTF-8 byte, to
  every choice's output: predicted tokens the answer does not use are billed at completion rates,
  whatever the cap.
- a request that sets no cap of its own API (another API's field does not count: translations
  ignore it) gets one from the gateway: `cap_output` writes the default it reserves for
  (`DEFAULT_MAX_TOKENS`) into the field the API's targets and every translation read
  (`max_completion_tokens` on chat, `max_output_tokens` on Responses; Messages requires
  `max_tokens`). Translations derive their cap from those fields only.
- Responses inputs the gateway cannot see (`previous_response_id`, `conversation`, `prompt`)
  and `background` responses (finished and billed after the gateway has answered) cannot be
  priced in advance: refused with a 400 naming the field for a limited request.
"""

from __future__ import annotations

from typing import Any

from tallygate.errors import InvalidRequest

DEFAULT_MAX_TOKENS = 4096  # output tokens the gateway caps a limited request at when it sets none
CAP_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
_OWN_FIELDS = {"chat": ("max_completion_tokens", "max_tokens"), "responses": ("max_output_tokens",),
               "messages": ("max_tokens",)}
_UNPRICEABLE = {"previous_response_id": "stored responses", "conversation": "stored conversations",
                "prompt": "prompt templates", "background": "background responses"}


def _positive(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise InvalidRequest(f"{name} must be a positive integer", param=name)
    return value


def output_bound(body: dict[str, Any], endpoint: str, default: int = DEFAULT_MAX_TOKENS) -> int:
    """The most output tokens any target can produce for `body` as sent (0 for embeddings);
    `default` where the body sets no cap (as `cap_output` then sends)."""
    if endpoint in ("embeddings", "count_tokens"):
        return 0
    caps = [v for name in CAP_FIELDS if (v := _positive(body, name)) is not None]
    output = max(caps, default=default)
    if endpoint != "chat":
        return output
    n = _positive(body, "n")
    return (output + _text_bytes(body.get("prediction"))) * (n or 1)


def _text_bytes(value: object) -> int:
    """UTF-8 bytes of every string in a JSON value (a bound on its tokens)."""
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, dict):
        return sum(map(_text_bytes, value.values()))
    if isinstance(value, list):
        return sum(map(_text_bytes, value))
    return 0


def sent_cap(body: dict[str, Any], endpoint: str) -> int | None:
    """The most output tokens any target can produce for `body` as sent, when it carries a cap
    (`output_bound`; 0 for embeddings); None when it carries none (each provider's own default)
    or one no provider takes (the provider refuses it: nothing is produced)."""
    if endpoint not in ("embeddings", "count_tokens") and all(body.get(name) is None for name in CAP_FIELDS):
        return None
    try:
        return output_bound(body, endpoint)
    except InvalidRequest:
        return None


def cap_output(body: dict[str, Any], endpoint: str, default: int = DEFAULT_MAX_TOKENS) -> int:
    """Make `body` carry the output cap its reservation assumes, and return the bound
    (`output_bound`). Raises `InvalidRequest` naming a cap that is not a positive integer, a
    Messages request without `max_tokens`, or (on Responses) a field whose cost cannot be known
    before the response."""
    if endpoint == "messages" and body.get("max_tokens") is None:
        raise InvalidRequest("max_tokens must be a positive integer", param="max_tokens")
    if endpoint == "responses":
        for name, what in _UNPRICEABLE.items():
            if body.get(name):
                raise InvalidRequest(f"{name}: {what} cannot be priced before the response, so a request "
                                     "counted against a monthly limit cannot use them", param=name)
    own = _OWN_FIELDS.get(endpoint, ())
    if own and all(body.get(name) is None for name in own):
        body[own[0]] = default
    return output_bound(body, endpoint, default)
