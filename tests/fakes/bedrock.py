"""A fake AWS Bedrock Runtime (Converse / ConverseStream) on loopback, its wire format byte for byte.

    with FakeBedrock() as b:
        b.root_url        # endpoint_url for boto3's bedrock-runtime client, or the gateway's base_url

Routes: POST /model/{modelId}/converse (JSON) and /model/{modelId}/converse-stream
(`application/vnd.amazon.eventstream`: binary frames, each with its prelude and message CRC32,
`:event-type` / `:content-type` / `:message-type` headers and a JSON payload; events
messageStart, contentBlockStart, contentBlockDelta, contentBlockStop, messageStop, metadata).

Auth, as on AWS: a SigV4 `Authorization` header whose signature botocore recomputes from the
request and the fake's secret (ACCESS_KEY / SECRET_KEY, region REGION, service `bedrock`) —
a wrong signature or unknown key is 403 (`x-amzn-ErrorType: InvalidSignatureException` /
`UnrecognizedClientException`) — or `Authorization: Bearer API_KEY` (a Bedrock API key). With
`session_tokens` set (temporary credentials, `FakeAwsCredentials`), a signed request must carry
one of them in `X-Amz-Security-Token`.
Errors carry `x-amzn-ErrorType` and `{"message": ...}`.

Content: the reply is "Echo: <first 40 chars of the last user text>", one output token per word;
inputTokens = characters of all texts // 4 (at least 1; model `bodytokens`: a token per byte of
the whole body). With `toolConfig`, unless the last user
turn holds a toolResult, the answer uses the first tool with `{"query": <reply>}`. A model id
containing `cached-<n>` reports n `cacheReadInputTokens`, `cachewrite-<n>` n
`cacheWriteInputTokens` (beside inputTokens, as Converse does). `fail-<status>` answers that
status (429: ThrottlingException, 503 ServiceUnavailableException, 400 ValidationException);
`not-ready` answers ModelNotReadyException (HTTP 429, as AWS does); `not-in-region` the
ValidationException AWS answers for a model id the region does not offer ("The provided model
identifier is invalid.") and `on-demand` the one for a model served only through an inference
profile; `aws-<Exception>` answers
that exception of Bedrock Runtime's list with the HTTP status AWS documents for it (e.g.
`aws-ServiceQuotaExceededException`: 400, `aws-ModelTimeoutException`: 408);
Converse prompt caching: the text before the last `cachePoint` block (tools, then system, then
messages) is a cache write the first time, a cache read after (`cacheWriteInputTokens` /
`cacheReadInputTokens`, out of inputTokens); a write made by a `cachePoint` with `ttl: "1h"` is
listed in `cacheDetails` as `{"ttl": "1h", "inputTokens"}` (else as "5m").
Content blocks are checked as Converse's union types are: one member each (text, image,
document, toolUse, toolResult, reasoningContent, cachePoint), a cachePoint exactly
`{"type": "default"}` with an optional `ttl` of "5m" or "1h"; anything else is a 400
ValidationException, as AWS answers it.
Embeddings on POST /model/{id}/invoke for `amazon.titan-embed-text-*` (`{"inputText"}` ->
`{"embedding", "inputTextTokenCount"}`) and `cohere.embed-*` (`{"texts", "input_type"}` ->
`{"embeddings"}`, the count in `X-Amzn-Bedrock-Input-Token-Count`).
`stream-error` sends a throttlingException frame mid-stream; `batch-error` sends it in one write with
the first four events (text among them).

CountTokens: POST /model/{modelId}/count-tokens with `{"input": {"invokeModel": {"body": <base64
of the InvokeModel body>}}}` (or `{"converse": {...}}`) answers `{"inputTokens"}`; cross-region
profile ids are a ValidationException, as on AWS.
InvokeModel for Claude: POST /model/{modelId}/invoke and /invoke-with-response-stream take the
Anthropic Messages body without `model` and with `anthropic_version: bedrock-2023-05-31`
(optional `anthropic_beta` list), checked like FakeUpstream's /v1/messages; they answer the
Anthropic Message JSON, or `chunk` frames whose payload is `{"bytes": <base64 event JSON>}`; the
failure scenarios above (`fail-<status>`, `not-ready`, `aws-<Exception>`) answer as on Converse; with
`prompt_caching`, Anthropic's `cache_control` caching is emulated as FakeUpstream does.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import struct

from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from . import wire, wire_anthropic
from .upstream import FakeUpstream

ACCESS_KEY, SECRET_KEY, REGION, API_KEY = "AKIAFAKEBEDROCK00001", "fake-secret-key", "us-east-1", "bedrock-api-key-1"
_ERRORS = {400: "ValidationException", 403: "AccessDeniedException", 404: "ResourceNotFoundException",
           429: "ThrottlingException", 500: "InternalServerException", 503: "ServiceUnavailableException"}
# Bedrock Runtime's exceptions and the HTTP status AWS documents for each (Converse, InvokeModel).
AWS_EXCEPTIONS = {"AccessDeniedException": 403, "InternalServerException": 500, "ModelErrorException": 424,
                  "ModelNotReadyException": 429, "ModelTimeoutException": 408, "ResourceNotFoundException": 404,
                  "ServiceQuotaExceededException": 400, "ServiceUnavailableException": 503,
                  "ThrottlingException": 429, "ValidationException": 400}
_AUTH = re.compile(r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)"
                   r"/aws4_request, SignedHeaders=(?P<signed>[^,]+), Signature=(?P<signature>[0-9a-f]{64})")


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (lengths) + CRC, string headers, payload, message CRC."""
    encoded = b"".join(struct.pack(">B", len(k)) + k.encode() + b"\x07" + struct.pack(">H", len(v.encode()))
                       + v.encode() for k, v in headers.items())
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack(">I", binascii.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", binascii.crc32(message))


def event(kind: str, data: dict) -> bytes:
    return frame({":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
                 json.dumps({**data, "p": "abcdefgh"}).encode())


class FakeBedrock(FakeUpstream):
    """Bedrock Runtime's Converse and ConverseStream behind SigV4."""

    def __init__(self) -> None:
        super().__init__()
        self.session_tokens: set[str] | None = None  # when set: the only X-Amz-Security-Token accepted

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._record], client_max_size=64 * 2**20)
        app.router.add_post("/model/{model}/converse", self._converse)
        app.router.add_post("/model/{model}/converse-stream", self._converse)
        app.router.add_post("/model/{model}/invoke", self._invoke)
        app.router.add_post("/model/{model}/invoke-with-response-stream", self._invoke)
        app.router.add_post("/model/{model}/count-tokens", self._count_tokens)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        return app

    @staticmethod
    def _aws_error(status: int, kind: str, message: str) -> web.Response:
        return web.Response(status=status, body=json.dumps({"message": message}).encode(),
                            content_type="application/json", headers={"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"})

    async def _unknown(self, request: web.Request) -> web.Response:
        return self._aws_error(404, "UnknownOperationException", "")

    def _auth(self, request: web.Request, body: bytes) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        if header == f"Bearer {API_KEY}":
            return None
        m = _AUTH.fullmatch(header)
        if m is None or m["key"] != ACCESS_KEY:
            return self._aws_error(403, "UnrecognizedClientException",
                                   "The security token included in the request is invalid.")
        signed = m["signed"].split(";")
        # Rebuild the request from what was received, with only the headers it says it signed.
        aws = AWSRequest(method=request.method, url=f"http://{request.host}{request.raw_path}", data=body,
                         headers={h: request.headers[h] for h in signed if h != "host" and h in request.headers})
        aws.headers["host"] = request.host
        aws.context["timestamp"] = request.headers.get("X-Amz-Date", "")
        signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, request.headers.get("X-Amz-Security-Token")),
                           m["service"], m["region"])
        expected = signer.signature(signer.string_to_sign(aws, signer.canonical_request(aws)), aws)
        if self.session_tokens is not None and request.headers.get("X-Amz-Security-Token") not in self.session_tokens:
            return self._aws_error(403, "UnrecognizedClientException",
                                   "The security token included in the request is invalid.")
        if m["region"] != REGION or m["service"] != "bedrock" or expected != m["signature"]:
            return self._aws_error(403, "InvalidSignatureException", "The request signature we calculated does not "
                                   "match the signature you provided. Check your AWS Secret Access Key and signing "
                                   "method. Consult the service documentation for details.")
        return None

    async def _converse(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        denied = self._auth(request, raw)
        if denied is not None:
            return denied
        try:
            body = json.loads(raw)
        except ValueError:
            return self._aws_error(400, "SerializationException", "Unexpected character")
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages or any(
                m.get("role") not in ("user", "assistant") for m in messages):
            return self._aws_error(400, "ValidationException", "A conversation must start with a user message.")
        for name in body:
            if name not in ("messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig",
                            "additionalModelRequestFields", "additionalModelResponseFieldPaths", "performanceConfig",
                            "promptVariables", "requestMetadata"):
                return self._aws_error(400, "ValidationException", f"Unknown parameter: {name}")
        if (problem := self._bad_blocks(body)) is not None:
            return self._aws_error(400, "ValidationException", problem)
        model = request.match_info["model"]
        if (failed := self._failure(model)) is not None:
            return failed
        events = self._answer(model, body)
        self._prompt_cache(body, events[-1][1]["usage"])
        if request.path.endswith("/converse"):
            return web.json_response(self._whole(events), headers={"x-amzn-RequestId": "fake-request"})
        resp = web.StreamResponse(status=200, headers={"x-amzn-RequestId": "fake-request"})
        resp.content_type = "application/vnd.amazon.eventstream"
        await resp.prepare(request)
        throttled = frame({":exception-type": "throttlingException", ":content-type": "application/json",
                           ":message-type": "exception"}, b'{"message":"Too many tokens, please wait."}')
        if "batch-error" in model:  # the first events (text among them) and the exception in one write
            await resp.write(b"".join(event(kind, data) for kind, data in events[:4]) + throttled)
            await resp.write_eof()
            return resp
        for i, (kind, data) in enumerate(events):
            if i == 3 and "stream-error" in model:
                await resp.write(throttled)
                break
            await resp.write(event(kind, data))
        await resp.write_eof()
        return resp

    def _failure(self, model: str) -> web.Response | None:
        """The error a failure scenario named in the model id answers (Converse and InvokeModel)."""
        if "not-in-region" in model:
            return self._aws_error(400, "ValidationException", "The provided model identifier is invalid.")
        if "on-demand" in model:
            return self._aws_error(400, "ValidationException", f"Invocation of model ID {model} with on-demand "
                                   "throughput isn\u2019t supported. Retry your request with the ID or ARN of an "
                                   "inference profile that contains this model.")
        if "not-ready" in model:  # AWS answers ModelNotReadyException with HTTP 429
            return self._aws_error(429, "ModelNotReadyException", "Model is not ready to serve inference requests.")
        if (named := re.search(r"aws-(\w+Exception)", model)) and named[1] in AWS_EXCEPTIONS:
            return self._aws_error(AWS_EXCEPTIONS[named[1]], named[1], f"fake {named[1]}")
        if fail := re.search(r"fail-(\d{3})", model):
            status = int(fail[1])
            return self._aws_error(status, _ERRORS.get(status, "InternalServerException"), f"fake failure {status}")
        return None

    @staticmethod
    def _bad_blocks(body: dict) -> str | None:
        """What Converse would refuse in the blocks of `system`, `messages` and `toolConfig.tools`."""
        members = {"text", "image", "document", "toolUse", "toolResult", "reasoningContent", "cachePoint",
                   "guardContent", "video"}
        tools = (body.get("toolConfig") or {}).get("tools") or []
        blocks = [*(body.get("system") or []), *(b for m in body["messages"] for b in m.get("content") or []), *tools]
        for block in blocks:
            if not isinstance(block, dict) or len(block) != 1:
                return "1 validation error detected: a content block must set exactly one member"
            [(name, value)] = block.items()
            if name not in members | {"toolSpec"}:
                return f"1 validation error detected: unknown member {name}"
            if name == "cachePoint" and (value.get("type") != "default" or set(value) - {"type", "ttl"}
                                         or value.get("ttl", "5m") not in ("5m", "1h")):
                return "1 validation error detected: Value at 'cachePoint' failed to satisfy constraint"
        return None

    def _prompt_cache(self, body: dict, usage: dict) -> None:
        """Converse prompt caching: the text before the last `cachePoint` (tools, system, then
        messages) is written to the cache the first time (`cacheWriteInputTokens`, and
        `cacheDetails` with the cache point's TTL) and read after (`cacheReadInputTokens`);
        `inputTokens` keeps the rest."""
        tools = (body.get("toolConfig") or {}).get("tools") or []
        blocks = [*tools, *(body.get("system") or []), *(b for m in body["messages"] for b in m.get("content") or [])]
        marks = [i for i, b in enumerate(blocks) if "cachePoint" in b]
        if not marks:
            return
        prefix = "".join(b.get("text") or (json.dumps(b["toolSpec"]) if "toolSpec" in b else "")
                         for b in blocks[:marks[-1]])
        n = min(len(prefix) // 4, usage["inputTokens"])
        read = prefix in self.prompt_cache
        self.prompt_cache.add(prefix)
        usage["inputTokens"] -= n
        usage["cacheReadInputTokens" if read else "cacheWriteInputTokens"] = n
        if not read:
            usage["cacheDetails"] = [{"ttl": blocks[marks[-1]]["cachePoint"].get("ttl", "5m"), "inputTokens": n}]

    async def _embed(self, request: web.Request, model: str, body: dict) -> web.Response:
        """Titan Text Embeddings v2 and Cohere Embed v3 on InvokeModel, as Bedrock answers them."""
        if "titan-embed-text" in model:
            extra = set(body) - {"inputText", "dimensions", "normalize", "embeddingTypes"}
            dimensions = body.get("dimensions", 1024)
            if extra or not isinstance(body.get("inputText"), str) or dimensions not in (256, 512, 1024):
                return self._aws_error(400, "ValidationException", f"Malformed input request: {sorted(extra)}")
            tokens = max(1, len(body["inputText"]) // 4)
            vector = [round((len(body["inputText"]) % 7 + i) / 1000, 6) for i in range(dimensions)]
            return web.json_response({"embedding": vector, "embeddingsByType": {"float": vector},
                                      "inputTextTokenCount": tokens})
        extra = set(body) - {"texts", "input_type", "truncate", "embedding_types", "images"}
        texts = body.get("texts")
        if extra or "input_type" not in body or not isinstance(texts, list) or not 0 < len(texts) <= 96:
            return self._aws_error(400, "ValidationException",
                                   "Malformed input request: #: required key [input_type] not found")
        vectors = [[round((len(t) % 5 + i) / 1000, 6) for i in range(1024)] for t in texts]
        tokens = sum(max(1, len(t) // 4) for t in texts)
        embeddings = {"float": vectors} if body.get("embedding_types") else vectors
        return web.json_response({"id": "fake-embed", "texts": texts, "embeddings": embeddings,
                                  "response_type": "embeddings_by_type" if body.get("embedding_types")
                                  else "embeddings_floats"},
                                 headers={"X-Amzn-Bedrock-Input-Token-Count": str(tokens)})

    async def _invoke(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        denied = self._auth(request, raw)
        if denied is not None:
            return denied
        model = request.match_info["model"]
        if "embed" in model and request.path.endswith("/invoke"):
            try:
                return await self._embed(request, model, json.loads(raw))
            except (ValueError, AttributeError):
                return self._aws_error(400, "SerializationException", "Unexpected character")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._aws_error(400, "SerializationException", "Unexpected character")
        if not isinstance(body, dict) or body.pop("anthropic_version", None) != "bedrock-2023-05-31":
            return self._aws_error(400, "ValidationException", "anthropic_version: bedrock-2023-05-31 is required")
        beta = body.pop("anthropic_beta", [])
        if "model" in body or not isinstance(beta, list):
            return self._aws_error(400, "ValidationException", "Malformed input request: extraneous key [model]")
        model = request.match_info["model"]
        anthropic_body = {**body, "model": model}
        if (err := wire_anthropic.check_anthropic(anthropic_body)) is not None:
            return self._aws_error(400, "ValidationException", err["error"]["message"])
        if (failed := self._failure(model)) is not None:
            return failed
        sc = wire.parse_scenario(model.split(".")[-1])
        if self.prompt_caching:  # Anthropic's cache_control breakpoints, as FakeUpstream emulates them
            sc = wire.prompt_cache(anthropic_body, "anthropic", sc, self.prompt_cache)
        if request.path.endswith("/invoke"):
            return web.Response(body=wire_anthropic.anthropic_json(anthropic_body, sc), content_type="application/json")
        resp = web.StreamResponse(status=200)
        resp.content_type = "application/vnd.amazon.eventstream"
        await resp.prepare(request)
        frames = []
        for sse in wire_anthropic.anthropic_events(anthropic_body, sc):
            data = next(line[6:] for line in sse.split(b"\n") if line.startswith(b"data: "))
            frames.append(frame({":event-type": "chunk", ":content-type": "application/json",
                                 ":message-type": "event"},
                                json.dumps({"bytes": base64.b64encode(data).decode(), "p": "ab"}).encode()))
        if sc.kind == "batch-error":  # the first five events (text among them) and an exception in one write
            frames[5:] = [frame({":exception-type": "throttlingException", ":content-type": "application/json",
                                 ":message-type": "exception"}, b'{"message":"Too many tokens, please wait."}')]
            frames = [b"".join(frames)]
        for data in frames:
            await resp.write(data)
        await resp.write_eof()
        return resp

    async def _count_tokens(self, request: web.Request) -> web.Response:
        """CountTokens: `{"input": {"invokeModel": {"body": <base64 InvokeModel body>}}}` or
        `{"input": {"converse": {...}}}` -> `{"inputTokens"}`; a cross-region profile id is refused
        as AWS refuses it (only foundation model ids are counted)."""
        raw = await request.read()
        denied = self._auth(request, raw)
        if denied is not None:
            return denied
        model = request.match_info["model"]
        if re.match(r"(us|eu|apac|global)\.", model):
            return self._aws_error(400, "ValidationException", "The provided model doesn't support counting tokens.")
        try:
            given = json.loads(raw)["input"]
            if set(given) == {"invokeModel"}:
                body = json.loads(base64.b64decode(given["invokeModel"]["body"], validate=True))
                if body.pop("anthropic_version", None) != "bedrock-2023-05-31" or "model" in body:
                    raise ValueError("anthropic_version")
                if (err := wire_anthropic.check_anthropic({**body, "model": model})) is not None:
                    return self._aws_error(400, "ValidationException", err["error"]["message"])
                count = wire.count_prompt_tokens(body)
            elif set(given) == {"converse"}:
                texts = [b.get("text", "") for m in given["converse"]["messages"] for b in m["content"]]
                count = max(1, sum(map(len, texts)) // 4)
            else:
                raise ValueError("input")
        except (ValueError, KeyError, TypeError, binascii.Error):
            return self._aws_error(400, "ValidationException", "Malformed input request")
        return web.json_response({"inputTokens": count})

    @staticmethod
    def _whole(events: list[tuple[str, dict]]) -> dict:
        content: list[dict] = []
        out: dict = {}
        for kind, data in events:
            if kind == "contentBlockStart" and "toolUse" in data["start"]:
                content.append({"toolUse": {**data["start"]["toolUse"], "input": ""}})
            elif kind == "contentBlockDelta":
                if "text" in data["delta"]:
                    if not content or "text" not in content[-1]:
                        content.append({"text": ""})
                    content[-1]["text"] += data["delta"]["text"]
                else:
                    content[-1]["toolUse"]["input"] += data["delta"]["toolUse"]["input"]
            elif kind == "messageStop":
                out["stopReason"] = data["stopReason"]
            elif kind == "metadata":
                out.update(usage=data["usage"], metrics=data["metrics"])
        for block in content:
            if "toolUse" in block:
                block["toolUse"]["input"] = json.loads(block["toolUse"]["input"])
        return {"output": {"message": {"role": "assistant", "content": content}}, **out}

    @staticmethod
    def _answer(model: str, body: dict) -> list[tuple[str, dict]]:
        texts = [b["text"] for m in body["messages"] for b in m.get("content") or [] if isinstance(b.get("text"), str)]
        texts += [b["text"] for b in body.get("system") or [] if isinstance(b.get("text"), str)]
        prompt = max(1, sum(map(len, texts)) // 4)
        if wire.parse_scenario(model.split(".")[-1]).kind == "bodytokens":  # a token per byte of the whole body
            prompt = max(1, wire.body_bytes(body))
        users = [m for m in body["messages"] if m["role"] == "user"]
        last = users[-1]["content"] if users else []
        text = "".join(b.get("text", "") for b in last).strip()[:40]
        words = f"Echo: {text}".split(" ") if text else ["Hello", "from", "the", "fake."]
        pieces = [words[0]] + [" " + w for w in words[1:]]
        limit = (body.get("inferenceConfig") or {}).get("maxTokens")
        stop = "end_turn"
        if isinstance(limit, int) and limit < len(pieces):
            pieces, stop = pieces[:limit], "max_tokens"
        tools = (body.get("toolConfig") or {}).get("tools") or []
        events: list[tuple[str, dict]] = [("messageStart", {"role": "assistant"})]
        if tools and not any("toolResult" in b for b in last):
            name = tools[0]["toolSpec"]["name"]
            arguments = json.dumps({"query": "".join(pieces)})
            start = {"toolUse": {"toolUseId": wire.next_id("tooluse_"), "name": name}}  # unique, as on AWS
            events += [("contentBlockStart", {"contentBlockIndex": 0, "start": start}),
                       ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": arguments}}}),
                       ("contentBlockStop", {"contentBlockIndex": 0})]
            stop = "tool_use"
        else:
            events += [("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": p}}) for p in pieces]
            events.append(("contentBlockStop", {"contentBlockIndex": 0}))
        usage = {"inputTokens": prompt, "outputTokens": len(pieces), "totalTokens": prompt + len(pieces)}
        for pattern, field in ((r"cached-(\d+)", "cacheReadInputTokens"),
                               (r"cachewrite-(\d+)", "cacheWriteInputTokens")):
            if m := re.search(pattern, model):
                usage[field] = int(m[1])
                usage["totalTokens"] += int(m[1])
        events += [("messageStop", {"stopReason": stop}), ("metadata", {"usage": usage, "metrics": {"latencyMs": 12}})]
        return events
