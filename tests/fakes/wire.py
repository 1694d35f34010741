"""Wire formats for the fake upstream (see ``upstream.py``): request checks and response bodies.

OpenAI Chat Completions / Embeddings / Models and Anthropic Messages, shaped like the real APIs:
OpenAI JSON bodies are pretty-printed (errors with 4 spaces, like api.openai.com), its stream chunks
compact ``data: {...}`` lines ending with ``data: [DONE]``; Anthropic uses compact JSON and named
SSE events. Everything is deterministic except ``id``/``created`` (counter and clock).
"""
from __future__ import annotations

import base64
import itertools
import json
import re
import struct
import time
import zlib
from dataclasses import dataclass, replace

try:
    from . import server_tools
except ImportError:  # run as a script
    import server_tools  # type: ignore[no-redef]

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
OPENAI_EMBEDDING_PARAMS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})
ANTHROPIC_PARAMS = frozenset({
    "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
    "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier",
    "container", "mcp_servers", "context_management", "cache_control", "inference_geo",
    "output_config", "speed",
})
FIXED_REPLY = "Hello from the fake upstream."
FINGERPRINT = "fp_fake0001"
_ids = itertools.count(1)


def next_id(prefix: str) -> str:
    return f"{prefix}{next(_ids):016d}"


# -- scenarios, chosen by the request's model name -------------------------------------------
_SCENARIO = re.compile(
    r"fail-(?P<fail>\d{3})|flaky-(?P<flaky>\d{3})-(?P<times>\d+)|slow-(?P<slow>\d+)"
    r"|slowstream-(?P<slowstream>\d+)|cached-(?P<cached>\d+)|cachewrite-(?P<cachewrite>\d+)"
    r"|cachewrite1h-(?P<cachewrite1h>\d+)|cut-cached-(?P<cutcached>\d+)"
    r"|reasoning-(?P<reasoning>\d+)|long-(?P<long>\d+)|hosted-(?P<hosted>\d+)(?:-results-(?P<results>\d+))?|docpages-(?P<docpages>\d+)|(?P<kind>cut-stream|cut-at-end|stream-error|batch-error|reset|garbage|bytetokens|nousage)")


@dataclass(frozen=True)
class Scenario:
    kind: str = "ok"           # ok fail flaky slow slowstream cached cachewrite reasoning cut-stream ...
    status: int = 0            # fail-<status>, flaky-<status>-<times>
    times: int = 0             # flaky: how many requests fail before success
    delay: float = 0.0         # slow: before the response; slowstream: between stream events
    cached: int = 0            # prompt tokens reported as cache reads
    cache_write: int = 0       # Anthropic cache_creation_input_tokens (5-minute TTL)
    cache_write_1h: int = 0    # Anthropic cache writes with the 1-hour TTL
    reasoning: int = 0         # OpenAI completion_tokens_details.reasoning_tokens
    words: int = 0             # long-<n>: a reply of n words, unless the request's cap cuts it
    hosted: int = 0            # hosted-<k>: k provider-run tool calls first (server_tools.py)
    results: int = 0           # hosted-<k>-results-<n>: each call's results add n input tokens (else 1,500)
    media: int = 0             # docpages-<n>: each document, file or audio part bills n prompt tokens
    prefix: int = 0            # prompt_cache: tokens of the counted prompt read or written as a cache
    dialect: str = "openai"    # "deepseek": DeepSeek's documented usage fields (prompt_cache_hit_tokens ...)
    cut: bool = False          # cut-cached-<n>: as cached-<n>, then cut as cut-stream


def parse_scenario(model: object) -> Scenario:
    m = _SCENARIO.fullmatch(model) if isinstance(model, str) else None
    if m is None:
        return Scenario()
    g = {k: v for k, v in m.groupdict().items() if v is not None}
    if "fail" in g:
        return Scenario("fail", status=int(g["fail"]))
    if "flaky" in g:
        return Scenario("flaky", status=int(g["flaky"]), times=int(g["times"]))
    if "slow" in g or "slowstream" in g:
        kind = "slow" if "slow" in g else "slowstream"
        return Scenario(kind, delay=int(g[kind]) / 1000)
    if "cached" in g:
        return Scenario("cached", cached=int(g["cached"]))
    if "cutcached" in g:
        return Scenario("cached", cached=int(g["cutcached"]), cut=True)
    if "cachewrite" in g:
        return Scenario("cachewrite", cache_write=int(g["cachewrite"]))
    if "cachewrite1h" in g:
        return Scenario("cachewrite", cache_write_1h=int(g["cachewrite1h"]))
    if "reasoning" in g:
        return Scenario("reasoning", reasoning=int(g["reasoning"]))
    if "long" in g:
        return Scenario("long", words=int(g["long"]))
    if "hosted" in g:
        return Scenario("hosted", hosted=int(g["hosted"]), results=int(g.get("results", 0)))
    if "docpages" in g:
        return Scenario("docpages", media=int(g["docpages"]))
    return Scenario(g["kind"])


