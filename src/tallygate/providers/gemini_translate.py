"""Pure translation between OpenAI Chat Completions and Gemini's `generateContent` (no I/O).

Request: system/developer messages -> `systemInstruction`; user/assistant/tool turns ->
`contents` (`user` / `model` roles; tool results are `functionResponse` parts named after the
call they answer); text, base64 `image_url` / `file` data URLs -> `inlineData`; function tools
-> `functionDeclarations`; tool_choice -> `toolConfig.functionCallingConfig`; temperature,
top_p, top_k, max(_completion)_tokens, stop, n, seed, presence/frequency penalties,
response_format (json_object / json_schema) -> `generationConfig`; reasoning_effort ->
`thinkingConfig.thinkingBudget`; Gemini's own `cached_content` (a `cachedContents/...` name)
-> `cachedContent`. Refused with a 400 naming the field: logprobs, logit_bias, audio,
legacy functions, image URLs that are not data URLs (Gemini fetches no web URLs), and every
other field the client sets (service_tier, prediction, web_search_options ...:
`chat_fields.refuse_unread`; end-user identifiers and cache hints, which change no answer, are dropped).

Function calls: each gets an id unique in the conversation (`call_<random>_<n>`, unless Gemini
gave one). A Gemini 3 call's `thoughtSignature`, which Google refuses a later turn without,
rides in that id (`<id>__ts_<signature, URL-safe base64>`: the id is what every client sends back,
through chat, Messages and Responses alike) and is put back beside the `functionCall` part.

Usage: `promptTokenCount` (+ `toolUsePromptTokenCount`) is the prompt, cached part
`cachedContentTokenCount`; output is `candidatesTokenCount` + `thoughtsTokenCount`, the
thinking counted as reasoning tokens (Gemini bills it as output).
"""

from __future__ import annotations

import secrets

import orjson

from tallygate.errors import InvalidRequest, UpstreamHTTPError, UpstreamProtocolError
from tallygate.providers.chat_fields import chat_cap, refuse_unread
from tallygate.providers.chat_turns import chat_turns, data_url, invalid, tool_arguments
from tallygate.providers.http import retry_after
from tallygate.types import Reported, Usage, tokens

_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter",
           "RECITATION": "content_filter", "BLOCKLIST": "content_filter",
           "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
           "IMAGE_SAFETY": "content_filter"}
_THINKING_BUDGET = {"minimal": 0, "none": 0, "low": 1024, "medium": 8192, "high": 24576}
_REFUSED = ("logprobs", "top_logprobs", "logit_bias", "functions", "function_call", "audio")
_GENERATION = {"temperature": "temperature", "top_p": "topP", "top_k": "topK", "seed": "seed",
               "presence_penalty": "presencePenalty", "frequency_penalty": "frequencyPenalty"}
_MAX_MESSAGE = 300
_SIGNED = "__ts_"  # a tool call id's signature part (see the module docstring)
_TO_URLSAFE, _FROM_URLSAFE = str.maketrans("+/", "-_"), str.maketrans("-_", "+/")


def signed_call_id(call_id: str, signature: object) -> str:
    """`call_id` carrying a Gemini thought signature (URL-safe, no padding: a valid id everywhere)."""
    if not isinstance(signature, str) or not signature:
        return call_id
    return f"{call_id}{_SIGNED}{signature.translate(_TO_URLSAFE).rstrip('=')}"


def call_signature(call_id: object) -> str | None:
    """The thought signature a tool call id carries (`signed_call_id`), as Gemini issued it."""
    if not isinstance(call_id, str) or _SIGNED not in call_id:
        return None
    encoded = call_id.rsplit(_SIGNED, 1)[1].translate(_FROM_URLSAFE)
    return encoded + "=" * (-len(encoded) % 4)


_invalid = invalid


