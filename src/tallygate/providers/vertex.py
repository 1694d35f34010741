"""Vertex AI's Gemini models: the Gemini API's bodies and events on `aiplatform.googleapis.com`.

`POST {base_url}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}
:generateContent` (`:streamGenerateContent?alt=sse`), with an OAuth access token from
google-auth (`providers.google_auth`). `base_url` defaults to
`https://{location}-aiplatform.googleapis.com` (`https://aiplatform.googleapis.com` for the
`global` location). Anthropic models on Vertex (`rawPredict`) are not served yet.
"""

from __future__ import annotations

from urllib.parse import quote

from tallygate.providers.gemini import GeminiProvider
from tallygate.providers.google_auth import GoogleAccessToken
from tallygate.providers.http import HttpClient
from tallygate.settings import ProviderConfig


def vertex_base_url(location: str) -> str:
    return ("https://aiplatform.googleapis.com" if location == "global"
            else f"https://{location}-aiplatform.googleapis.com")


class VertexGeminiProvider(GeminiProvider):
    """Gemini on Vertex AI: chat translated to generateContent, a refreshed bearer token."""

    def __init__(self, name: str, cfg: ProviderConfig, http: HttpClient) -> None:
        super().__init__(name, cfg.model_copy(update={"api_key": None}), http)
        location = cfg.location or "us-central1"
        base = (cfg.base_url or vertex_base_url(location)).rstrip("/")
        self._models = (f"{base}/v1/projects/{quote(cfg.project or '', safe='')}/locations/"
                        f"{quote(location, safe='')}/publishers/google/models/")
        self._token = GoogleAccessToken(name, cfg.credentials_file)

    async def _request_headers(self) -> dict[str, str]:
        return {**self._headers, "Authorization": await self._token.authorization()}
