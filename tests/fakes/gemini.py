"""A fake Gemini API (generativelanguage.googleapis.com) on loopback, its wire format byte for byte.

    with FakeGemini() as g:
        g.root_url      # base URL for google-genai (`http_options={"base_url": ...}`) or the gateway

Routes: POST /v1beta/models/{model}:generateContent (JSON; /v1/ too) and
:streamGenerateContent?alt=sse (SSE, `data: {GenerateContentResponse}` + CRLF CRLF per chunk, no
terminator; the last chunk has `finishReason` and the full `usageMetadata`).
Auth: `x-goog-api-key: KEY` (or `?key=KEY`); none is Google's 403 PERMISSION_DENIED, a wrong
one its 400 INVALID_ARGUMENT with reason API_KEY_INVALID. Unknown fields are Google's 400
"Unknown name". Errors are `{"error": {"code", "message", "status"}}`.

Content: the reply is "Echo: <first 40 chars of the last user text>", one candidate token per
word; promptTokenCount = characters of all texts (system included) // 4, at least 1, plus 258
per inline image (model `bodytokens`: a token per byte of the whole body).
With `cachedContent` the prompt grows by CACHED_TOKENS, reported as
`cachedContentTokenCount`; with `thinkingConfig.thinkingBudget` > 0, THOUGHT_TOKENS of thinking
(`thoughtsTokenCount`, and a thought part with `includeThoughts`). With `tools`, unless the last
turn is a functionResponse, the answer calls the first declared function with
`{"query": <reply text>}`. `maxOutputTokens` below the reply's length cuts it (MAX_TOKENS).
Gemini 3 models (`gemini-3*`) sign their function calls, as Google documents: a `thoughtSignature`
beside each `functionCall` part (opaque base64), and a request whose history holds a model
`functionCall` part without a signature this fake issued is Google's 400 INVALID_ARGUMENT.
The model name picks failure scenarios as in FakeUpstream (fail-<status>, cut-stream, batch-error,
slowstream-<ms>), and long-<n> a reply of n words (n candidate tokens);
fail-404 is Google's NOT_FOUND for a model the API does not have.

Embeddings: POST /v1beta/models/{model}:batchEmbedContents takes `{"requests": [{"model":
"models/{model}", "content": {"parts": [{"text"}]}, "outputDimensionality"?, "taskType"?,
"title"?}]}` (at most 100, each naming the model of the URL) and answers `{"embeddings":
[{"values"}]}` (outputDimensionality values, default 3072), without token counts as documented;
POST :countTokens takes `{"contents"}` and answers `{"totalTokens"}` (the texts' characters // 4,
at least 1 a content). A model name containing `usage` adds `usageMetadata: {"promptTokenCount",
"totalTokenCount"}` to the embeddings answer, as newer API versions send.
"""
from __future__ import annotations

import asyncio
import base64
import json

from aiohttp import web

from . import wire
from .upstream import FakeUpstream

KEY = "gemini-test-key"
SIGNATURE_BYTES = b"\xfb\xff\xbf"  # issued thought signatures start so: base64 with "+", "/" and "="
CACHED_TOKENS = 64
THOUGHT_TOKENS = 12
IMAGE_TOKENS = 258
_TOP = frozenset({"contents", "systemInstruction", "tools", "toolConfig", "generationConfig",
                  "safetySettings", "cachedContent", "labels"})
_GENERATION = frozenset({"temperature", "topP", "topK", "maxOutputTokens", "stopSequences", "candidateCount",
                         "seed", "presencePenalty", "frequencyPenalty", "responseMimeType", "responseSchema",
                         "responseJsonSchema", "thinkingConfig", "responseModalities", "mediaResolution",
                         "responseLogprobs", "logprobs"})
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def google_error(code: int, message: str, details: list | None = None) -> dict:
    err: dict = {"code": code, "message": message, "status": _STATUS.get(code, "UNKNOWN")}
    if details:
        err["details"] = details
    return {"error": err}


def _texts(parts: list) -> list[str]:
    return [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]


