"""Webhooks go only where they were meant to: no redirects followed; loopback, private,
link-local and metadata addresses refused (in the config, at start-up and when connecting)
unless the hook sets `allow_private`; no credentials in the URL."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from pydantic import ValidationError

from tallygate.observe.webhook_guard import PrivateAddressRefused, PublicOnlyResolver
from tallygate.observe.webhooks import WebhookSender
from tallygate.settings import ConfigError, WebhookConfig
from tests.observe.receiver import Receiver

EVENT = {"id": "alert-1", "kind": "threshold", "summary": "x"}


async def _deliver(sender: WebhookSender) -> None:
    await sender.start()
    sender.deliver([EVENT])
    while sender.pending:
        await asyncio.sleep(0.02)
    await sender.stop()


def test_a_redirect_is_not_followed_and_counts_as_a_failed_delivery(caplog) -> None:  # type: ignore[no-untyped-def]
    with Receiver("s") as target, Receiver("s") as redirector:
        redirector.redirect_to = target.url  # e.g. an admin URL on the gateway's own host
        hook = WebhookConfig(url=redirector.url, secret="s", retry_for_s=0.2, allow_private=True)
        sender = WebhookSender([hook], first_backoff_s=0.05)
        asyncio.run(_deliver(sender))
        assert redirector.received and all(status == 307 for _, _, status in redirector.received)
        assert target.received == []
    assert sender.delivered == 0 and sender.dropped == 1
    assert "redirects are not followed" in caplog.text


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://169.254.169.254/latest/meta-data",
                                 "http://10.0.0.5/hook", "http://[::1]:8400/v1/manage/apikey",
                                 "http://[::ffff:127.0.0.1]/hook", "http://100.100.100.200/x",
                                 "http://[fd00:ec2::254]/", "http://0.0.0.0:8400/"])
def test_a_private_ip_url_is_refused_by_the_config_unless_allowed(url: str) -> None:
    with pytest.raises(ValidationError, match="not a public address"):
        WebhookConfig(url=url, secret="s")
    assert WebhookConfig(url=url, secret="s", allow_private=True).allow_private


@pytest.mark.parametrize("url", ["https://user:pass@hooks.example.com/x", "https://token@hooks.example.com/x",
                                 "https://:pw@hooks.example.com/x"])
def test_credentials_in_a_webhook_url_are_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="credentials"):
        WebhookConfig(url=url, secret="s", allow_private=True)


def test_a_hook_whose_name_resolves_to_loopback_stops_the_start_up() -> None:
    with Receiver("s") as receiver:
        url = receiver.url.replace("127.0.0.1", "localhost")
        sender = WebhookSender([WebhookConfig(url=url, secret="s")])
        with pytest.raises(ConfigError, match="localhost resolves to .*not a public address"):
            asyncio.run(sender.start())
        allowed = WebhookSender([WebhookConfig(url=url, secret="s", allow_private=True)])
        asyncio.run(_deliver(allowed))
        assert allowed.delivered == 1 and len(receiver.received) == 1


def test_at_send_time_the_checked_addresses_are_the_ones_connected_to() -> None:
    """What a rebinding name resolves to when the POST is made: refused before any connection."""
    with Receiver("s") as receiver:
        url = receiver.url.replace("127.0.0.1", "localhost")

        async def post() -> BaseException | None:
            connector = aiohttp.TCPConnector(resolver=PublicOnlyResolver())
            async with aiohttp.ClientSession(connector=connector) as session:
                try:
                    async with session.post(url, data=b"{}"):
                        return None
                except aiohttp.ClientConnectorError as exc:
                    return exc.os_error

        assert isinstance(asyncio.run(post()), PrivateAddressRefused)
        assert receiver.received == []


def test_the_resolver_passes_public_addresses_through() -> None:
    async def resolve() -> list[str]:
        resolver = PublicOnlyResolver()
        try:
            return [r["host"] for r in await resolver.resolve("8.8.8.8", 443, socket.AF_INET)]
        finally:
            await resolver.close()

    assert asyncio.run(resolve()) == ["8.8.8.8"]