# --- request
def to_gemini(body: dict) -> dict:
    """OpenAI chat request -> Gemini `GenerateContentRequest` (the model goes in the URL)."""
    for param in _REFUSED:
        if body.get(param):
            raise InvalidRequest(f"{param} is not supported for Gemini models", param=param)
    system, contents = _contents(body.get("messages"))
    out: dict = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": system}]}
    if body.get("tools"):
        out["tools"] = [{"functionDeclarations": _declarations(body["tools"])}]
    if (config := _tool_config(body.get("tool_choice"))) is not None:
        out["toolConfig"] = {"functionCallingConfig": config}
    generation = _generation_config(body)
    if generation:
        out["generationConfig"] = generation
    if (cached := body.get("cached_content")) is not None:
        if not isinstance(cached, str) or not cached.startswith("cachedContents/"):
            raise _invalid("cached_content", "must be a Gemini cache name (cachedContents/...)")
        out["cachedContent"] = cached
    refuse_unread(body, _READ, "Gemini")
    return out


_READ = frozenset({*_REFUSED, *_GENERATION, "tools", "tool_choice", "cached_content", "max_tokens",
                   "max_completion_tokens", "n", "stop", "response_format", "reasoning_effort"})


def _contents(messages: object) -> tuple[str, list[dict]]:
    call_names: dict[str, str] = {}  # tool_call id -> function name, for the results
    return chat_turns(
        messages, model_role="model", key="parts",
        system=lambda msg, at: "".join(p["text"] for p in _parts(msg.get("content"), f"{at}.content", images=False)),
        user=lambda msg, at: _parts(msg.get("content"), f"{at}.content", images=True),
        assistant=lambda msg, at: _model_parts(msg, at, call_names),
        tool=lambda msg, at: [_function_response(msg, at, call_names)])


def _parts(content: object, at: str, *, images: bool) -> list[dict]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise _invalid(at, "must be a string or an array of content parts")
    parts: list[dict] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if not isinstance(text, str):
                raise _invalid(f"{at}[{j}].{kind}", "must be a string")
            parts.append({"text": text})
        elif kind == "image_url" and images:
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            parts.append({"inlineData": _inline_data(url, f"{at}[{j}].image_url.url")})
        elif kind == "file" and images:
            data = (part.get("file") or {}).get("file_data") if isinstance(part.get("file"), dict) else None
            parts.append({"inlineData": _inline_data(data, f"{at}[{j}].file.file_data")})
        else:
            raise _invalid(f"{at}[{j}].type", f"{kind!r} is not supported here for Gemini models")
    return parts


def _inline_data(url: object, param: str) -> dict:
    parsed = data_url(url)
    if parsed is None:
        raise _invalid(param, "must be a base64 data URL (Gemini fetches no web URLs)")
    return {"mimeType": parsed[0], "data": parsed[1]}


def _model_parts(msg: dict, at: str, call_names: dict[str, str]) -> list[dict]:
    parts = _parts(msg.get("content"), f"{at}.content", images=False)
    calls = msg.get("tool_calls") or []
    if not isinstance(calls, list):
        raise _invalid(f"{at}.tool_calls", "must be an array")
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _invalid(f"{at}.tool_calls[{j}].function.name", "must be a string")
        if isinstance(call.get("id"), str):
            call_names[call["id"]] = fn["name"]
        args = tool_arguments(fn.get("arguments"), f"{at}.tool_calls[{j}].function.arguments")
        part: dict = {"functionCall": {"name": fn["name"], "args": args}}
        if (signature := call_signature(call.get("id"))) is not None:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _function_response(msg: dict, at: str, call_names: dict[str, str]) -> dict:
    name = call_names.get(msg.get("tool_call_id"))  # type: ignore[arg-type]
    if name is None:
        raise _invalid(f"{at}.tool_call_id", "must name a tool call of an earlier assistant message")
    text = "".join(p["text"] for p in _parts(msg.get("content"), f"{at}.content", images=False))
    try:
        result = orjson.loads(text)
    except orjson.JSONDecodeError:
        result = text
    return {"functionResponse": {"name": name, "response": result if isinstance(result, dict) else {"result": result}}}


def _declarations(tools: object) -> list[dict]:
    if not isinstance(tools, list):
        raise _invalid("tools", "must be an array")
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _invalid(f"tools[{i}]", "must be a function tool with a name")
        decl = {"name": fn["name"]}
        if fn.get("description"):
            decl["description"] = fn["description"]
        if fn.get("parameters"):
            decl["parametersJsonSchema"] = fn["parameters"]
        out.append(decl)
    return out