# -- deterministic content and token counts ------------------------------------------------------
def text_of(content: object) -> str:
    """Text of a message ``content`` (a string or a list of typed parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content
                       if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def count_prompt_tokens(body: dict) -> int:
    """max(1, characters of all message text plus the Anthropic ``system`` prompt // 4); for the
    ``bytetokens`` scenario the worst tokenizer there can be: a token per UTF-8 byte."""
    texts = [text_of(m.get("content")) for m in body.get("messages") or [] if isinstance(m, dict)]
    texts.append(text_of(body.get("system")))
    if parse_scenario(body.get("model")).kind == "bytetokens":
        return max(1, sum(len(t.encode()) for t in texts))
    return max(1, sum(len(t) for t in texts) // 4) + media_tokens(body) + defined_tool_tokens(body)


# Anthropic's schema-less tools: the definitions (and, for computer use, the system prompt) it
# adds to the prompt of each request that gives one, as its tool-use docs count them.
_DEFINED_TOOLS = (("computer_", 735 + 499), ("text_editor_", 700), ("bash_", 245))


def defined_tool_tokens(body: dict) -> int:
    """Prompt tokens Anthropic adds for its computer, text editor and bash tools in ``tools``."""
    tools = body.get("tools")
    kinds = [str(t.get("type")) for t in tools if isinstance(t, dict)] if isinstance(tools, list) else []
    return sum(n for kind in kinds for prefix, n in _DEFINED_TOOLS if kind.startswith(prefix))


_MEDIA = frozenset({"file", "input_file", "document", "input_audio"})


def media_tokens(body: dict) -> int:
    """For the ``docpages-<n>`` scenario, n prompt tokens for each document, file or audio part
    anywhere in the body (inline or by reference): providers bill a PDF by its pages (text and
    an image of each), not by its bytes."""
    per_part = parse_scenario(body.get("model")).media
    if not per_part:
        return 0

    def parts(value: object) -> int:
        if isinstance(value, list):
            return sum(map(parts, value))
        if isinstance(value, dict):
            return (value.get("type") in _MEDIA) + sum(map(parts, value.values()))
        return 0

    return per_part * parts(body)


def reply_text(body: dict) -> str:
    """"Echo: <first 40 chars of the last user message>", or FIXED_REPLY if it has no text;
    for the long-<n> scenario, n words."""
    words = parse_scenario(body.get("model")).words
    if words:
        return " ".join(["w"] * words)
    users = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
    text = text_of(users[-1].get("content")).strip() if users else ""
    return f"Echo: {text[:40]}" if text else FIXED_REPLY


def reply_pieces(body: dict) -> tuple[list[str], bool]:
    """Stream pieces (one word each, one token each) and whether max_tokens truncated them."""
    words = reply_text(body).split(" ")
    pieces = [words[0]] + [" " + w for w in words[1:]]
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and 0 < limit < len(pieces):
        return pieces[:limit], True
    return pieces, False


_SCRIPT = re.compile(r"\[\[(?:call (?P<name>[\w.-]+) (?P<args>\{.*?\})|(?P<none>no tools))\]\]", re.S)


_SERVER_TOOLS = ("web_search", "web_fetch_", "code_execution_", "file_search", "code_interpreter", "mcp",
                 "image_generation")


def _tool_name(tool: object) -> str | None:
    if not isinstance(tool, dict):
        return None
    name = tool.get("name") or (tool.get("function") or {}).get("name")
    return name if isinstance(name, str) else None


def tool_call(body: dict) -> tuple[str, str] | None:
    """(tool name, JSON arguments) when the fake should call a tool: the request offers tools
    and its last turn is not a tool's result. The arguments are ``{"query": <reply text>}``.

    A client whose every request offers tools (a coding agent) scripts the turn in its prompt:
    ``[[call NAME {json}]]`` calls the offered tool NAME with those arguments, ``[[no tools]]``
    answers with text."""
    tools = body.get("tools")
    if isinstance(tools, list):  # the provider runs its own tools: the model never hands them back
        tools = [t for t in tools if not (isinstance(t, dict) and str(t.get("type")).startswith(_SERVER_TOOLS))]
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
        return None
    messages = body.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    content = last.get("content")
    if last.get("role") == "tool" or (isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in content)):
        return None
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    script = _SCRIPT.search(text_of(users[-1].get("content"))) if users else None
    if script is not None:
        if script["none"] or script["name"] not in {_tool_name(t) for t in tools}:
            return None
        return script["name"], json.dumps(json.loads(script["args"]), separators=(",", ":"))
    return _tool_name(tools[0]) or "tool", json.dumps({"query": reply_text(body)}, separators=(",", ":"))


def argument_pieces(arguments: str) -> list[str]:
    """Tool-call arguments streamed in pieces of about 8 characters, one token each."""
    return [arguments[i:i + 8] for i in range(0, len(arguments), 8)]


def dumps(obj: object, indent: int | None = None) -> bytes:
    if indent is None:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    return json.dumps(obj, indent=indent, ensure_ascii=False).encode()


# -- OpenAI ---------------------------------------------------------------------------------
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


# -- prompt caching (emulated when the fake's `prompt_caching` is on) ---------------------------
OPENAI_CACHE_MIN, OPENAI_CACHE_STEP = 1024, 128


def _block_text(block: object) -> str:
    if isinstance(block, str):
        return block
    return block["text"] if isinstance(block, dict) and isinstance(block.get("text"), str) else ""


def prompt_cache(body: dict, api: str, sc: Scenario, seen: set[str]) -> Scenario:
    """`sc` with what prompt caching makes of `body`, given the prefixes `seen` (which it adds to,
    each under its `api`: one API's cache is not another's).

    OpenAI (chat, Responses: automatic): the text of every message before the last, once it is
    OPENAI_CACHE_MIN tokens or more, is cached; seen again, its tokens (in steps of
    OPENAI_CACHE_STEP) are `cached_tokens`. Anthropic (explicit): the system and message text up
    to the last block marked `cache_control` is written the first time (`ttl: "1h"`: an hour's
    write), read after; `input_tokens` keeps the rest."""
    if sc.kind != "ok":
        return sc
    if api == "anthropic":
        system = body.get("system")
        blocks = [system] if isinstance(system, str) else list(system or [])
        blocks += [b for m in body.get("messages") or [] if isinstance(m, dict)
                   for b in (m["content"] if isinstance(m.get("content"), list) else [m.get("content")])]
        marks = [i for i, b in enumerate(blocks) if isinstance(b, dict) and b.get("cache_control")]
        if not marks:
            return sc
        prefix = "".join(map(_block_text, blocks[:marks[-1] + 1]))
        n = min(len(prefix) // 4, count_prompt_tokens(body))
        read, hour = f"{api}:{prefix}" in seen, (blocks[marks[-1]]["cache_control"].get("ttl") == "1h")
        seen.add(f"{api}:{prefix}")
        if read:
            return replace(sc, kind="cached", cached=n, prefix=n)
        return replace(sc, kind="cachewrite", prefix=n, **{"cache_write_1h" if hour else "cache_write": n})
    messages = body.get("messages") or []
    prefix = "".join(text_of(m.get("content")) for m in messages[:-1] if isinstance(m, dict))
    n = len(prefix) // 4 // OPENAI_CACHE_STEP * OPENAI_CACHE_STEP
    if n < OPENAI_CACHE_MIN:
        return sc
    if f"{api}:{prefix}" not in seen:
        seen.add(f"{api}:{prefix}")
        return sc
    return replace(sc, kind="cached", cached=n, prefix=n)


AUDIO_TOKENS = 1000  # audio output tokens of each choice of a chat answer asked for audio (`modalities`)


def audio_tokens(body: dict) -> int:
    """Audio output tokens of a chat answer: `AUDIO_TOKENS` a choice when `modalities` asks for audio."""
    modalities = body.get("modalities")
    return AUDIO_TOKENS * len(_choices(body)) if isinstance(modalities, list) and "audio" in modalities else 0


def openai_usage(prompt: int, completion: int, sc: Scenario, rejected: int = 0, audio: int = 0) -> dict:
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
    return len(text_of(content).encode())


def _choices(body: dict) -> range:
    n = body.get("n")
    return range(n if isinstance(n, int) and n > 0 else 1)


def openai_chat_json(body: dict, sc: Scenario) -> bytes:
    pieces, cut = reply_pieces(body)
    message: dict = {"role": "assistant", "content": "".join(pieces), "refusal": None, "annotations": []}
    finish = "length" if cut else "stop"
    if call := tool_call(body):
        pieces, finish = argument_pieces(call[1]), "tool_calls"
        message.update(content=None, tool_calls=[{"id": next_id("call_fake"), "type": "function",
                                                  "function": {"name": call[0], "arguments": call[1]}}])
    choices = [{"index": i, "message": message, "logprobs": None, "finish_reason": finish}
               for i in _choices(body)]
    answer = {
        "id": next_id("chatcmpl-fake"), "object": "chat.completion", "created": int(time.time()),
        "model": body["model"], "choices": choices,
        "usage": openai_usage(count_prompt_tokens(body), len(pieces) * len(choices), sc, rejected_prediction(body),
                              audio_tokens(body)),
        "service_tier": "default", "system_fingerprint": FINGERPRINT,
    }
    if sc.kind == "nousage":  # a server that reports no usage
        del answer["usage"]
    return dumps(answer, indent=2)


def openai_chat_events(body: dict, sc: Scenario) -> list[bytes]:
    """``data:`` events of a streamed completion, ending with ``data: [DONE]``."""
    pieces, cut = reply_pieces(body)
    opts = body.get("stream_options") or {}
    with_usage, obfuscate = bool(opts.get("include_usage")), opts.get("include_obfuscation", True)
    with_usage = with_usage and sc.kind != "nousage"
    head = {"id": next_id("chatcmpl-fake"), "object": "chat.completion.chunk",
            "created": int(time.time()), "model": body["model"], "service_tier": "default",
            "system_fingerprint": FINGERPRINT}
    counter = itertools.count()

    def chunk(choices: list, usage: dict | None = None) -> bytes:
        data = dict(head, choices=choices)
        if with_usage:
            data["usage"] = usage
        if obfuscate and choices:
            data["obfuscation"] = "xyzw"[: 1 + next(counter) % 4]
        return b"data: " + dumps(data) + b"\n\n"

    def delta(i: int, d: dict, finish: str | None = None) -> list:
        return [{"index": i, "delta": d, "logprobs": None, "finish_reason": finish}]

    idx = _choices(body)
    if call := tool_call(body):
        pieces = argument_pieces(call[1])
        first = {"role": "assistant", "content": None, "tool_calls": [{
            "index": 0, "id": next_id("call_fake"), "type": "function",
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
        out.append(chunk([], openai_usage(count_prompt_tokens(body), len(pieces) * len(idx), sc,
                                          rejected_prediction(body), audio_tokens(body))))
    return out + [b"data: [DONE]\n\n"]


def openai_stream_error() -> bytes:
    return b"data: " + dumps(openai_error("The server had an error while processing your request. "
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
    usage = {} if parse_scenario(body.get("model")).kind == "nousage" else \
        {"usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return dumps({"object": "list", "data": data, "model": body["model"], **usage}, indent=2)


def openai_models_json(models: list[str]) -> bytes:
    return dumps({"object": "list", "data": [
        {"id": m, "object": "model", "created": 1700000000, "owned_by": "system"} for m in models]},
        indent=2)


# -- Anthropic --------------------------------------------------------------------------------
def anthropic_error(type_: str, message: str) -> dict:
    return {"type": "error", "error": {"type": type_, "message": message},
            "request_id": next_id("req_fake")}


def check_anthropic(body: dict) -> dict | None:
    for name in body:
        if name not in ANTHROPIC_PARAMS:
            return anthropic_error("invalid_request_error", f"{name}: Extra inputs are not permitted")
    for name in ("model", "messages", "max_tokens"):
        if name not in body:
            return anthropic_error("invalid_request_error", f"{name}: Field required")
    return None


_ANTHROPIC_FAILURES = {
    400: ("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model: {model}"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "This request would exceed the rate limit for your organization of "
                              "50 requests per minute. Please try again later."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def anthropic_failure(status: int, model: str) -> dict:
    type_, msg = _ANTHROPIC_FAILURES.get(
        status, ("api_error" if status >= 500 else "invalid_request_error",
                 "Injected upstream failure ({status})."))
    return anthropic_error(type_, msg.format(model=model, status=status))


def anthropic_usage(prompt: int, output: int, sc: Scenario) -> dict:
    return {"input_tokens": prompt - sc.prefix, "cache_creation_input_tokens": sc.cache_write + sc.cache_write_1h,
            "cache_read_input_tokens": sc.cached,
            "cache_creation": {"ephemeral_5m_input_tokens": sc.cache_write,
                               "ephemeral_1h_input_tokens": sc.cache_write_1h},
            "output_tokens": output, "service_tier": "standard"}


def _message(body: dict, content: list, stop: str | None, usage: dict) -> dict:
    return {"id": next_id("msg_01Fake"), "type": "message", "role": "assistant",
            "model": body["model"], "content": content, "stop_reason": stop,
            "stop_sequence": None, "usage": usage}


def anthropic_json(body: dict, sc: Scenario) -> bytes:
    pieces, cut = reply_pieces(body)
    content = [{"type": "text", "text": "".join(pieces)}]
    stop = "max_tokens" if cut else "end_turn"
    if call := tool_call(body):
        pieces, stop = argument_pieces(call[1]), "tool_use"
        content = [{"type": "tool_use", "id": next_id("toolu_01Fake"), "name": call[0],
                    "input": json.loads(call[1])}]
    run = server_tools.anthropic_run(body, sc.hosted, sc.results)
    usage = anthropic_usage(count_prompt_tokens(body) + run.extra_input, len(pieces), sc)
    if run.usage():
        usage["server_tool_use"] = run.usage()
    message = _message(body, run.blocks + content, stop, usage)
    if run.container:
        message["container"] = run.container
    return dumps(message)


def sse(event: str, data: dict | bytes) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (event.encode(), data if isinstance(data, bytes) else dumps(data))


def anthropic_events(body: dict, sc: Scenario) -> list[bytes]:
    pieces, cut = reply_pieces(body)
    prompt = count_prompt_tokens(body)
    block: dict = {"type": "text", "text": ""}
    stop = "max_tokens" if cut else "end_turn"
    if call := tool_call(body):
        pieces, stop = argument_pieces(call[1]), "tool_use"
        block = {"type": "tool_use", "id": next_id("toolu_01Fake"), "name": call[0], "input": {}}
    run = server_tools.anthropic_run(body, sc.hosted, sc.results)
    at = len(run.blocks)  # the answer's block comes after the server tools' blocks
    out = [sse("message_start", {"type": "message_start", "message": _message(
               body, [], None, anthropic_usage(prompt, 1, sc))}),
           *(sse(name, event) for name, event in server_tools.anthropic_block_events(run.blocks)),
           sse("content_block_start", {"type": "content_block_start", "index": at,
                                       "content_block": block}),
           sse("ping", b'{"type": "ping"}')]
    kind, field = ("input_json_delta", "partial_json") if call else ("text_delta", "text")
    out += [sse("content_block_delta", {"type": "content_block_delta", "index": at,
                                        "delta": {"type": kind, field: p}}) for p in pieces]
    final = anthropic_usage(prompt + run.extra_input, len(pieces), sc)
    for k in ("cache_creation", "service_tier"):
        del final[k]
    if run.usage():
        final["server_tool_use"] = run.usage()
    delta: dict = {"stop_reason": stop, "stop_sequence": None}
    if run.container:
        delta["container"] = run.container
    return out + [
        sse("content_block_stop", {"type": "content_block_stop", "index": at}),
        sse("message_delta", {"type": "message_delta", "usage": final, "delta": delta}),
        sse("message_stop", {"type": "message_stop"})]


def anthropic_stream_error() -> bytes:
    return sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})


def anthropic_models_json(models: list[str]) -> bytes:
    data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in models]
    return dumps({"data": data, "has_more": False, "first_id": models[0] if models else None,
                  "last_id": models[-1] if models else None})
