"""OpenAI wire formats for the fake upstream (see ``upstream.py``): Chat Completions, Embeddings and
Models request checks and response bodies, shaped like the real API: JSON bodies pretty-printed
(errors with 4 spaces, like api.openai.com), stream chunks compact ``data: {...}`` lines ending
with ``data: [DONE]``.
"""
from __future__ import annotations

import base64
import itertools
import struct
import time
import zlib

try:
    from . import wire
except ImportError:  # run as a script
    import wire  # type: ignore[no-redef]

OPENAI_CHAT_PARAMS = frozenset({
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
    "temperature", "top_p", "n", "stop", "presence_penalty", "frequency_penalty", "logit_bias",
    "logprobs", "top_logprobs", "user", "seed", "tools", "tool_choice", "parallel_tool_calls",
    "response_format", "service_tier", "store", "metadata", "modalities", "reasoning_effort",
    "prediction", "audio", "web_search_options",
    # also real (newer or deprecated) chat parameters
    "functions", "function_call", "prompt_cache_key", "prompt_cache_retention",
    "safety_identifier", "verbosity",
})
# A model of one of these prefixes is served as that service serves it: with its own chat fields.
SERVICE_PARAMS = {"openrouter-": frozenset({"models", "route", "provider", "plugins", "transforms", "usage",
                                           "reasoning"}),
                  "xai-": frozenset({"search_parameters"})}
OPENAI_EMBEDDING_PARAMS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})
FINGERPRINT = "fp_fake0001"


