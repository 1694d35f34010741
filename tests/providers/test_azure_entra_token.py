"""The Entra token holder: fetched on first use only, reused while valid, refreshed in the
background (the request goes on with the current token) once inside the refresh margin, waited
for only when missing or nearly expired, and its credential closed when the providers stop."""

from __future__ import annotations

import asyncio
import time

from azure.core.credentials import AccessToken

from tallygate.providers.azure_entra import EntraToken
from tallygate.providers.registry import ProviderSet
from tallygate.settings import AzureEntraConfig

CFG = AzureEntraConfig(credential="managed_identity")


class Credential:
    """An azure-identity credential stand-in: each get_token hands out the next lifetime."""

    def __init__(self, *lifetimes: float, delay: float = 0.0) -> None:
        self.lifetimes, self.delay = list(lifetimes), delay
        self.asked = 0
        self.closed = False

    async def get_token(self, *scopes: str) -> AccessToken:
        self.asked += 1
        await asyncio.sleep(self.delay)
        return AccessToken(f"t{self.asked}", int(time.time() + self.lifetimes.pop(0)))

    async def close(self) -> None:
        self.closed = True


def test_first_use_fetches_then_reuses() -> None:
    credential = Credential(3600)
    token = EntraToken("az", CFG, credential)
    assert credential.asked == 0  # nothing at start-up

    async def scenario() -> list[str]:
        return [await token.authorization() for _ in range(3)]

    assert asyncio.run(scenario()) == ["Bearer t1"] * 3 and credential.asked == 1


def test_near_expiry_refreshes_in_the_background_without_waiting() -> None:
    credential = Credential(200, 3600, delay=0.2)  # 200 s left: inside the 300 s margin
    token = EntraToken("az", CFG, credential)

    async def scenario() -> tuple[str, float, str]:
        await token.authorization()  # the first fetch is waited for
        token._next_background = 0.0  # 30 s later (azure-identity asks Entra again after 30 s only)
        began = time.perf_counter()
        during = await token.authorization()
        waited = time.perf_counter() - began
        await asyncio.sleep(0.3)
        return during, waited, await token.authorization()

    during, waited, after = asyncio.run(scenario())
    assert during == "Bearer t1" and waited < 0.05 and after == "Bearer t2" and credential.asked == 2


def test_nearly_expired_token_is_waited_for() -> None:
    credential = Credential(10, 3600, delay=0.1)  # 10 s left after the first fetch: under 30 s
    token = EntraToken("az", CFG, credential)

    async def scenario() -> tuple[str, str, float]:
        first = await token.authorization()  # the best there is
        began = time.perf_counter()
        second = await token.authorization()  # not sent with 10 s left: a new one is waited for
        return first, second, time.perf_counter() - began

    first, second, waited = asyncio.run(scenario())
    assert (first, second) == ("Bearer t1", "Bearer t2") and waited >= 0.1


def test_stopping_the_providers_closes_the_credential() -> None:
    from tallygate.providers.azure import AzureOpenAIProvider
    from tallygate.providers.http import HttpClient
    from tallygate.settings import ProviderConfig

    provider = AzureOpenAIProvider("az", ProviderConfig(type="azure", base_url="https://r.openai.azure.com",
                                                        entra=CFG), HttpClient())
    credential = Credential(3600)
    provider._entra = EntraToken("az", CFG, credential)  # type: ignore[assignment]
    asyncio.run(ProviderSet({"az": provider}).stop())
    assert credential.closed