def _tool_config(choice: object) -> dict | None:
    if choice is None:
        return None
    if choice in ("auto", "none", "required"):
        return {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY"}[choice]}  # type: ignore[index]
    fn = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(fn, dict) and isinstance(fn.get("name"), str):
        return {"mode": "ANY", "allowedFunctionNames": [fn["name"]]}
    raise _invalid("tool_choice", 'must be "auto", "none", "required" or a function choice')


def _generation_config(body: dict) -> dict:
    config: dict = {}
    for ours, theirs in _GENERATION.items():
        value = body.get(ours)
        if value is not None:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise _invalid(ours, "must be a number")
            config[theirs] = value
    limit = chat_cap(body)
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise _invalid("max_tokens", "must be a positive integer")
        config["maxOutputTokens"] = limit
    if (n := body.get("n")) is not None:
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 8:
            raise _invalid("n", "must be an integer between 1 and 8")
        if n != 1:
            config["candidateCount"] = n
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _invalid("stop", "must be a string or an array of strings")
        config["stopSequences"] = stops
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema") if fmt["type"] == "json_schema" else None
        if isinstance(schema, dict):
            config["responseJsonSchema"] = schema
    elif fmt is not None and fmt != {"type": "text"}:
        raise _invalid("response_format", "must be text, json_object or json_schema")
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in _THINKING_BUDGET:
            raise _invalid("reasoning_effort", f"must be one of {', '.join(_THINKING_BUDGET)}")
        config["thinkingConfig"] = {"thinkingBudget": _THINKING_BUDGET[effort]}
    return config


# --- response
def gemini_usage(meta: object) -> Usage:
    """Gemini `usageMetadata` in OpenAI's meaning (thinking is output, and reasoning)."""
    meta = meta if isinstance(meta, dict) else {}
    thoughts = tokens(meta.get("thoughtsTokenCount"))
    return Usage(input_tokens=tokens(meta.get("promptTokenCount")) + tokens(meta.get("toolUsePromptTokenCount")),
                 output_tokens=tokens(meta.get("candidatesTokenCount")) + thoughts,
                 cached_tokens=tokens(meta.get("cachedContentTokenCount")), reasoning_tokens=thoughts)


def _candidate_message(candidate: dict, call_ids: list[str], prefix: str) -> tuple[str, list[dict]]:
    """(visible text, OpenAI tool calls) of one candidate; thought parts are left out. `call_ids`:
    the ids given so far in this response, `prefix` its own random part (see the module docstring)."""
    parts = (candidate.get("content") or {}).get("parts") or []
    texts, calls = [], []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict) or part.get("thought"):
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(call := part.get("functionCall"), dict):
            call_id = signed_call_id(call.get("id") or f"call_{prefix}_{len(call_ids)}",
                                     part.get("thoughtSignature"))
            call_ids.append(call_id)
            calls.append({"id": call_id, "type": "function", "function": {
                "name": call.get("name"), "arguments": orjson.dumps(call.get("args") or {}).decode()}})
    return "".join(texts), calls


def _finish(reason: object, has_calls: bool) -> str | None:
    if not isinstance(reason, str):
        return None
    return "tool_calls" if has_calls and reason == "STOP" else _FINISH.get(reason, "stop")


def from_gemini(resp: dict, request_id: str, created: int, model: str) -> tuple[dict, Usage]:
    """Gemini `GenerateContentResponse` -> (OpenAI `chat.completion`, Usage)."""
    candidates = resp.get("candidates")
    if not isinstance(candidates, list):
        if isinstance(resp.get("promptFeedback"), dict):  # the prompt itself was blocked
            candidates = [{"finishReason": "SAFETY"}]
        else:
            raise UpstreamProtocolError("gemini returned a response without candidates")
    choices = []
    calls_prefix = secrets.token_hex(8)
    for i, cand in enumerate(c for c in candidates if isinstance(c, dict)):
        text, calls = _candidate_message(cand, [], calls_prefix)
        message: dict = {"role": "assistant", "content": text or (None if calls else ""), "refusal": None}
        if calls:
            message["tool_calls"] = calls
        choices.append({"index": cand.get("index", i), "message": message, "logprobs": None,
                        "finish_reason": _finish(cand.get("finishReason"), bool(calls)) or "stop"})
    usage = gemini_usage(resp.get("usageMetadata"))
    return {"id": request_id, "object": "chat.completion", "created": created, "model": model,
            "choices": choices, "usage": usage.to_openai()}, usage


