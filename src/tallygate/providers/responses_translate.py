"""Pure translation of OpenAI's Responses API onto Chat Completions (no I/O).

`/v1/responses` served by a provider other than `openai` (Anthropic through its chat
translation, any OpenAI-compatible server, the mock): `responses_to_chat` builds the chat
request, `chat_to_response` the Response object, `ChatToResponsesStream` the typed SSE events.
`responses_usage` reads a native Response's usage.

Request policy:
- mapped: input (a string or message items with input_text / input_image / input_file parts,
  function_call, function_call_output, custom_tool_call and custom_tool_call_output items),
  instructions, max_output_tokens, temperature, top_p, tools (function, custom and namespace:
  see `responses_tools`), tool_choice, parallel_tool_calls, stream, user / safety_identifier,
  text.format (json_schema / json_object), text.verbosity, reasoning.effort, service_tier,
  prompt_cache_key (chat's fields of those names).
- dropped: reasoning items of earlier turns, reasoning.summary (no reasoning comes back to
  summarise), web search tools (`responses_tools`), `include`
  values that ask for output the translation never has (encrypted reasoning ...),
  client_metadata, truncation "disabled" (what the translation does anyway), max_tool_calls (a
  bound on built-in tool calls, of which a translation runs none). Answered on the
  Response object itself: `metadata` (echoed, as OpenAI attaches it to the response) and `store`
  (the response says `store: false`: nothing is stored).
- refused with a 400 naming the field: previous_response_id and conversation (the gateway keeps
  no state for translated requests), background, prompt, truncation "auto", other
  built-in tools (file search ...), item references and file ids, log probabilities
  (top_logprobs, or include message.output_text.logprobs: chat's translations return none),
  and every other top-level field (`chat_fields.refuse_unread`).
A chat field a provider refuses is renamed to the Responses field it came from (`param_origins`).
"""

from __future__ import annotations

import time

from tallygate.errors import InvalidRequest
from tallygate.providers.chat_fields import refuse_unread
from tallygate.providers.param_origins import ParamOrigins
from tallygate.providers.responses_tools import (
    ToolNames,
    call_input,
    call_item,
    chat_tool_choice,
    custom_input,
    to_chat_tools,
)
from tallygate.types import Usage, tokens

_REFUSED = {"previous_response_id": "previous_response_id (stored responses)",
            "conversation": "conversation (stored conversations)",
            "background": "background responses", "prompt": "prompt templates"}
_PASSED = ("temperature", "top_p")
# chat's fields -> the Responses fields they are made from (for a provider's 400, `param_origins`)
_ORIGINS = {"messages": "input", "response_format": "text.format", "max_tokens": "max_output_tokens",
            "reasoning_effort": "reasoning.effort", "tools": "tools", "tool_choice": "tool_choice",
            "parallel_tool_calls": "parallel_tool_calls", "user": "user", "temperature": "temperature",
            "top_p": "top_p", "verbosity": "text.verbosity",
            "service_tier": "service_tier", "prompt_cache_key": "prompt_cache_key"}


def param_origins() -> ParamOrigins:
    """A record of where `responses_to_chat`'s chat fields come from, for it to fill."""
    return ParamOrigins(_ORIGINS, {".tool_call_id": ".call_id"},
                        {".image_url.url": ".image_url", ".file.file_data": ".file_data"})


