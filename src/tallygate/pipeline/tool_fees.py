"""Provider-run tools: the most they may cost (reserved) and what they did cost (metered).

Some tools run at the provider, inside one request, billed per use on top of tokens, and each use
brings back results that the model reads as input on its next sampling pass:

- OpenAI Responses built-in tools: `web_search` / `web_search_preview` (a `web_search_call`
  output item each), `file_search` (`file_search_call`), `code_interpreter` (a container,
  billed when the request creates it: `container: {"type": "auto", "memory_limit": ...}`), and
  the other built-in tools (`mcp` ...), whose calls bring results back. `image_generation` is
  billed outside the usage a response reports: a request counted against a limit is refused it
  (400 naming `tools[i].type`); others are served and its images are not in their cost. Chat
  audio output (`modalities: ["text", "audio"]`), billed at audio token prices, likewise (400
  naming `modalities`); others are served, their audio tokens priced at the model's audio prices
  where genai-prices lists them (`Rate.output_audio`), else as text.
- Chat completions on a search model (`gpt-4o-search-preview`, `...-search-api`): every request
  searches once per choice (`web_search_options` only tunes it).
- Anthropic's advisor tool (`advisor_*`) runs another model (an Opus) over the whole transcript
  at that model's prices, reported apart from the message's usage: a request counted against a
  limit is refused it (400 naming `tools[i].type`); others are served and its tokens are not in
  their cost.
- Anthropic server tools: `web_search_*` (`usage.server_tool_use.web_search_requests`),
  `web_fetch_*` (no fee, results only), `code_execution_*` (a container: the response's
  `container`), MCP servers (`mcp_servers`), and any other server tool (`tool_search_tool_*`):
  no fee, but another sampling pass each.

**Metered** from what the provider returns (`responses_tool_use`, `anthropic_container`,
`chat_searches`, and `anthropic_usage` for `server_tool_use`), priced per use by the route's
`Rate` (`pipeline/pricing.py`), so the ledger's cost and the `usage.cost` the client reads are one
number.

**Reserved** (`cap_tools`, for requests counted against a limit), from the body as sent:
- the number of calls is bounded by what the provider enforces: Anthropic's `max_uses` on
  `web_search` / `web_fetch`, the Responses API's `max_tool_calls` (over every built-in tool).
  Where the client set none, the gateway sends `DEFAULT_TOOL_CALLS` and reserves for it (the
  request is served; the model is told the tool's uses ran out past it). Code execution and MCP
  have no per-tool bound on Anthropic: they are bounded by its server-tool loop
  (`SERVER_LOOP_ITERATIONS` sampling passes, then `stop_reason: "pause_turn"`).
- a web fetch's results add at most its `max_content_tokens` (the gateway sends `RESULT_TOKENS`
  where the client set none). No provider bounds the size of the results of a search, of code
  execution, of an MCP server or of Responses' other built-in tools (`ToolBound.open_results`
  names the first such tool): what bounds them is the context window, the most one sampling pass
  can read, which the pipeline fills in (`ToolBound.window`; a limited request on a target whose
  window is unknown is refused, 400 naming the tool).
- every further sampling pass (one per call at most) reads the prompt, the results so far and the
  output so far again as input: `ToolBound.input_tokens`. The output cap (`output_cap.py`)
  bounds the whole response's output, every pass together. A search model's chat completion
  searches before it answers: counted as one further pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tallygate.errors import InvalidRequest
from tallygate.pipeline.pricing import Rate

DEFAULT_TOOL_CALLS = 5  # provider-run tool calls a limited request may make when it sets no bound
RESULT_TOKENS = 8192  # input tokens one call's results are assumed to add (an allowance)
SERVER_LOOP_ITERATIONS = 10  # Anthropic's server-tool loop: sampling passes before pause_turn

# Responses tools that the client runs (their calls come back to it): no provider fee, no pass.
_CLIENT_TOOLS = frozenset({"function", "custom", "namespace", "local_shell", "shell", "apply_patch",
                           "computer_use_preview", "computer_use"})
# Responses tools billed outside the response's usage (image_generation: image output tokens at
# the image model's prices): neither metered nor bounded, so refused on limited requests.
_UNMETERED = frozenset({"image_generation"})
# Anthropic tools that the client runs (no `type`, or one of these): any other runs at Anthropic,
# in its server-tool loop (`tool_search_tool_*` too: each search is another sampling pass).
_ANTHROPIC_CLIENT_TOOLS = ("custom", "bash_", "text_editor_", "computer_", "memory_")
_OPENAI_SEARCH = ("web_search",)  # web_search, web_search_preview and their dated versions
_GB = {"1g": 1, "4g": 4, "16g": 16, "64g": 64}  # OpenAI container sizes, in 1 GB units


@dataclass(frozen=True, slots=True)
class ToolBound:
    """The most a request's provider-run tools can add: `calls` billed tool calls, web searches
    (`web`) or file searches (`file`); `code_units` 1 GB containers; `result_calls` calls that
    bring results back, each at most `result_tokens` input tokens; `passes` sampling passes after
    the first (at most one a call: `passes <= result_calls`)."""

    calls: int = 0
    web: bool = False
    file: bool = False
    code_units: int = 0
    result_calls: int = 0
    result_tokens: int = 0
    passes: int = 0
    open_results: str | None = None  # the field of a tool whose results no provider bounds in size
    window: int = 0  # with `open_results`: the most input tokens one pass can read (the context window)

    def input_tokens(self, prompt: int, output: int) -> int:
        """Input tokens at most for a `prompt`-token prompt with an `output`-token output cap:
        the first pass reads the prompt; every further pass reads it again with the output so far
        and the results of the calls made before it. With P further passes and C calls, the most
        results read is when all calls but P - 1 come first and one comes before each later pass:
        C + (C - 1) + ... + (C - P + 1) = P*C - P*(P - 1)/2 results. Results of no bounded size
        (`open_results`) are bounded by what a pass can read at all: each further pass reads at
        most the model's context window (`window`)."""
        p, c = self.passes, max(self.result_calls, self.passes)
        if self.open_results is not None:
            return prompt + p * max(self.window, prompt + output)
        return prompt + p * (prompt + output) + self.result_tokens * (p * c - p * (p - 1) // 2)

    def fees(self, rate: Rate) -> int:
        """Per-use fees at most, in picodollars, at `rate`."""
        per_call = max(rate.web_search if self.web else 0, rate.file_search if self.file else 0)
        return self.calls * per_call + self.code_units * rate.code_session


NO_TOOLS = ToolBound()


def _uses(tool: dict[str, Any], name: str, at: str) -> int | None:
    value = tool.get(name)
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise InvalidRequest(f"{at}.{name} must be a positive integer", param=f"{at}.{name}")
    return value


def is_search_model(model: str) -> bool:
    """A chat model that searches the web on every request (OpenAI's search models)."""
    return "-search-preview" in model or "-search-api" in model


def cap_tools(body: dict[str, Any], endpoint: str, upstream_models: list[str]) -> ToolBound:
    """Make `body` carry the bounds its reservation assumes (`max_uses`, `max_content_tokens`,
    `max_tool_calls` where the client set none) and return what its provider-run tools may add,
    over every target model in `upstream_models`. A bound that is not a positive integer is a
    400 naming it."""
    if endpoint == "chat":
        modalities = body.get("modalities")
        if body.get("audio") is not None or (isinstance(modalities, list) and "audio" in modalities):
            raise InvalidRequest("modalities: audio output is billed at audio token prices this gateway does not "
                                 "meter, so a request counted against a limit may not ask for it", param="modalities")
        if not any(is_search_model(m) for m in upstream_models):
            return NO_TOOLS
        n = body.get("n")
        choices = n if type(n) is int and n > 0 else 1
        return ToolBound(calls=choices, web=True, result_calls=choices, result_tokens=RESULT_TOKENS, passes=1,
                         open_results="web_search_options" if "web_search_options" in body else "model")
    tools = body.get("tools")
    tools = [t for t in tools if isinstance(t, dict)] if isinstance(tools, list) else []
    if endpoint == "messages":
        return _cap_anthropic(body, tools)
    if endpoint == "responses":
        return _cap_responses(body, tools)
    return NO_TOOLS


def _cap_anthropic(body: dict[str, Any], tools: list[dict[str, Any]]) -> ToolBound:
    searches = fetches = looped = 0
    size = RESULT_TOKENS  # the most one call's results may add
    code = False
    unbounded: str | None = None  # a tool whose results have no bounded size
    for i, tool in enumerate(tools):
        kind = tool.get("type")
        if not isinstance(kind, str):
            continue
        at = f"tools[{i}]"
        if kind.startswith("advisor_"):
            raise InvalidRequest(f"{at}.type {kind!r} runs another model at its own prices, billed outside the usage "
                                 "this gateway meters, so a request counted against a limit may not use it",
                                 param=f"{at}.type")
        if kind.startswith(("web_search_", "web_fetch_")):
            uses = _uses(tool, "max_uses", at)
            if uses is None:
                uses = tool["max_uses"] = DEFAULT_TOOL_CALLS
            if kind.startswith("web_search_"):
                searches += uses
                unbounded = unbounded or f"{at}.type"
            else:
                content = _uses(tool, "max_content_tokens", at)
                if content is None:
                    content = tool["max_content_tokens"] = RESULT_TOKENS
                fetches += uses
                size = max(size, content)
        elif kind.startswith("code_execution_"):
            code = True
            looped = SERVER_LOOP_ITERATIONS
            unbounded = unbounded or f"{at}.type"
        elif not kind.startswith(_ANTHROPIC_CLIENT_TOOLS):  # tool search, or a server tool newer than this list
            looped = SERVER_LOOP_ITERATIONS
            unbounded = unbounded or f"{at}.type"
    if body.get("mcp_servers"):
        looped = SERVER_LOOP_ITERATIONS
        unbounded = unbounded or "mcp_servers"
    calls = searches + fetches + looped
    if not calls:
        return NO_TOOLS
    return ToolBound(calls=searches, web=bool(searches), code_units=int(code), result_calls=calls,
                     result_tokens=size, passes=min(calls, SERVER_LOOP_ITERATIONS), open_results=unbounded)


def _cap_responses(body: dict[str, Any], tools: list[dict[str, Any]]) -> ToolBound:
    hosted = [t for t in tools if isinstance(t.get("type"), str) and t["type"] not in _CLIENT_TOOLS]
    if not hosted:
        return NO_TOOLS
    for i, tool in enumerate(tools):
        if tool.get("type") in _UNMETERED:
            raise InvalidRequest(f"tools[{i}].type {tool['type']!r} is billed by the provider outside the usage "
                                 "this gateway meters, so a request counted against a limit may not use it",
                                 param=f"tools[{i}].type")
    calls = _uses(body, "max_tool_calls", "body")
    if calls is None:
        calls = body["max_tool_calls"] = DEFAULT_TOOL_CALLS
    code_units = 0
    for tool in hosted:
        container = tool.get("container")
        if tool["type"] == "code_interpreter" and isinstance(container, dict):  # a new one: billed
            code_units = max(code_units, _GB.get(str(container.get("memory_limit") or "1g"), 64))
    first = next(i for i, t in enumerate(tools) if t in hosted)
    return ToolBound(calls=calls, web=any(t["type"].startswith(_OPENAI_SEARCH) for t in hosted),
                     file=any(t["type"] == "file_search" for t in hosted), code_units=code_units,
                     result_calls=calls, result_tokens=RESULT_TOKENS, passes=calls,
                     open_results=f"tools[{first}].type")


def responses_tool_use(response: object, body: dict[str, Any]) -> tuple[int, int, int]:
    """(web searches, file searches, 1 GB code containers) a Responses `response` object
    reports: its `web_search_call` and `file_search_call` output items, and the containers its
    `code_interpreter_call` items ran in, when the request had the tool create one."""
    output = response.get("output") if isinstance(response, dict) else None
    if not isinstance(output, list):
        return 0, 0, 0
    web = file = 0
    containers: set[str] = set()
    for item in output:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "web_search_call":
            web += 1
        elif kind == "file_search_call":
            file += 1
        elif kind == "code_interpreter_call" and isinstance(item.get("container_id"), str):
            containers.add(item["container_id"])
    units = 0
    if containers:
        for tool in body.get("tools") or ():
            container = tool.get("container") if isinstance(tool, dict) else None
            if isinstance(tool, dict) and tool.get("type") == "code_interpreter" and isinstance(container, dict):
                units = len(containers) * _GB.get(str(container.get("memory_limit") or "1g"), 64)
    return web, file, units


def anthropic_container(message: object, body: dict[str, Any]) -> int:
    """Code containers billed for a Messages response (or a stream's `message_delta.delta`):
    Anthropic reports the `container` when one ran; it is billed when the request gave a
    `code_execution_*` tool (web search and fetch tools of 2026 run their filtering code in a
    container too, free of charge)."""
    if not (isinstance(message, dict) and isinstance(message.get("container"), dict)):
        return 0
    tools = body.get("tools")
    return int(isinstance(tools, list) and any(
        isinstance(t, dict) and str(t.get("type")).startswith("code_execution_") for t in tools))


def chat_searches(upstream_model: str, body: dict[str, Any]) -> int:
    """Web searches a chat completion of `body` on `upstream_model` made: one per choice on a
    search model."""
    if not is_search_model(upstream_model):
        return 0
    n = body.get("n")
    return n if type(n) is int and n > 0 else 1
