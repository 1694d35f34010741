"""Provider-run tools in the fake upstream's answers, shaped as the real APIs return them.

The ``hosted-<k>`` scenario (model name) makes the fake run up to k provider-run tool calls,
taking the request's tools in turn, before its usual answer; each call's results add
``RESULT_TOKENS`` input tokens to the usage, as search results do upstream (``n`` with
``hosted-<k>-results-<n>``: results of any size, as no provider bounds a search's).

Anthropic (Messages): ``web_search_*`` tools give a ``server_tool_use`` block (name
``web_search``) and a ``web_search_tool_result`` block, counted in
``usage.server_tool_use.web_search_requests``; ``web_fetch_*`` likewise (``web_fetch_requests``);
``code_execution_*`` a ``bash_code_execution`` call and its result, and the message's
``container``. A tool's ``max_uses`` holds as upstream: a use past it gets a result whose content
is the error ``max_uses_exceeded`` and is not counted.

OpenAI (Responses): ``web_search*`` gives a ``web_search_call`` output item, ``file_search`` a
``file_search_call``, ``code_interpreter`` a ``code_interpreter_call`` (all in one container: the
tool's container id, or a new one); ``max_tool_calls`` bounds them all together.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

RESULT_TOKENS = 1500  # input tokens each call's results add
_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}{next(_ids):020d}"


@dataclass
class AnthropicRun:
    """What the fake's server tools did: content blocks, added input, usage and container."""

    blocks: list[dict] = field(default_factory=list)
    extra_input: int = 0
    searches: int = 0
    fetches: int = 0
    container: dict | None = None

    def usage(self) -> dict | None:
        if not (self.searches or self.fetches):
            return None
        return {"web_search_requests": self.searches, "web_fetch_requests": self.fetches}


def anthropic_run(body: dict, k: int, results: int = 0) -> AnthropicRun:
    run = AnthropicRun()
    size = results or RESULT_TOKENS
    tools = [t for t in body.get("tools") or () if isinstance(t, dict) and isinstance(t.get("type"), str)
             and t["type"].startswith(("web_search_", "web_fetch_", "code_execution_"))]
    used: dict[int, int] = {}
    for i in range(k if tools else 0):
        at = i % len(tools)
        tool = tools[at]
        kind = tool["type"]
        call_id = _id("srvtoolu_01")
        limit = tool.get("max_uses")
        over = isinstance(limit, int) and used.get(at, 0) >= limit
        used[at] = used.get(at, 0) + 1
        if kind.startswith("web_search_"):
            run.blocks.append({"type": "server_tool_use", "id": call_id, "name": "web_search",
                               "input": {"query": f"fake query {i}"}})
            content: object = {"type": "web_search_tool_result_error", "error_code": "max_uses_exceeded"} \
                if over else [{"type": "web_search_result", "url": f"https://example.com/{i}",
                               "title": f"Result {i}", "encrypted_content": "EqgfCioIARgBIiQ3YTAw",
                               "page_age": "April 30, 2025"}]
            run.blocks.append({"type": "web_search_tool_result", "tool_use_id": call_id, "content": content})
            run.searches += 0 if over else 1
        elif kind.startswith("web_fetch_"):
            url = f"https://example.com/page/{i}"
            run.blocks.append({"type": "server_tool_use", "id": call_id, "name": "web_fetch", "input": {"url": url}})
            content = {"type": "web_fetch_tool_result_error", "error_code": "max_uses_exceeded"} if over else {
                "type": "web_fetch_result", "url": url, "retrieved_at": "2025-08-25T10:30:00Z",
                "content": {"type": "document", "title": f"Page {i}", "citations": {"enabled": False},
                            "source": {"type": "text", "media_type": "text/plain", "data": "fake page"}}}
            run.blocks.append({"type": "web_fetch_tool_result", "tool_use_id": call_id, "content": content})
            run.fetches += 0 if over else 1
        else:
            run.blocks.append({"type": "server_tool_use", "id": call_id, "name": "bash_code_execution",
                               "input": {"command": "echo hi"}})
            run.blocks.append({"type": "bash_code_execution_tool_result", "tool_use_id": call_id, "content": {
                "type": "bash_code_execution_result", "stdout": "hi\n", "stderr": "", "return_code": 0,
                "content": []}})
            run.container = run.container or {"id": _id("container_011C"), "expires_at": "2025-08-25T11:30:00Z"}
        run.extra_input += 0 if over else size
    return run


def anthropic_block_events(blocks: list[dict]) -> list[tuple[str, dict]]:
    """The stream events of server-tool blocks: a call's input as one input_json_delta, a
    result whole in its content_block_start, as the real stream sends them."""
    import json

    out: list[tuple[str, dict]] = []
    for index, block in enumerate(blocks):
        if block["type"] == "server_tool_use":
            out.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                "content_block": {**block, "input": {}}}))
            out.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {
                "type": "input_json_delta", "partial_json": json.dumps(block["input"])}}))
        else:
            out.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                "content_block": block}))
        out.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    return out


_EVENTS = {"web_search_call": ("response.web_search_call", ("in_progress", "searching", "completed")),
           "file_search_call": ("response.file_search_call", ("in_progress", "searching", "completed")),
           "code_interpreter_call": ("response.code_interpreter_call", ("in_progress", "interpreting", "completed"))}


def responses_run(body: dict, k: int, results: int = 0) -> tuple[list[dict], int]:
    """(output items, added input tokens) of the fake's built-in tool calls."""
    tools = [t for t in body.get("tools") or () if isinstance(t, dict)
             and (str(t.get("type")).startswith("web_search") or t.get("type") in ("file_search", "code_interpreter"))]
    limit = body.get("max_tool_calls")
    calls = min(k, limit) if isinstance(limit, int) else k
    items: list[dict] = []
    container: str | None = None
    for i in range(calls if tools else 0):
        tool = tools[i % len(tools)]
        if tool["type"] == "file_search":
            items.append({"id": _id("fs_"), "type": "file_search_call", "status": "completed",
                          "queries": [f"fake query {i}"], "results": None})
        elif tool["type"] == "code_interpreter":
            named = tool.get("container")
            container = container or (named if isinstance(named, str) else _id("cntr_"))
            items.append({"id": _id("ci_"), "type": "code_interpreter_call", "status": "completed",
                          "code": "print(1)", "container_id": container, "outputs": None})
        else:
            items.append({"id": _id("ws_"), "type": "web_search_call", "status": "completed",
                          "action": {"type": "search", "query": f"fake query {i}", "sources": None}})
    return items, len(items) * (results or RESULT_TOKENS)


def responses_item_events(items: list[dict]) -> list[tuple[str, dict]]:
    """(type, data without sequence_number) of the stream events of built-in tool call items."""
    out: list[tuple[str, dict]] = []
    for index, item in enumerate(items):
        prefix, states = _EVENTS[item["type"]]
        out.append(("response.output_item.added", {"output_index": index,
                                                   "item": {**item, "status": "in_progress"}}))
        for state in states:
            out.append((f"{prefix}.{state}", {"output_index": index, "item_id": item["id"]}))
        out.append(("response.output_item.done", {"output_index": index, "item": item}))
    return out