def _invalid(param: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{param} {problem}", param=param)


def _untranslatable(param: str, what: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {what} is not supported for models that are not served by an "
                          "`openai` provider (the gateway stores no responses)", param=param)


# --- request
def responses_to_chat(body: dict, upstream_model: str, origins: ParamOrigins | None = None) -> dict:
    """Responses request -> chat request; policy in the module docstring. `origins` (from
    `param_origins()`) records where each chat message, part and tool call comes from."""
    origins = origins or param_origins()
    for name, what in _REFUSED.items():
        if body.get(name):
            raise _untranslatable(name, what)
    include = body.get("include")
    for param, asked in (("top_logprobs", bool(body.get("top_logprobs"))),
                         ("include", isinstance(include, list) and "message.output_text.logprobs" in include)):
        if asked:
            raise InvalidRequest(f"{param}: log probabilities are not returned for models that are not served "
                                 "by an `openai` provider", param=param)
    messages: list[dict] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _invalid("instructions", "must be a string")
        messages.append({"role": "system", "content": instructions})
        origins.message("instructions")
    messages += _input(body.get("input"), origins)
    out: dict = {"model": upstream_model, "messages": messages}
    if body.get("max_output_tokens") is not None:
        out["max_tokens"] = body["max_output_tokens"]
    for name in _PASSED:
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stream"):
        out["stream"] = True
    tools = to_chat_tools(body["tools"]) if body.get("tools") is not None else []
    choice = chat_tool_choice(body["tool_choice"]) if body.get("tool_choice") is not None else None
    if tools:  # chat takes tool_choice and parallel_tool_calls only with tools
        out["tools"] = tools
        if choice is not None:
            out["tool_choice"] = choice
        if body.get("parallel_tool_calls") is not None:
            out["parallel_tool_calls"] = body["parallel_tool_calls"]
    if isinstance(user := body.get("user") or body.get("safety_identifier"), str):
        out["user"] = user
        if not body.get("user"):
            origins.top = {**origins.top, "user": "safety_identifier"}
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        out["response_format"] = {"type": "json_schema", "json_schema": {
            k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        out["response_format"] = {"type": "json_object"}
    effort = (body.get("reasoning") or {}).get("effort") if isinstance(body.get("reasoning"), dict) else None
    if isinstance(effort, str):
        out["reasoning_effort"] = effort
    verbosity = (body.get("text") or {}).get("verbosity") if isinstance(body.get("text"), dict) else None
    if verbosity is not None:
        out["verbosity"] = verbosity
    for name in _SAME_NAME:
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("truncation") not in (None, "disabled"):
        raise _untranslatable("truncation", "automatic truncation")
    refuse_unread(body, _READ, "chat-translated")
    return out


_SAME_NAME = ("service_tier", "prompt_cache_key")
_READ = frozenset({*_REFUSED, *_PASSED, *_SAME_NAME, "metadata", "input", "instructions", "max_output_tokens", "tools",
                   "tool_choice", "parallel_tool_calls", "user", "safety_identifier", "text", "reasoning",
                   "include", "top_logprobs", "store", "truncation", "client_metadata", "max_tool_calls"})


def _input(value: object, origins: ParamOrigins) -> list[dict]:
    if isinstance(value, str):
        origins.message("input")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise _invalid("input", "must be a string or a non-empty array of input items")
    out: list[dict] = []
    for i, item in enumerate(value):
        at = f"input[{i}]"
        if not isinstance(item, dict):
            raise _invalid(at, "must be an input item (an object)")
        kind = item.get("type", "message")
        if kind == "message":
            out.append(_message(item, at))
            index = origins.message(at)
            for j in range(len(out[-1]["content"]) if isinstance(out[-1]["content"], list) else 0):
                origins.inner(index, "content", j, f"{at}.content[{j}]")  # parts map one to one
        elif kind in ("function_call", "custom_tool_call"):
            _strings(item, at, "call_id", "name", "arguments" if kind == "function_call" else "input")
            call = call_input(item)
            if out and out[-1]["role"] == "assistant" and "tool_calls" in out[-1]:
                out[-1]["tool_calls"].append(call)
                index = origins.last()
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
                index = origins.message(at)
            origins.inner(index, "tool_calls", len(out[-1]["tool_calls"]) - 1, at)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            _strings(item, at, "call_id")
            origins.message(at)
            output = item.get("output")
            out.append({"role": "tool", "tool_call_id": item["call_id"],
                        "content": output if isinstance(output, str) else _text(output, f"{at}.output")})
        elif kind != "reasoning":
            raise _untranslatable(f"{at}.type", f"an input item of type {kind!r}")
    return out


def _strings(item: dict, at: str, required: str, *others: str) -> None:
    """`required` must be a string, each of `others` a string when present."""
    for name in (required, *others):
        value = item.get(name)
        if not isinstance(value, str) and (name == required or value is not None):
            raise _invalid(f"{at}.{name}", "must be a string")


def _message(item: dict, at: str) -> dict:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise _invalid(f"{at}.role", "must be one of user, assistant, system, developer")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise _invalid(f"{at}.content", "must be a string or an array of content parts")
    if role != "user":
        return {"role": role, "content": _text(content, f"{at}.content")}
    parts: list[dict] = []
    for j, part in enumerate(content):
        where = f"{at}.content[{j}]"
        if not isinstance(part, dict):
            raise _invalid(where, "must be a content part (an object)")
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            _strings(part, where, "text")
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image = {"url": part["image_url"]}
            if part.get("detail") in ("low", "high"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file" and isinstance(part.get("file_data"), str):
            parts.append({"type": "file", "file": {"filename": part.get("filename") or "file",
                                                   "file_data": part["file_data"]}})
        else:
            raise _untranslatable(where, f"a {kind!r} part without inline data")
    if all(p["type"] == "text" for p in parts):
        return {"role": role, "content": "".join(p["text"] for p in parts)}
    return {"role": role, "content": parts}


def _text(content: object, param: str) -> str:
    if isinstance(content, list) and all(isinstance(p, dict) and isinstance(p.get("text"), str)
                                         for p in content):
        return "".join(p["text"] for p in content)
    raise _invalid(param, "must be text parts")


# --- response
def responses_usage(usage: object) -> Usage:
    """A Responses `usage` object in the gateway's meaning (cached and reasoning tokens included)."""
    if not isinstance(usage, dict):
        return Usage()
    ind = usage.get("input_tokens_details")
    outd = usage.get("output_tokens_details")
    return Usage(input_tokens=tokens(usage.get("input_tokens")), output_tokens=tokens(usage.get("output_tokens")),
                 cached_tokens=tokens(ind.get("cached_tokens")) if isinstance(ind, dict) else 0,
                 cache_write_tokens=tokens(ind.get("cache_write_tokens")) if isinstance(ind, dict) else 0,
                 reasoning_tokens=tokens(outd.get("reasoning_tokens")) if isinstance(outd, dict) else 0)


def to_responses_usage(usage: Usage) -> dict:
    return {"input_tokens": usage.input_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens,
                                     "cache_write_tokens": usage.cache_write_tokens},
            "output_tokens": usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
            "total_tokens": usage.input_tokens + usage.output_tokens}


def response_object(response_id: str, model: str, body: dict, output: list[dict], status: str,
                    usage: Usage | None, created: int | None = None) -> dict:
    """A Response object echoing the request's settings, as the Responses API returns it."""
    return {
        "id": response_id, "object": "response", "created_at": created or int(time.time()),
        "status": status, "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "model": model, "output": output, "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None, "reasoning": {"effort": None, "summary": None}, "store": False,
        "temperature": body.get("temperature"), "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
        "top_p": body.get("top_p"), "truncation": "disabled", "user": body.get("user"),
        "metadata": body.get("metadata") or {}, "max_tool_calls": body.get("max_tool_calls"),
        "usage": None if usage is None else to_responses_usage(usage),
    }


def _text_item(item_id: str, text: str, status: str = "completed") -> dict:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def chat_to_response(data: dict, usage: Usage, response_id: str, model: str, body: dict) -> dict:
    """OpenAI `chat.completion` -> Response object (the first choice)."""
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    msg = choice.get("message")
    msg = msg if isinstance(msg, dict) else {}
    output: list[dict] = []
    names = ToolNames(body.get("tools"))
    if isinstance(msg.get("content"), str) and msg["content"]:
        output.append(_text_item(f"msg_{response_id}", msg["content"]))
    for i, call in enumerate(msg.get("tool_calls") or ()):
        if not isinstance(call, dict):
            continue
        fn = call["function"] if isinstance(call.get("function"), dict) else {}
        output.append(call_item(f"fc_{response_id}_{i}", call.get("id"), names.get(fn.get("name")),
                                str(fn.get("arguments") or "")))
    status = "incomplete" if choice.get("finish_reason") == "length" else "completed"
    return response_object(response_id, model, body, output, status, usage)


# --- stream
class ChatToResponsesStream:
    """OpenAI chat chunks in, Responses SSE events `(type, data)` out, `sequence_number` in order.

    `feed` takes one chunk; `finish(usage)` closes the open item and emits `response.completed`
    (or `response.incomplete` when the output hit its token limit) with the whole response.
    """

    def __init__(self, response_id: str, model: str, body: dict) -> None:
        self._id, self._model, self._body = response_id, model, body
        self._created = int(time.time())
        self._seq = 0
        self._started = False
        self._output: list[dict] = []
        self._open: dict | None = None          # the item being streamed
        self._text: list[str] = []
        self._args: list[str] = []              # the open tool call's argument pieces
        self._tools: dict[int, int] = {}        # chat tool_calls index -> output index
        self._names = ToolNames(body.get("tools"))
        self.finish_reason: str | None = None

    def _ev(self, kind: str, **data: object) -> tuple[str, dict]:
        self._seq += 1
        return kind, {"type": kind, "sequence_number": self._seq - 1, **data}

    def _response(self, status: str, usage: Usage | None) -> dict:
        return response_object(self._id, self._model, self._body, self._output, status, usage, self._created)

    def start(self) -> list[tuple[str, dict]]:
        self._started = True
        return [self._ev("response.created", response=self._response("in_progress", None)),
                self._ev("response.in_progress", response=self._response("in_progress", None))]

    def feed(self, chunk: dict) -> list[tuple[str, dict]]:
        out = [] if self._started else self.start()
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self._open is None or self._open["type"] != "message":
                    out += self._start_message()
                self._text.append(text)
                out.append(self._ev("response.output_text.delta", item_id=self._open["id"],  # type: ignore[index]
                                    output_index=len(self._output), content_index=0, delta=text, logprobs=[]))
            for call in delta.get("tool_calls") or ():
                out += self._tool_delta(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def _start_message(self) -> list[tuple[str, dict]]:
        out = self._close()
        self._open, self._text = _text_item(f"msg_{self._id}_{len(self._output)}", "", "in_progress"), []
        self._open["content"] = []
        idx = len(self._output)
        out.append(self._ev("response.output_item.added", output_index=idx, item=dict(self._open, content=[])))
        out.append(self._ev("response.content_part.added", item_id=self._open["id"], output_index=idx,
                            content_index=0, part={"type": "output_text", "text": "", "annotations": [],
                                                   "logprobs": []}))
        return out

    def _tool_delta(self, call: dict) -> list[tuple[str, dict]]:
        out: list[tuple[str, dict]] = []
        idx = call.get("index", 0)
        fn = call.get("function") or {}
        if idx not in self._tools:
            out += self._close()
            self._tools[idx] = len(self._output)
            self._open = call_item(f"fc_{self._id}_{len(self._output)}", call.get("id"),
                                   self._names.get(fn.get("name")), "", "in_progress")
            out.append(self._ev("response.output_item.added", output_index=len(self._output),
                                item=dict(self._open)))
            self._args = []
        args = fn.get("arguments")
        if isinstance(args, str) and args and self._open is not None and self._tools[idx] == len(self._output):
            self._args.append(args)
            if self._open["type"] == "function_call":  # a custom tool's input is sent whole, at its end
                self._open["arguments"] += args
                out.append(self._ev("response.function_call_arguments.delta", item_id=self._open["id"],
                                    output_index=len(self._output), delta=args))
        return out

    def _close(self) -> list[tuple[str, dict]]:
        item, idx = self._open, len(self._output)
        if item is None:
            return []
        self._open = None
        item["status"] = "completed"
        out = []
        if item["type"] == "message":
            text = "".join(self._text)
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            item["content"] = [part]
            out += [self._ev("response.output_text.done", item_id=item["id"], output_index=idx,
                             content_index=0, text=text, logprobs=[]),
                    self._ev("response.content_part.done", item_id=item["id"], output_index=idx,
                             content_index=0, part=part)]
        elif item["type"] == "custom_tool_call":
            item["input"] = custom_input("".join(self._args))
            out += [self._ev("response.custom_tool_call_input.delta", item_id=item["id"], output_index=idx,
                             delta=item["input"]),
                    self._ev("response.custom_tool_call_input.done", item_id=item["id"], output_index=idx,
                             input=item["input"])]
        else:
            out.append(self._ev("response.function_call_arguments.done", item_id=item["id"],
                                output_index=idx, name=item["name"], arguments=item["arguments"]))
        self._output.append(item)
        out.append(self._ev("response.output_item.done", output_index=idx, item=item))
        return out

    def finish(self, usage: Usage) -> list[tuple[str, dict]]:
        out = ([] if self._started else self.start()) + self._close()
        status = "incomplete" if self.finish_reason == "length" else "completed"
        out.append(self._ev(f"response.{status}", response=self._response(status, usage)))
        return out