class FakeGemini(FakeUpstream):
    """Gemini's generateContent and streamGenerateContent."""

    def __init__(self) -> None:
        super().__init__()
        self.signatures: set[str] = set()  # thought signatures issued (Gemini 3)

    def _unsigned_call(self, model: str, contents: list) -> str | None:
        """Google's refusal of a Gemini 3 history whose model function call lost its signature."""
        if not model.startswith("gemini-3"):
            return None
        for i, c in enumerate(contents):
            for j, part in enumerate(c.get("parts") or []):
                if c.get("role") == "model" and isinstance(part, dict) and "functionCall" in part \
                        and part.get("thoughtSignature") not in self.signatures:
                    return (f"Function call is missing a thought_signature in functionCall parts. This is required "
                            f"for tools to work correctly, and missing thought_signature may lead to degraded model "
                            f"performance. contents[{i}].parts[{j}]")
        return None

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._record], client_max_size=64 * 2**20)
        app.router.add_post("/{version:v1beta|v1}/models/{call}", self._generate)
        app.router.add_route("*", "/{tail:.*}", self._missing)
        return app

    @staticmethod
    def _json(status: int, payload: dict) -> web.Response:
        return web.Response(status=status, body=json.dumps(payload, indent=2).encode(),
                            content_type="application/json", charset="UTF-8")

    async def _missing(self, request: web.Request) -> web.Response:
        return self._json(404, google_error(404, f"Requested entity was not found. {request.path}"))

    def _auth(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if key == KEY:
            return None
        if not key:
            return self._json(403, google_error(403, "Method doesn't allow unregistered callers (callers without "
                                                     "established identity). Please use API Key or other form of "
                                                     "API consumer identity to call this API."))
        return self._json(400, google_error(400, "API key not valid. Please pass a valid API key.", [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
             "domain": "googleapis.com"}]))

    def _check(self, body: object) -> str | None:
        if not isinstance(body, dict):
            return "Invalid JSON payload received."
        for name in body:
            if name not in _TOP:
                return f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.'
        for name in body.get("generationConfig") or {}:
            if name not in _GENERATION:
                return (f'Invalid JSON payload received. Unknown name "{name}" at '
                        "'generation_config': Cannot find field.")
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return "* GenerateContentRequest.contents: contents is not specified"
        for i, c in enumerate(contents):
            if not isinstance(c, dict) or c.get("role") not in ("user", "model") or not c.get("parts"):
                return f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
        return None

    async def _embed(self, request: web.Request, model: str, method: str) -> web.Response:
        """batchEmbedContents and countTokens, checked as Google checks them."""
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        if method == "countTokens":
            contents = body.get("contents") if isinstance(body, dict) else None
            if not isinstance(contents, list) or not contents or set(body) - {"contents", "generateContentRequest"}:
                return self._json(400, google_error(400, "* CountTokensRequest.contents: contents is not specified"))
            counts = [max(1, sum(map(len, _texts(c.get("parts") or []))) // 4) for c in contents]
            return self._json(200, {"totalTokens": sum(counts)})
        requests = body.get("requests") if isinstance(body, dict) and set(body) == {"requests"} else None
        if not isinstance(requests, list) or not 0 < len(requests) <= 100:
            return self._json(400, google_error(400, "* BatchEmbedContentsRequest.requests: at most 100 requests "
                                                     "can be in one batch"))
        vectors, chars = [], 0
        for i, req in enumerate(requests):
            extra = set(req) - {"model", "content", "outputDimensionality", "taskType", "title"} \
                if isinstance(req, dict) else {"?"}
            texts = _texts((req.get("content") or {}).get("parts") or []) if not extra else []
            if extra or req.get("model") != f"models/{model}" or not texts:
                return self._json(400, google_error(400, f"* BatchEmbedContentsRequest.requests[{i}]: model or "
                                                         "content invalid"))
            size = req.get("outputDimensionality", 3072)
            if not isinstance(size, int) or not 0 < size <= 3072:
                return self._json(400, google_error(400, "outputDimensionality must be between 1 and 3072"))
            chars += sum(map(len, texts))
            vectors.append({"values": [round((len(texts[0]) % 9 + k) / 1000, 6) for k in range(size)]})
        answer: dict = {"embeddings": vectors}
        if "usage" in model:
            tokens = sum(max(1, sum(map(len, _texts(r["content"]["parts"]))) // 4) for r in requests)
            answer["usageMetadata"] = {"promptTokenCount": tokens, "totalTokenCount": tokens}
        return self._json(200, answer)

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["call"].partition(":")
        if method in ("batchEmbedContents", "countTokens"):
            return self._auth(request) or await self._embed(request, model, method)
        if method not in ("generateContent", "streamGenerateContent"):
            return await self._missing(request)
        denied = self._auth(request)
        if denied is not None:
            return denied
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        if (problem := self._check(body) or self._unsigned_call(model, body["contents"])) is not None:
            return self._json(400, google_error(400, problem))
        sc = wire.parse_scenario(model)
        if sc.kind == "fail":
            headers = {"retry-after": "2"} if sc.status == 429 else {}
            resp = self._json(sc.status, google_error(sc.status, self._not_found(model) if sc.status == 404
                                                      else f"fake failure {sc.status}"))
            resp.headers.update(headers)
            return resp
        chunks = self._answer(model, body)
        if method == "generateContent":
            return self._json(200, chunks[-1] | {"candidates": [self._whole(chunks)]})
        if request.query.get("alt") != "sse":
            return self._json(400, google_error(400, "this fake streams with alt=sse only"))
        resp = web.StreamResponse(status=200, headers={"Content-Disposition": "attachment"})
        resp.content_type = "text/event-stream"
        await resp.prepare(request)
        if sc.kind == "batch-error":  # two chunks (text) and Google's in-band error in one write
            error = google_error(500, "An internal error has occurred.")
            await resp.write(b"".join(b"data: " + json.dumps(c, separators=(",", ":")).encode() + b"\r\n\r\n"
                                      for c in [*chunks[:2], error]))
            await resp.write_eof()
            return resp
        for i, chunk in enumerate(chunks):
            if i == 2 and sc.kind == "cut-stream":
                request.transport.close()  # type: ignore[union-attr]
                return resp
            if i and sc.kind == "slowstream":
                await asyncio.sleep(sc.delay)
            await resp.write(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\r\n\r\n")
        await resp.write_eof()
        return resp

    @staticmethod
    def _not_found(model: str) -> str:
        """Google's answer for a model this API does not have (NOT_FOUND)."""
        return (f"models/{model} is not found for API version v1beta, or is not supported for generateContent. "
                "Call ListModels to see the list of available models and their supported methods.")

    @staticmethod
    def _whole(chunks: list[dict]) -> dict:
        """The candidate of a non-streamed answer: the stream's parts joined."""
        parts: list[dict] = []
        for chunk in chunks:
            for part in chunk["candidates"][0]["content"]["parts"]:
                if parts and "text" in part and "text" in parts[-1] and part.get("thought") == parts[-1].get("thought"):
                    parts[-1] = {**parts[-1], "text": parts[-1]["text"] + part["text"]}
                else:
                    parts.append(part)
        return {**chunks[-1]["candidates"][0], "content": {"parts": parts, "role": "model"}}

    def _answer(self, model: str, body: dict) -> list[dict]:
        """The answer as stream chunks (the JSON answer is their sum)."""
        contents = body["contents"]
        system = _texts((body.get("systemInstruction") or {}).get("parts") or [])
        chars = sum(len(t) for c in contents for t in _texts(c["parts"])) + sum(map(len, system))
        images = sum(1 for c in contents for p in c["parts"] if isinstance(p, dict) and "inlineData" in p)
        prompt = max(1, chars // 4) + IMAGE_TOKENS * images
        if wire.parse_scenario(model).kind == "bodytokens":  # a token per byte of the whole body
            prompt = max(1, wire.body_bytes(body))
        users = [c for c in contents if c["role"] == "user" and _texts(c["parts"])]
        text = "".join(_texts(users[-1]["parts"])).strip()[:40] if users else ""
        words = f"Echo: {text}".split(" ") if text else ["Hello", "from", "the", "fake."]
        if long := wire.parse_scenario(model).words:  # long-<n>: n words, unless maxOutputTokens cuts them
            words = ["w"] * long
        pieces = [words[0]] + [" " + w for w in words[1:]]
        config = body.get("generationConfig") or {}
        limit, finish = config.get("maxOutputTokens"), "STOP"
        if isinstance(limit, int) and limit < len(pieces):
            pieces, finish = pieces[:limit], "MAX_TOKENS"
        thinking = config.get("thinkingConfig") or {}
        # Google's JSON accepts proto field names too (google-genai sends thinking_budget on /v1)
        budget = thinking.get("thinkingBudget", thinking.get("thinking_budget")) or 0
        thoughts = THOUGHT_TOKENS if budget > 0 else 0
        cached = CACHED_TOKENS if body.get("cachedContent") else 0
        decls = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
        last = contents[-1]["parts"]
        call = decls and not any(isinstance(p, dict) and "functionResponse" in p for p in last)
        part_lists: list[list[dict]] = [[{"functionCall": {"name": decls[0]["name"],
                                                           "args": {"query": "".join(pieces)}}}]] if call \
            else [[{"text": p}] for p in pieces]
        if call and model.startswith("gemini-3"):
            signature = base64.b64encode(SIGNATURE_BYTES + f"sig-{len(self.signatures)}".encode()).decode()
            self.signatures.add(signature)
            part_lists[0][0]["thoughtSignature"] = signature
        if thoughts and (thinking.get("includeThoughts") or thinking.get("include_thoughts")):
            part_lists[0].insert(0, {"text": "Thinking it over.", "thought": True})
        output = len(pieces)
        response_id = wire.next_id("gemini_resp")
        chunks = []
        for i, parts in enumerate(part_lists):
            last_chunk = i == len(part_lists) - 1
            candidate: dict = {"content": {"parts": parts, "role": "model"}, "index": 0}
            usage: dict = {"promptTokenCount": prompt + cached, "totalTokenCount": prompt + cached}
            if last_chunk:
                candidate["finishReason"] = finish
                usage = {"promptTokenCount": prompt + cached, "candidatesTokenCount": output,
                         "totalTokenCount": prompt + cached + output + thoughts,
                         "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt + cached}]}
                if cached:
                    usage["cachedContentTokenCount"] = cached
                if thoughts:
                    usage["thoughtsTokenCount"] = thoughts
            chunks.append({"candidates": [candidate], "usageMetadata": usage, "modelVersion": model,
                           "responseId": response_id})
        return chunks