class GeminiStreamTranslator:
    """Gemini stream chunks in (one `GenerateContentResponse` each), OpenAI chunks out. The
    stream is complete once a chunk carried a `finishReason` (`finished`), and nothing more can
    come once each of the `candidates` asked for has had one (`complete`); `usage` is the latest
    metadata."""

    def __init__(self, request_id: str, created: int, model: str, candidates: int = 1,
                 reported: Reported | None = None) -> None:
        self._head = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model}
        self._meta: object = None
        self._reported = reported  # given the prompt's counts of the first `usageMetadata`
        self._started = False
        self._calls: list[str] = []
        self._calls_prefix = secrets.token_hex(8)
        self._candidates = candidates
        self._ended: set[object] = set()  # the indexes of the candidates that had a finishReason
        self.finished = False
        self.complete = False

    @property
    def usage(self) -> Usage:
        return gemini_usage(self._meta)

    def feed(self, data: dict) -> list[dict]:
        if data.get("usageMetadata") is not None:
            if self._meta is None and self._reported is not None:
                self._reported.prompt = gemini_usage(data["usageMetadata"]).prompt()
            self._meta = data["usageMetadata"]
        out = []
        if not self._started:
            self._started = True
            out.append(self._chunk({"role": "assistant", "content": ""}))
        for cand in data.get("candidates") or []:
            if not isinstance(cand, dict):
                continue
            first = len(self._calls)
            text, calls = _candidate_message(cand, self._calls, self._calls_prefix)
            delta: dict = {}
            if text:
                delta["content"] = text
            if calls:
                delta["tool_calls"] = [{"index": first + k, **c} for k, c in enumerate(calls)]
            finish = _finish(cand.get("finishReason"), bool(self._calls))
            if delta or finish:
                out.append(self._chunk(delta, finish, cand.get("index", 0)))
            if finish is not None:
                self.finished = True
                self._ended.add(cand.get("index", 0))
                self.complete = len(self._ended) >= self._candidates
        if data.get("promptFeedback") and not data.get("candidates"):
            out.append(self._chunk({}, "content_filter"))
            self.finished = self.complete = True
        return out

    def usage_chunk(self) -> dict:
        return {**self._head, "choices": [], "usage": self.usage.to_openai()}

    def _chunk(self, delta: dict, finish: str | None = None, index: int = 0) -> dict:
        return {**self._head, "choices": [{"index": index, "delta": delta, "logprobs": None,
                                           "finish_reason": finish}]}


# --- errors
_AUTH_REASONS = (b"API_KEY_INVALID", b"API_KEY_SERVICE_BLOCKED", b"UNAUTHENTICATED")


def gemini_error(provider: str, status: int, body: bytes, headers: object = None) -> UpstreamHTTPError:
    """A Google error (`{"error": {"code", "message", "status", "details"}}`) as
    UpstreamHTTPError. A bad API key is Gemini's 400 `API_KEY_INVALID`: our credentials, so 401."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if status == 400 and any(reason in body for reason in _AUTH_REASONS):
        status = 401
    return UpstreamHTTPError(status, f"provider {provider!r} returned HTTP {status}",
                             detail=message[:_MAX_MESSAGE] if isinstance(message, str) else None,
                             retry_after=retry_after(headers), model_missing=google_model_missing(error))


def google_model_missing(error: object) -> bool:
    """Whether a Google error says the model is not there: `NOT_FOUND` about a model ("models/x
    is not found for API version v1beta", Vertex's "Publisher Model `...` was not found")."""
    message = error.get("message") if isinstance(error, dict) else None
    return (isinstance(error, dict) and error.get("status") == "NOT_FOUND" and isinstance(message, str)
            and "model" in message.lower())
