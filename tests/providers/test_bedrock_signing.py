"""Bedrock's cached SigV4 signer gives exactly botocore's signature (same clock, same request),
over many requests and across days and credentials; re-reading AWS credentials never holds up a
request once the first ones are in hand."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tallygate.providers.bedrock import BedrockProvider
from tallygate.providers.http import HttpClient
from tallygate.providers.sigv4 import CachedSigV4Auth, sign
from tallygate.settings import ProviderConfig

URL = "https://bedrock-runtime.us-east-1.amazonaws.com/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse"
HEADERS = {"Content-Type": "application/json", "Accept": "application/json", "X-Team": "a b"}


def botocore_headers(creds: Credentials, body: bytes) -> dict[str, str]:
    request = AWSRequest(method="POST", url=URL, data=body, headers=HEADERS)
    SigV4Auth(creds, "bedrock", "us-east-1").add_auth(request)
    return dict(request.headers.items())


@pytest.mark.parametrize("token", [None, "session-token-1"])
def test_cached_signer_signs_as_botocore_does(monkeypatch: pytest.MonkeyPatch, token: str | None) -> None:
    creds = Credentials("AKIAFAKE000000000001", "secret/key+1", token).get_frozen_credentials()
    signer = CachedSigV4Auth(creds, "bedrock", "us-east-1")
    for day, body in [(1, b'{"messages": []}'), (1, b'{"messages": [1]}'), (2, b"{}"), (2, b"")]:
        now = dt.datetime(2026, 12, day, 20, 15, 7)
        monkeypatch.setattr("botocore.auth.get_current_datetime", lambda now=now: now)
        ours = sign(signer, URL, HEADERS, body)
        theirs = botocore_headers(creds, body)
        assert ours["Authorization"] == theirs["Authorization"] and ours["X-Amz-Date"] == theirs["X-Amz-Date"]
        assert ours.get("X-Amz-Security-Token") == token


class SlowCredentials(BedrockProvider):
    """Credentials whose every re-read takes 0.5 s (an STS call, a metadata server)."""

    loads = 0

    def _load_credentials(self) -> Any:
        self.loads += 1
        if self.loads > 1:
            time.sleep(0.5)
        return Credentials(f"AKIAFAKE00000000000{self.loads}", "secret").get_frozen_credentials()


def test_credential_reread_runs_beside_requests_not_before_them() -> None:
    provider = SlowCredentials("b", ProviderConfig(type="bedrock", region="us-east-1"), HttpClient())

    async def scenario() -> tuple[float, str, str]:
        first = await provider._signed(URL, b"{}", "application/json")
        provider._credentials_at -= 61  # past the 60 s re-read interval
        began = time.perf_counter()
        during = await provider._signed(URL, b"{}", "application/json")
        waited = time.perf_counter() - began
        assert first["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIAFAKE000000000001/")
        while provider.loads < 2 or provider._reload is not None:
            await asyncio.sleep(0.01)
        after = await provider._signed(URL, b"{}", "application/json")
        return waited, during["Authorization"], after["Authorization"]

    waited, during, after = asyncio.run(scenario())
    assert waited < 0.1  # signed with the credentials in hand while the re-read ran
    assert "Credential=AKIAFAKE000000000001/" in during and "Credential=AKIAFAKE000000000002/" in after
