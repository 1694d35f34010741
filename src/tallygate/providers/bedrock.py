"""AWS Bedrock Runtime's Converse API behind OpenAI's chat shape.

`POST {base_url}/model/{modelId}/converse` and `/converse-stream` (an
`application/vnd.amazon.eventstream` of binary frames, parsed and CRC-checked by botocore's
`EventStreamBuffer`). Requests are signed with SigV4 by botocore from its credential chain
(environment, shared profile, web identity, container and instance roles), or carry a Bedrock
API key as `Authorization: Bearer` when `api_key` is set. `modelId` may be a cross-region
inference profile (`us.anthropic.claude-…`). `/v1/messages` is translated straight to Converse
(`bedrock_messages`: prompt-cache breakpoints become cache points where the client put them),
or, with `anthropic_messages: true` (Claude models only), relayed natively through InvokeModel
(`BedrockClaudeProvider`); Responses reach it through the gateway's chat translation.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from collections.abc import AsyncGenerator, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import orjson
from yarl import URL

from tallygate.errors import UpstreamHTTPError, UpstreamProtocolError, UpstreamUnavailable
from tallygate.providers.base import RawEvents
from tallygate.providers.bedrock_embed import (
    cohere_body,
    cohere_vectors,
    embedding_family,
    embedding_texts,
    openai_embeddings,
    titan_body,
)
from tallygate.providers.bedrock_messages import ConverseToMessagesStream, converse_to_message, messages_to_converse
from tallygate.providers.bedrock_translate import ConverseStreamTranslator, bedrock_error, from_converse, to_converse
from tallygate.providers.http import HttpClient, finish_body, retry_after, transport_errors
from tallygate.providers.upstream import Upstream
from tallygate.settings import ProviderConfig
from tallygate.types import Reported, Usage

if TYPE_CHECKING:  # botocore is imported on the first signed request, not at start-up
    from tallygate.providers.sigv4 import CachedSigV4Auth

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_CREDENTIALS_TTL_S = 60.0  # re-read botocore's (refreshable) credentials this often, in a thread


class BedrockProvider:
    """Translates each chat request to Converse and each answer (or event) back."""

    def __init__(self, name: str, cfg: ProviderConfig, http: HttpClient) -> None:
        self.name = name
        self._region = cfg.region or ""
        self._up = Upstream(name, cfg, http, self._error)
        self._base = (cfg.base_url or f"https://bedrock-runtime.{self._region}.amazonaws.com").rstrip("/")
        self._headers = {"Content-Type": "application/json", **cfg.headers}
        self._bearer = cfg.api_key
        self._signer_now: CachedSigV4Auth | None = None  # on botocore ReadOnlyCredentials
        self._credentials_at = 0.0
        self._lock = asyncio.Lock()
        self._reload: asyncio.Task[None] | None = None
        self._urls: dict[tuple[str, str], str] = {}

    def _error(self, status: int, raw: bytes, headers: object) -> UpstreamHTTPError:
        kind = headers.get("x-amzn-ErrorType", "") if hasattr(headers, "get") else ""  # type: ignore[union-attr]
        return bedrock_error(self.name, kind or "", status, raw, retry_after(headers))

    def _url(self, model: str, operation: str) -> str:
        url = self._urls.get((model, operation))
        if url is None:
            if len(self._urls) > 1024:
                self._urls.clear()
            url = self._urls[(model, operation)] = f"{self._base}/model/{quote(model, safe='')}/{operation}"
        return url

    async def _signed(self, url: str, data: bytes, accept: str) -> dict[str, str]:
        """The headers for POSTing `data` to `url`: SigV4-signed, or the Bedrock API key."""
        headers = {**self._headers, "Accept": accept}
        if self._bearer:
            return {**headers, "Authorization": f"Bearer {self._bearer}"}
        from tallygate.providers.sigv4 import sign

        return sign(await self._signer(), url, headers, data)

    async def _signer(self) -> CachedSigV4Auth:
        """A signer on current credentials. Only the first request waits for them; after that they
        are re-read every `_CREDENTIALS_TTL_S` in the background while requests go on signing with
        the ones in hand (botocore's refreshable credentials are frozen with >= 10 min to run)."""
        if self._signer_now is None:
            async with self._lock:
                if self._signer_now is None:
                    self._use(await asyncio.to_thread(self._load_credentials))
        elif time.monotonic() - self._credentials_at > _CREDENTIALS_TTL_S and self._reload is None:
            self._credentials_at = time.monotonic()
            self._reload = asyncio.create_task(self._reload_credentials())
        assert self._signer_now is not None
        return self._signer_now

    def _use(self, credentials: Any) -> None:
        from tallygate.providers.sigv4 import CachedSigV4Auth

        if self._signer_now is None or credentials != self._signer_now.credentials:
            self._signer_now = CachedSigV4Auth(credentials, "bedrock", self._region)
        self._credentials_at = time.monotonic()

    async def _reload_credentials(self) -> None:
        try:
            self._use(await asyncio.to_thread(self._load_credentials))
        except UpstreamHTTPError:
            log.warning("provider %r: re-reading AWS credentials failed; signing with the current ones", self.name)
        finally:
            self._reload = None

    def _load_credentials(self) -> Any:
        import botocore.exceptions
        import botocore.session

        try:
            credentials = botocore.session.get_session().get_credentials()
            frozen = credentials.get_frozen_credentials() if credentials is not None else None
        except botocore.exceptions.BotoCoreError as exc:
            raise UpstreamHTTPError(403, f"provider {self.name!r} could not load AWS credentials "
                                         f"({type(exc).__name__})") from None
        if frozen is None:
            raise UpstreamHTTPError(403, f"provider {self.name!r} found no AWS credentials")
        return frozen

    def chat_payload(self, body: dict) -> dict:
        return to_converse(body)

    def messages_payload(self, body: dict) -> dict:
        return messages_to_converse(body)

    async def chat(self, body: dict) -> tuple[dict, Usage]:
        url, data = self._url(body["model"], "converse"), orjson.dumps(self.chat_payload(body))
        headers = await self._signed(url, data, "application/json")
        answer = await self._up.post_bytes(URL(url, encoded=True), data, headers)  # sent as signed
        try:
            return from_converse(answer, "", int(time.time()), body["model"])
        except (KeyError, TypeError, AttributeError):
            raise UpstreamProtocolError(f"provider {self.name!r} sent a body we cannot read") from None

    async def chat_stream(self, body: dict, reported: Reported | None = None) -> AsyncGenerator[list[dict], None]:
        """ConverseStream as chat chunks; its usage comes in the last event (`metadata`): nothing
        to report early."""
        url, data = self._url(body["model"], "converse-stream"), orjson.dumps(self.chat_payload(body))
        translator = ConverseStreamTranslator("", int(time.time()), body["model"])
        read = partial(self._event, translator)
        async for batch in self._event_stream(url, data, read, lambda _: translator.done, "its metadata event"):
            yield batch

    async def _event_stream(self, url: str, data: bytes, read: Callable[[dict, bytes], list[_T]],
                            done: Callable[[list[_T]], bool], last: str) -> AsyncGenerator[list[_T], None]:
        """An event-stream answer's frames, each turned into items by `read(headers, payload)`, a
        batch per network read. Once `done(batch)` holds the batch is the last: the body's end is
        read (`finish_body`, the connection back to the pool). A body that ends before is a 503
        saying it ended before `last`; an exception frame raises once the items before it in the
        same read have been yielded."""
        from botocore.eventstream import EventStreamBuffer, ParserError

        signed = await self._signed(url, data, "application/vnd.amazon.eventstream")
        frames = EventStreamBuffer()
        async with self._up.stream_bytes(URL(url, encoded=True), data, signed, "vnd.amazon.eventstream") as resp:
            with transport_errors(self.name):
                async for raw in resp.content.iter_any():
                    frames.add_data(raw)
                    batch: list[_T] = []
                    try:
                        for frame in frames:
                            try:
                                batch += read(frame.headers, frame.payload)
                            except UpstreamHTTPError:
                                if batch:
                                    yield batch
                                raise
                            if done(batch):
                                try:
                                    if batch:
                                        yield batch
                                finally:
                                    await finish_body(resp)
                                return
                    except ParserError:
                        raise UpstreamProtocolError(
                            f"provider {self.name!r} sent a broken event-stream frame") from None
                    if batch:
                        yield batch
            raise UpstreamUnavailable(f"provider {self.name!r} ended the stream before {last}")  # after its 200

    async def messages(self, body: dict, headers: dict[str, str]) -> tuple[dict, Usage]:
        """Anthropic's Messages through Converse (the client's `anthropic-beta` passed on to Claude)."""
        url, data = self._url(body["model"], "converse"), orjson.dumps(messages_to_converse(body, headers))
        signed = await self._signed(url, data, "application/json")
        answer = await self._up.post_bytes(URL(url, encoded=True), data, signed)
        try:
            return converse_to_message(answer, body["model"])
        except (KeyError, TypeError, AttributeError):
            raise UpstreamProtocolError(f"provider {self.name!r} sent a body we cannot read") from None

    async def messages_stream(self, body: dict, headers: dict[str, str]) -> RawEvents:
        """Anthropic's Messages events `(name, JSON)` from ConverseStream; ends after message_stop."""
        url, data = self._url(body["model"], "converse-stream"), orjson.dumps(messages_to_converse(body, headers))
        events = ConverseToMessagesStream(body["model"])

        def read(headers: dict, payload: bytes) -> list[tuple[str | None, bytes]]:
            return [(name, orjson.dumps(event)) for name, event in events.feed(*self._payload(headers, payload))]

        async for batch in self._event_stream(url, data, read, lambda _: events.done, "its metadata event"):
            yield batch

    def _event(self, translator: ConverseStreamTranslator, headers: dict, payload: bytes) -> list[dict]:
        return translator.feed(*self._payload(headers, payload))

    def _payload(self, headers: dict, payload: bytes) -> tuple[str, dict]:
        """A ConverseStream frame's (event type, JSON payload); an exception frame is raised."""
        kind = headers.get(":message-type")
        if kind == "exception" or kind == "error":
            error_type = str(headers.get(":exception-type") or headers.get(":error-code") or "")
            raise bedrock_error(self.name, error_type[:1].upper() + error_type[1:], 500, payload)
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(f"provider {self.name!r} sent an event that is not JSON") from None
        return str(headers.get(":event-type", "")), data if isinstance(data, dict) else {}

    async def embed(self, body: dict) -> tuple[dict, Usage]:
        """OpenAI embeddings through InvokeModel: Titan (one call per text, concurrently) or
        Cohere Embed (one call), see `bedrock_embed`."""
        model = body["model"]
        family, texts = embedding_family(model), embedding_texts(body)
        url = self._url(model, "invoke")
        try:
            if family == "titan":
                answers = await asyncio.gather(*(self._invoke_json(url, titan_body(t, body.get("dimensions")))
                                                 for t in texts))
                vectors = [a["embedding"] for a in answers]
                tokens = sum(int(a["inputTextTokenCount"]) for a in answers)
            else:
                answer, seen = await self._invoke_json_headers(url, cohere_body(texts, body.get("dimensions")))
                vectors = cohere_vectors(answer)
                tokens = int(seen.get("x-amzn-bedrock-input-token-count") or 0)
        except (KeyError, TypeError, ValueError):
            raise UpstreamProtocolError(f"provider {self.name!r} sent an embedding we cannot read") from None
        data = openai_embeddings(vectors, model, tokens, body.get("encoding_format"))
        return data, Usage(input_tokens=tokens, output_tokens=0)

    async def _invoke_json(self, url: str, payload: dict) -> dict:
        data = orjson.dumps(payload)
        signed = await self._signed(url, data, "application/json")
        return await self._up.post_bytes(URL(url, encoded=True), data, signed)

    async def _invoke_json_headers(self, url: str, payload: dict) -> tuple[dict, dict[str, str]]:
        """InvokeModel when the answer's headers count too (Cohere's token count)."""
        data = orjson.dumps(payload)
        signed = await self._signed(url, data, "application/json")
        seen: dict[str, str] = {}
        return await self._up.post_bytes(URL(url, encoded=True), data, signed, seen), seen

    async def close(self) -> None:
        if self._reload is not None:
            self._reload.cancel()


BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"
# A cross-region inference profile's geography prefix (us.anthropic.claude-…): CountTokens takes
# the foundation model's own id only.
_PROFILE = re.compile(r"^(?:arn:aws[\w-]*:bedrock:[\w-]*:\d*:inference-profile/)?"
                      r"(?:us|eu|apac|jp|au|ca|us-gov|global)\.")


def foundation_model(model: str) -> str:
    """The foundation model id of a (system-defined) cross-region inference profile or its ARN."""
    return _PROFILE.sub("", model, count=1)


class BedrockClaudeProvider(BedrockProvider):
    """A Bedrock provider for Claude models (`anthropic_messages: true`): chat through Converse
    as above, and `/v1/messages` natively through `InvokeModel` / `InvokeModelWithResponseStream`
    with the Anthropic Messages body (`anthropic_version: bedrock-2023-05-31`; the client's
    `anthropic-beta` header becomes the body's `anthropic_beta`); `/v1/messages/count_tokens`
    through CountTokens."""

    @staticmethod
    def _invoke_body(body: dict, headers: dict[str, str]) -> bytes:
        payload = {k: v for k, v in body.items() if k not in ("model", "stream")}
        payload["anthropic_version"] = BEDROCK_ANTHROPIC_VERSION
        if beta := headers.get("anthropic-beta"):
            payload["anthropic_beta"] = [b.strip() for b in beta.split(",") if b.strip()]
        return orjson.dumps(payload)

    async def messages(self, body: dict, headers: dict[str, str]) -> tuple[dict, Usage]:
        from tallygate.providers.anthropic_replies import anthropic_usage

        url, data = self._url(body["model"], "invoke"), self._invoke_body(body, headers)
        signed = await self._signed(url, data, "application/json")
        answer = await self._up.post_bytes(URL(url, encoded=True), data, signed)
        return answer, anthropic_usage(answer.get("usage"))

    async def count_tokens(self, body: dict, headers: dict[str, str]) -> dict:
        """`/v1/messages/count_tokens` by Bedrock's CountTokens on the InvokeModel body (the
        foundation model's id: profiles are not counted by AWS), as Anthropic answers it."""
        payload = {"max_tokens": 1, **body}  # InvokeModel wants max_tokens; it counts no output
        invoke = base64.b64encode(self._invoke_body(payload, headers)).decode()
        url = self._url(foundation_model(body["model"]), "count-tokens")
        data = orjson.dumps({"input": {"invokeModel": {"body": invoke}}})
        signed = await self._signed(url, data, "application/json")
        answer = await self._up.post_bytes(URL(url, encoded=True), data, signed)
        count = answer.get("inputTokens") if isinstance(answer, dict) else None
        if type(count) is not int or count < 0:
            raise UpstreamProtocolError(f"provider {self.name!r} sent a token count we cannot read")
        return {"input_tokens": count}

    async def messages_stream(self, body: dict, headers: dict[str, str]) -> RawEvents:
        """Raw `(event, data)` Anthropic events, unwrapped from the event stream's `chunk` frames
        (`{"bytes": <base64 event JSON>}`). Ends after `message_stop`."""
        url, data = self._url(body["model"], "invoke-with-response-stream"), self._invoke_body(body, headers)

        def read(headers: dict, payload: bytes) -> list[tuple[str | None, bytes]]:
            return [self._anthropic_event(headers, payload)]

        async for batch in self._event_stream(url, data, read, lambda batch: batch[-1][0] == "message_stop",
                                              "message_stop"):
            yield batch

    def _anthropic_event(self, headers: dict, payload: bytes) -> tuple[str | None, bytes]:
        if headers.get(":message-type") in ("exception", "error"):
            error_type = str(headers.get(":exception-type") or headers.get(":error-code") or "")
            raise bedrock_error(self.name, error_type[:1].upper() + error_type[1:], 500, payload)
        try:
            event = base64.b64decode(orjson.loads(payload)["bytes"])
            kind = orjson.loads(event).get("type")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            raise UpstreamProtocolError(f"provider {self.name!r} sent a chunk we cannot read") from None
        return (kind if isinstance(kind, str) else None), event
