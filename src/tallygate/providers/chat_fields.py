"""No chat request field is dropped silently by a translation to another API.

Each translation of a chat request (Bedrock Converse, Gemini and Vertex AI, Anthropic Messages)
names the fields it reads, carrying each to the target's own field or refusing a value it cannot
honour. `refuse_unread` refuses with a 400 naming the field anything else the client set — a
field OpenAI adds tomorrow included — unless its value asks for nothing (`NEUTRAL`: `n: 1`,
`logprobs: false`, `store: false`, a zero penalty, `modalities: ["text"]` ...) or it is a
prompt-cache hint (`HINTS`).
"""

from __future__ import annotations

from collections.abc import Callable

from tallygate.errors import InvalidRequest

# Read by the gateway itself, never by a translation: the model (in the URL), the messages
# (translated by each), `stream` (the target's streaming call) and `stream_options` (the
# gateway's own usage chunk, which every translated stream can report).
GATEWAY = frozenset({"model", "messages", "stream", "stream_options"})

# Hints that change no answer: prompt-cache routing (Codex sends `prompt_cache_key` with every
# request, whatever the model; a target without it caches as it does) and who the end user is
# (`user`, `safety_identifier`, `metadata`: many chat front ends send them with every request; a
# target with a place for them gets them, e.g. Bedrock's `requestMetadata`, and the ledger keeps
# the key and tags either way).
HINTS = frozenset({"prompt_cache_key", "prompt_cache_retention", "user", "safety_identifier", "metadata"})

# Values that ask for what every target does anyway.
NEUTRAL: dict[str, Callable[[object], bool]] = {
    "n": lambda v: v == 1,
    "logprobs": lambda v: v is False,
    "store": lambda v: v is False,
    "parallel_tool_calls": lambda v: v is True,
    "presence_penalty": lambda v: v == 0 and not isinstance(v, bool),
    "frequency_penalty": lambda v: v == 0 and not isinstance(v, bool),
    "modalities": lambda v: v == ["text"],
    "service_tier": lambda v: v == "auto",  # the provider's own default tier
}


def refuse_unread(body: dict, read: frozenset[str], target: str) -> None:
    """A 400 naming the first field of `body` that neither the gateway nor the translation to
    `target` reads (see the module docstring)."""
    for name, value in body.items():
        if value is None or name in GATEWAY or name in HINTS or name in read:
            continue
        neutral = NEUTRAL.get(name)
        if neutral is not None and neutral(value):
            continue
        raise InvalidRequest(f"{name} is not supported for {target} models (the gateway would have to drop it)",
                             param=name)


def chat_cap(body: dict) -> object:
    """A chat request's output cap as a translation sends it: `max_completion_tokens`, else
    `max_tokens`, a null counting as absent (`{"max_tokens": 10, "max_completion_tokens": null}`
    is capped at 10, as its reservation counts it: `pipeline/output_cap.py`); None for no cap."""
    cap = body.get("max_completion_tokens")
    return body.get("max_tokens") if cap is None else cap
