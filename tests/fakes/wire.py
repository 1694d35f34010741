"""What the fake upstream's wire formats share (see ``upstream.py``): the scenario a request's model
names, deterministic reply text and token counts, scripted tool calls, emulated prompt caching and
the JSON and SSE encodings. The formats themselves: ``wire_openai.py``, ``wire_anthropic.py``,
``wire_responses.py``. Everything is deterministic except ``id``/``created`` (counter and clock).
"""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, replace

FIXED_REPLY = "Hello from the fake upstream."
_ids = itertools.count(1)


def next_id(prefix: str) -> str:
    return f"{prefix}{next(_ids):016d}"



DEEPSEEK = "deepseek-"  # a model named deepseek-<scenario>: that scenario, as DeepSeek answers it

# -- scenarios, chosen by the request's model name -------------------------------------------
_SCENARIO = re.compile(
    r"fail-(?P<fail>\d{3})|flaky-(?P<flaky>\d{3})-(?P<times>\d+)|slow-(?P<slow>\d+)"
    r"|slowstream-(?P<slowstream>\d+)|cached-(?P<cached>\d+)|cachewrite-(?P<cachewrite>\d+)"
    r"|cachewrite1h-(?P<cachewrite1h>\d+)|cut-cached-(?P<cutcached>\d+)"
    r"|reasoning-(?P<reasoning>\d+)|long-(?P<long>\d+)|hosted-(?P<hosted>\d+)(?:-results-(?P<results>\d+))?|docpages-(?P<docpages>\d+)|(?P<kind>cut-stream|cut-head|cut-at-end|stream-error|batch-error|reset|garbage|bytetokens|bodytokens|nousage)")


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
    if isinstance(model, str) and model.startswith(DEEPSEEK):  # DeepSeek's dialect of any scenario
        model = model.removeprefix(DEEPSEEK)
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
    ``bytetokens`` scenario the worst tokenizer there can be: a token per UTF-8 byte; for
    ``bodytokens`` a token per byte of the whole body received (`body_bytes`)."""
    kind = parse_scenario(body.get("model")).kind
    if kind == "bodytokens":
        return max(1, body_bytes(body))
    texts = [text_of(m.get("content")) for m in body.get("messages") or [] if isinstance(m, dict)]
    texts.append(text_of(body.get("system")))
    if kind == "bytetokens":
        return max(1, sum(len(t.encode()) for t in texts))
    return max(1, sum(len(t) for t in texts) // 4) + media_tokens(body) + defined_tool_tokens(body)


def body_bytes(value: object) -> int:
    """UTF-8 bytes of `value` as compact JSON text: the whole body a provider reads (tools,
    schemas, tool calls and their JSON punctuation, every field), a token a byte."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


# Anthropic's schema-less tools: the definitions (and, for computer use, the system prompt) it
# adds to the prompt of each request that gives one, as its tool-use docs count them.
_DEFINED_TOOLS = (("computer_", 735 + 499), ("text_editor_", 700), ("bash_", 245))


def defined_tool_tokens(body: dict) -> int:
    """Prompt tokens Anthropic adds for its computer, text editor and bash tools in ``tools``."""
    tools = body.get("tools")
    kinds = [str(t.get("type")) for t in tools if isinstance(t, dict)] if isinstance(tools, list) else []
    return sum(n for kind in kinds for prefix, n in _DEFINED_TOOLS if kind.startswith(prefix))


_MEDIA = frozenset({"file", "input_file", "document", "input_audio", "computer_screenshot"})


def media_tokens(body: dict) -> int:
    """For the ``docpages-<n>`` scenario, n prompt tokens for each document, file or audio part
    anywhere in the body (inline or by reference), and each chat turn's stored audio answer
    (``"audio": {"id": ...}``, which OpenAI puts back in the prompt), and each computer-use
    screenshot (by URL or file id): providers bill a PDF by its pages (text and an image of each),
    audio by its length, an image by its pixels, not by their bytes."""
    per_part = parse_scenario(body.get("model")).media
    if not per_part:
        return 0

    def parts(value: object) -> int:
        if isinstance(value, list):
            return sum(map(parts, value))
        if isinstance(value, dict):
            stored = isinstance(value.get("audio"), dict) and "id" in value["audio"]
            return (value.get("type") in _MEDIA) + stored + sum(map(parts, value.values()))
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
    if str(body.get("model")).startswith("deepseek"):  # api-docs.deepseek.com: max_tokens is its only cap
        limit = body.get("max_tokens")
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



def sse(event: str, data: dict | bytes) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (event.encode(), data if isinstance(data, bytes) else dumps(data))



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

