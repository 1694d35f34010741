"""Azure OpenAI: OpenAI's wire format on a resource's endpoint, with Azure's URLs and `api-key`.

Two URL styles, chosen by config:
- the v1 API (no `api_version`): `{base_url}/openai/v1/chat/completions`, `/embeddings`,
  `/responses`, the deployment named by the body's `model`;
- deployments (`api_version: 2024-10-21` ...): `{base_url}/openai/deployments/{model}/chat/completions
  ?api-version=...` (and `/embeddings`); Responses at `{base_url}/openai/responses?api-version=...`.

`base_url` is the resource endpoint (`https://{resource}.openai.azure.com`); a trailing
`/openai/v1` or `/openai` is accepted too. Errors are OpenAI-shaped and mapped as OpenAI's.
Auth: `api_key` as the `api-key` header, or (`entra:`) a Microsoft Entra token as
`Authorization: Bearer` (`providers.azure_entra`).
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from tallygate.providers.azure_entra import EntraToken
from tallygate.providers.http import HttpClient
from tallygate.providers.openai import OpenAIProvider
from tallygate.settings import ProviderConfig

_DEPLOYMENT_OPERATIONS = frozenset({"chat/completions", "embeddings"})


def azure_endpoint(base_url: str) -> str:
    """The resource endpoint of a configured `base_url` (without `/openai/v1` or `/openai`)."""
    base = base_url.rstrip("/")
    for suffix in ("/openai/v1", "/openai"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


class AzureOpenAIProvider(OpenAIProvider):
    """Chat, embeddings and Responses on Azure OpenAI, natively (OpenAI's bodies and events)."""

    def __init__(self, name: str, cfg: ProviderConfig, http: HttpClient) -> None:
        super().__init__(name, cfg.model_copy(update={"api_key": None}), http)
        if cfg.api_key:
            self._headers["api-key"] = cfg.api_key
        endpoint = azure_endpoint(cfg.base_url or "")
        self._version = cfg.api_version
        self._query = "?" + urlencode({"api-version": cfg.api_version}) if cfg.api_version else ""
        self._base = endpoint + ("/openai" if cfg.api_version else "/openai/v1")
        self._entra = EntraToken(name, cfg.entra) if cfg.entra else None

    async def _request_headers(self) -> dict[str, str]:
        if self._entra is None:
            return self._headers
        return {**self._headers, "Authorization": await self._entra.authorization()}

    async def close(self) -> None:
        if self._entra is not None:
            await self._entra.close()

    def _url(self, operation: str, body: dict) -> str:
        if self._version and operation in _DEPLOYMENT_OPERATIONS:
            deployment = quote(str(body.get("model", "")), safe="")
            return f"{self._base}/deployments/{deployment}/{operation}{self._query}"
        return f"{self._base}/{operation}{self._query}"
