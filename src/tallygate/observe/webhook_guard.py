"""Webhooks go only where they were meant to: public addresses, checked when connecting.

A webhook URL could otherwise make the gateway POST signed alert events to its own admin port,
to another service on the private network, or to a cloud metadata endpoint. So, unless a hook
sets `allow_private: true`:

* `check_at_start` resolves the hook's host at start-up and refuses to start when it names a
  loopback, private, link-local or metadata address (a literal IP is refused by the config);
* at send time `PublicOnlyResolver` resolves the host, checks every address, and aiohttp then
  connects to the addresses it returned: a name that resolves to a public address at start-up
  and to a private one later (DNS rebinding) is refused, not connected to.

Redirects are never followed (the sender posts with `allow_redirects=False`): a 3xx is a failed
delivery like any other non-2xx.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from tallygate.core.addresses import is_ip, is_public
from tallygate.settings import ConfigError, WebhookConfig

log = logging.getLogger("tallygate.webhooks")


class PrivateAddressRefused(OSError):
    """A webhook's host resolved to an address that is not public."""


def _refusal(host: str, address: str) -> str:
    return (f"{host} resolves to {address}, not a public address; set allow_private: true on the "
            "webhook if it is meant to reach your own network")


class PublicOnlyResolver(AbstractResolver):
    """aiohttp's resolver, refusing a name when any address it resolves to is not public."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if not is_public(result["host"]):
                raise PrivateAddressRefused(_refusal(host, result["host"]))
        return results

    async def close(self) -> None:
        await self._inner.close()


async def check_at_start(hooks: list[WebhookConfig]) -> None:
    """Refuse to start when a hook without `allow_private` resolves to a non-public address.
    A host that does not resolve now is only logged: it is checked again at every send."""
    loop = asyncio.get_running_loop()
    for i, hook in enumerate(hooks):
        host = urlsplit(hook.url).hostname or ""
        if hook.allow_private or is_ip(host):  # literal IPs were checked with the config
            continue
        try:
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError as exc:
            log.warning("webhook host %s does not resolve now (%s); it is checked again at each send", host, exc)
            continue
        for info in infos:
            address = str(info[4][0])
            if not is_public(address):
                raise ConfigError(f"alerts.webhooks.{i}.url: {_refusal(host, address)}")