def openai_error(message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def check_openai(body: dict, allowed: frozenset, required: tuple[str, ...]) -> dict | None:
    """The error body a real OpenAI endpoint gives this request, or None if it is valid."""
    for name in body:
        if name not in allowed:
            return openai_error(f"Unrecognized request argument supplied: {name}")
    if not body.get("model"):
        return openai_error("you must provide a model parameter")
    for name in required:
        if name not in body:
            return openai_error(f"Missing required parameter: '{name}'.", param=name,
                                code="missing_required_parameter")
    if "messages" in required and not body["messages"]:
        return openai_error("Invalid 'messages': empty array. Expected an array with minimum length 1, "
                            "but got an empty array instead.", param="messages", code="empty_array")
    if "input" in required and not _valid_embedding_input(body["input"]):
        return openai_error("'$.input' is invalid. Please check the API reference: "
                            "https://platform.openai.com/docs/api-reference.")
    if body.get("stream_options") is not None and not body.get("stream"):
        return openai_error("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                            param="stream_options")
    return None


def _valid_embedding_input(inp: object) -> bool:
    """A non-empty string, or a non-empty list of strings, of token ids, or of token-id lists."""
    if isinstance(inp, str) or not isinstance(inp, list) or not inp:
        return isinstance(inp, str) and inp != ""
    return (all(isinstance(x, str) and x for x in inp) or all(isinstance(x, int) for x in inp)
            or all(isinstance(x, list) and x and all(isinstance(t, int) for t in x) for x in inp))


_OPENAI_FAILURES = {
    400: ("This model's maximum context length is 128000 tokens. However, your messages resulted in "
          "130000 tokens. Please reduce the length of the messages.", "invalid_request_error",
          "messages", "context_length_exceeded"),
    401: ("Incorrect API key provided: sk-fake***. You can find your API key at "
          "https://platform.openai.com/account/api-keys.", "invalid_request_error", None,
          "invalid_api_key"),
    403: ("You are not allowed to sample from this model", "invalid_request_error", None, None),
    404: ("The model `{model}` does not exist or you do not have access to it.",
          "invalid_request_error", None, "model_not_found"),
    429: ("Rate limit reached for {model} in organization org-fake on requests per min (RPM): "
          "Limit 3, Used 3, Requested 1. Please try again in 2s.", "requests", None,
          "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!",
          "server_error", None, None),
    503: ("The server is overloaded or not ready yet.", "server_error", None, None),
}


def openai_failure(status: int, model: str) -> dict:
    msg, type_, param, code = _OPENAI_FAILURES.get(
        status, ("Injected upstream failure ({status}).", "server_error" if status >= 500
                 else "invalid_request_error", None, None))
    return openai_error(msg.format(model=model, status=status), type_, param, code)



AUDIO_TOKENS = 1000  # audio output tokens of each choice of a chat answer asked for audio (`modalities`)


def audio_tokens(body: dict) -> int:
    """Audio output tokens of a chat answer: `AUDIO_TOKENS` a choice when `modalities` asks for audio."""
    modalities = body.get("modalities")
    return AUDIO_TOKENS * len(_choices(body)) if isinstance(modalities, list) and "audio" in modalities else 0


def openai_usage(prompt: int, completion: int, sc: wire.Scenario, rejected: int = 0, audio: int = 0) -> dict:
    """`rejected`: predicted tokens not in the answer, billed as completion tokens (`rejected_prediction`);
    `audio`: audio output tokens, part of the completion tokens (`audio_tokens`)."""
    prompt += sc.cached - sc.prefix
    completion += sc.reasoning + rejected + audio
    if sc.dialect == "deepseek":  # api-docs.deepseek.com: the cache hits in their own fields, no prompt_tokens_details
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                "prompt_cache_hit_tokens": sc.cached, "prompt_cache_miss_tokens": prompt - sc.cached,
                "completion_tokens_details": {"reasoning_tokens": sc.reasoning}}
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": sc.cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": sc.reasoning, "audio_tokens": audio,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": rejected}}


def rejected_prediction(body: dict) -> int:
    """A chat `prediction` the fake never accepts: a token per UTF-8 byte of its text, billed as
    completion tokens (OpenAI bills predicted tokens not in the answer at completion rates)."""
    prediction = body.get("prediction")
    content = prediction.get("content") if isinstance(prediction, dict) else None
    return len(wire.text_of(content).encode())


def _choices(body: dict) -> range:
    n = body.get("n")
    return range(n if isinstance(n, int) and n > 0 else 1)


def openai_chat_json(body: dict, sc: wire.Scenario) -> bytes:
    pieces, cut = wire.reply_pieces(body)
    message: dict = {"role": "assistant", "content": "".join(pieces), "refusal": None, "annotations": []}
    finish = "length" if cut else "stop"
    if call := wire.tool_call(body):
        pieces, finish = wire.argument_pieces(call[1]), "tool_calls"
        message.update(content=None, tool_calls=[{"id": wire.next_id("call_fake"), "type": "function",
                                                  "function": {"name": call[0], "arguments": call[1]}}])
    choices = [{"index": i, "message": message, "logprobs": None, "finish_reason": finish}
               for i in _choices(body)]
    answer = {
        "id": wire.next_id("chatcmpl-fake"), "object": "chat.completion", "created": int(time.time()),
        "model": body["model"], "choices": choices,
        "usage": openai_usage(wire.count_prompt_tokens(body), len(pieces) * len(choices), sc, rejected_prediction(body),
                              audio_tokens(body)),
        "service_tier": "default", "system_fingerprint": FINGERPRINT,
    }
    if sc.kind == "nousage":  # a server that reports no usage
        del answer["usage"]
    return wire.dumps(answer, indent=2)


def openai_chat_events(body: dict, sc: wire.Scenario) -> list[bytes]:
    """``data:`` events of a streamed completion, ending with ``data: [DONE]``."""
    pieces, cut = wire.reply_pieces(body)
    opts = body.get("stream_options") or {}
    with_usage, obfuscate = bool(opts.get("include_usage")), opts.get("include_obfuscation", True)
    with_usage = with_usage and sc.kind != "nousage"
    head = {"id": wire.next_id("chatcmpl-fake"), "object": "chat.completion.chunk",
            "created": int(time.time()), "model": body["model"], "service_tier": "default",
            "system_fingerprint": FINGERPRINT}
    counter = itertools.count()

    def chunk(choices: list, usage: dict | None = None) -> bytes:
        data = dict(head, choices=choices)
        if with_usage:
            data["usage"] = usage
        if obfuscate and choices:
            data["obfuscation"] = "xyzw"[: 1 + next(counter) % 4]
        return b"data: " + wire.dumps(data) + b"\n\n"

    def delta(i: int, d: dict, finish: str | None = None) -> list:
        return [{"index": i, "delta": d, "logprobs": None, "finish_reason": finish}]

    idx = _choices(body)
    if call := wire.tool_call(body):
        pieces = wire.argument_pieces(call[1])
        first = {"role": "assistant", "content": None, "tool_calls": [{
            "index": 0, "id": wire.next_id("call_fake"), "type": "function",
            "function": {"name": call[0], "arguments": ""}}], "refusal": None}
        out = [chunk(delta(i, first)) for i in idx]
        out += [chunk(delta(i, {"tool_calls": [{"index": 0, "function": {"arguments": p}}]}))
                for p in pieces for i in idx]
        out += [chunk(delta(i, {}, "tool_calls")) for i in idx]
    else:
        out = [chunk(delta(i, {"role": "assistant", "content": "", "refusal": None})) for i in idx]
        out += [chunk(delta(i, {"content": p})) for p in pieces for i in idx]
        out += [chunk(delta(i, {}, "length" if cut else "stop")) for i in idx]
    if with_usage:
        out.append(chunk([], openai_usage(wire.count_prompt_tokens(body), len(pieces) * len(idx), sc,
                                          rejected_prediction(body), audio_tokens(body))))
    return out + [b"data: [DONE]\n\n"]


def openai_stream_error() -> bytes:
    return b"data: " + wire.dumps(openai_error("The server had an error while processing your request. "
                                          "Sorry about that!", "server_error")) + b"\n\n"


def openai_embeddings_json(body: dict) -> bytes:
    inp = body["input"]
    items = [inp] if isinstance(inp, str) or (inp and isinstance(inp[0], int)) else list(inp)
    dims = body.get("dimensions") or 8
    data, tokens = [], 0
    for i, item in enumerate(items):
        key = (item if isinstance(item, str) else ",".join(map(str, item))).encode()
        tokens += max(1, len(item) // 4) if isinstance(item, str) else len(item)
        vec = [((zlib.crc32(key, k) % 2001) - 1000) / 1000 for k in range(dims)]
        emb: object = vec
        if body.get("encoding_format") == "base64":
            emb = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    usage = {} if wire.parse_scenario(body.get("model")).kind == "nousage" else \
        {"usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return wire.dumps({"object": "list", "data": data, "model": body["model"], **usage}, indent=2)


def openai_models_json(models: list[str]) -> bytes:
    return wire.dumps({"object": "list", "data": [
        {"id": m, "object": "model", "created": 1700000000, "owned_by": "system"} for m in models]},
        indent=2)

