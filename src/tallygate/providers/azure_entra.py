"""Microsoft Entra ID access tokens for Azure OpenAI, from `azure-identity`, refreshed early.

One credential per provider (client secret, managed identity or workload identity), built from
the provider's `entra:` config; azure-identity's asyncio credentials do the token requests on
their own aiohttp transport. The first token is fetched on the first request that needs it
(lazily: start-up does not depend on Entra being reachable). After that a request never waits
for Entra while its token is valid: once the token is within `REFRESH_MARGIN_S` of expiry
(azure-identity's own refresh window) the next request starts one refresh in the background and
goes on with the current token; only a missing or (nearly) expired token is waited for.
azure-identity itself asks Entra again for a still-valid token at most every 30 s, so background
refreshes are tried at most that often. The credential is closed when the gateway stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from tallygate.errors import UpstreamHTTPError
from tallygate.settings import AzureEntraConfig

log = logging.getLogger(__name__)

REFRESH_MARGIN_S = 300.0  # refresh in the background this long before expiry
MUST_WAIT_S = 30.0  # a token with less left than this is not used: wait for a new one
RETRY_S = 30.0  # azure-identity asks Entra at most this often for a still-valid token; so do we


def entra_credential(cfg: AzureEntraConfig) -> Any:
    """The azure-identity (asyncio) credential a config names."""
    from azure.identity import aio

    authority = {"authority": cfg.authority_host} if cfg.authority_host else {}
    if cfg.credential == "client_secret":
        return aio.ClientSecretCredential(cfg.tenant_id or "", cfg.client_id or "", cfg.client_secret or "",
                                          **authority)
    if cfg.credential == "workload_identity":
        return aio.WorkloadIdentityCredential(tenant_id=cfg.tenant_id, client_id=cfg.client_id,
                                              token_file_path=cfg.token_file, **authority)
    return aio.ManagedIdentityCredential(client_id=cfg.client_id)


class EntraToken:
    """`Authorization` header values for one provider's Entra credential."""

    def __init__(self, provider: str, cfg: AzureEntraConfig, credential: Any = None) -> None:
        self._provider = provider
        self._cfg = cfg
        self._credential = credential
        self._token: Any = None  # azure.core.credentials.AccessToken
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
        self._next_background = 0.0

    async def authorization(self) -> str:
        token, now = self._token, time.time()
        if token is None or token.expires_on - now < MUST_WAIT_S:
            async with self._lock:
                if self._token is None or self._token.expires_on - time.time() < MUST_WAIT_S:
                    await self._fetch()
            token = self._token
        elif token.expires_on - now < REFRESH_MARGIN_S and now >= self._next_background and self._background is None:
            self._next_background = now + RETRY_S
            self._background = asyncio.create_task(self._refresh_in_background())
        return f"Bearer {token.token}"

    async def _fetch(self) -> None:
        from azure.core.exceptions import AzureError

        try:
            if self._credential is None:
                self._credential = entra_credential(self._cfg)
            self._token = await self._credential.get_token(self._cfg.scope)
            self._next_background = max(self._next_background, time.time() + RETRY_S)
        except (AzureError, ValueError, OSError) as exc:
            # Our credentials, not the caller's mistake: 401 upstream -> 502 upstream_auth_failed.
            raise UpstreamHTTPError(401, f"provider {self._provider!r} could not get a Microsoft Entra "
                                         f"token ({type(exc).__name__})") from None

    async def _refresh_in_background(self) -> None:
        try:
            async with self._lock:
                await self._fetch()
        except UpstreamHTTPError:
            log.warning("provider %r: refreshing its Entra token failed; the current one is used until "
                        "it nearly expires", self._provider)
        finally:
            self._background = None

    async def close(self) -> None:
        if self._background is not None:
            self._background.cancel()
        if self._credential is not None:
            await self._credential.close()
