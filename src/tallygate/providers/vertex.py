"""Vertex AI: Gemini models (the Gemini API's bodies on `aiplatform.googleapis.com`) and
Anthropic's Claude models (`rawPredict` / `streamRawPredict` with the Messages body).

Both use `{base_url}/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/
{model}:{method}`, with an OAuth access token from google-auth (`providers.google_auth`).
`base_url` defaults to `https://{location}-aiplatform.googleapis.com`
(`https://aiplatform.googleapis.com` for the `global` location). `publisher: anthropic` on the
provider selects the Claude models (`VertexClaudeProvider`); the default is Google's Gemini.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from tallygate.errors import UpstreamProtocolError
from tallygate.providers.anthropic import AnthropicProvider
from tallygate.providers.bedrock_embed import embedding_texts, openai_embeddings
from tallygate.providers.gemini import GeminiProvider
from tallygate.providers.google_auth import GoogleAccessToken
from tallygate.providers.http import HttpClient
from tallygate.providers.vertex_embed import predict_requests, predicted
from tallygate.settings import ProviderConfig
from tallygate.types import Usage

VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"


def vertex_base_url(location: str) -> str:
    return ("https://aiplatform.googleapis.com" if location == "global"
            else f"https://{location}-aiplatform.googleapis.com")


def vertex_location_url(cfg: ProviderConfig) -> str:
    """`{base}/v1/projects/{project}/locations/{location}` for a vertex provider."""
    location = cfg.location or "us-central1"
    base = (cfg.base_url or vertex_base_url(location)).rstrip("/")
    return f"{base}/v1/projects/{quote(cfg.project or '', safe='')}/locations/{quote(location, safe='')}"


class VertexGeminiProvider(GeminiProvider):
    """Gemini on Vertex AI: chat translated to generateContent, embeddings on `:predict`
    (`vertex_embed`), a refreshed bearer token."""

    def __init__(self, name: str, cfg: ProviderConfig, http: HttpClient) -> None:
        super().__init__(name, cfg.model_copy(update={"api_key": None}), http)
        self._models = vertex_location_url(cfg) + "/publishers/google/models/"
        self._token = GoogleAccessToken(name, cfg.credentials_file)

    async def _request_headers(self) -> dict[str, str]:
        return {**self._headers, "Authorization": await self._token.authorization()}

    async def embed(self, body: dict) -> tuple[dict, Usage]:
        model = body["model"]
        calls = predict_requests(model, embedding_texts(body, "Vertex AI models"), body.get("dimensions"))
        headers = await self._request_headers()
        answers = await asyncio.gather(*(self._up.post_json(self._url(model, "predict"), call, headers)
                                         for call in calls))
        try:
            vectors, count = predicted(answers)
        except (KeyError, TypeError, ValueError):
            raise UpstreamProtocolError(f"provider {self.name!r} sent an embedding we cannot read") from None
        return openai_embeddings(vectors, model, count, body.get("encoding_format")), Usage(input_tokens=count)


class VertexClaudeProvider(AnthropicProvider):
    """Claude on Vertex AI (`publisher: anthropic`): `/v1/messages` relayed natively to
    `:rawPredict` / `:streamRawPredict` (the model in the URL, `anthropic_version:
    vertex-2023-10-16` in the body, the client's `anthropic-beta` header passed on), token
    counting to `count-tokens:rawPredict`; chat and Responses translated as for `anthropic`."""

    def __init__(self, name: str, cfg: ProviderConfig, http: HttpClient) -> None:
        super().__init__(name, cfg.model_copy(update={"api_key": None, "base_url": "http://unused"}), http)
        self._headers.pop("anthropic-version", None)  # Vertex takes it in the body
        self._models = vertex_location_url(cfg) + "/publishers/anthropic/models/"
        self._count_url = self._models + "count-tokens:rawPredict"
        self._token = GoogleAccessToken(name, cfg.credentials_file)

    def _endpoint(self, body: dict, stream: bool) -> tuple[str, dict]:
        payload = {k: v for k, v in body.items() if k != "model"}
        payload["anthropic_version"] = VERTEX_ANTHROPIC_VERSION
        method = "streamRawPredict" if stream else "rawPredict"
        return f"{self._models}{quote(body['model'], safe='@')}:{method}", payload

    async def _request_headers(self, client: dict[str, str] | None = None) -> dict[str, str]:
        extra = {k: v for k, v in (client or {}).items() if v and k != "anthropic-version"}
        return {**self._headers, **extra, "Authorization": await self._token.authorization()}

    def _count_body(self, body: dict) -> dict:
        return {**body, "anthropic_version": VERTEX_ANTHROPIC_VERSION}
