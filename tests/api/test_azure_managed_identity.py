"""`type: azure` with a managed identity on a VM: azure-identity asks the Instance Metadata
Service (a fake IMDS on loopback, found through AZURE_POD_IDENTITY_AUTHORITY_HOST as
azure-identity allows) for a token, in a real `tallygate serve`. The token is fetched on first
use with IMDS's header and query, reused, refreshed in the background before it expires while
requests go on with the current one; a VM without an identity is a 502 `upstream_auth_failed`,
OpenAI-shaped (Anthropic-shaped on /v1/messages), never a 500."""

from __future__ import annotations

import time
from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.fakes.azure import FakeAzure
from tests.fakes.imds import FakeImds
from tests.gateway import ADMIN_KEY, Gateway

HELLO = [{"role": "user", "content": "hi"}]
CONFIG = {"providers": {"az": {"type": "azure", "base_url": "", "timeout_s": 2,
                               "entra": {"credential": "managed_identity"}}},
          "models": {"mini": {"provider": "az", "model": "o4-mini"}}}


@pytest.fixture(scope="module")
def imds() -> Iterator[FakeImds]:
    with FakeImds(token_lifetime_s=200) as fake:  # 200 s: inside the 300 s refresh margin
        yield fake


@pytest.fixture(scope="module")
def azure(imds: FakeImds) -> Iterator[FakeAzure]:
    with FakeAzure(bearer_ok=imds.valid) as fake:
        yield fake


def start(folder: object, azure: FakeAzure, imds: FakeImds) -> Gateway:
    config = {**CONFIG, "providers": {"az": {**CONFIG["providers"]["az"], "base_url": azure.root_url}}}
    return Gateway(folder, config, env={"AZURE_POD_IDENTITY_AUTHORITY_HOST": imds.root_url}).start()  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def gateway(azure: FakeAzure, imds: FakeImds, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start(tmp_path_factory.mktemp("imds"), azure, imds)
    yield gw
    gw.stop()


@pytest.fixture()
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.base_url, api_key=ADMIN_KEY, max_retries=0) as c:
        yield c


def test_imds_token_is_fetched_once_then_refreshed_before_it_expires(client: openai.OpenAI, imds: FakeImds,
                                                                     azure: FakeAzure) -> None:
    for stream in (False, True, False):
        result = client.chat.completions.create(model="mini", messages=HELLO, stream=stream)  # type: ignore[call-overload]
        if stream:
            list(result)
    [asked] = imds.requests
    assert asked["headers"]["metadata"] == "true"
    assert asked["query"] == {"api-version": "2018-02-01", "resource": "https://cognitiveservices.azure.com"}
    assert [r["headers"]["authorization"] for r in azure.requests] == ["Bearer imds-access-1"] * 3
    time.sleep(31)  # azure-identity asks again for a still-valid token 30 s after its last ask only
    began = time.monotonic()
    client.chat.completions.create(model="mini", messages=HELLO)  # starts the refresh, does not wait for it
    assert time.monotonic() - began < 1.0
    deadline = time.monotonic() + 5
    while len(imds.tokens) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    client.chat.completions.create(model="mini", messages=HELLO)
    used = [r["headers"]["authorization"] for r in azure.requests]
    assert used[3] == "Bearer imds-access-1" and used[4] == "Bearer imds-access-2" and imds.valid(used[4])


def test_a_vm_without_an_identity_is_a_502_not_a_500(azure: FakeAzure,
                                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    with FakeImds(identity=False) as none:
        gw = start(tmp_path_factory.mktemp("no-identity"), azure, none)
        try:
            azure.clear()
            with openai.OpenAI(base_url=gw.base_url, api_key=ADMIN_KEY, max_retries=0) as client, \
                    pytest.raises(openai.APIStatusError) as refused:
                client.chat.completions.create(model="mini", messages=HELLO)
            assert refused.value.status_code == 502
            assert refused.value.body["code"] == "upstream_auth_failed"  # type: ignore[index]
            assert "Entra" in refused.value.body["message"]  # type: ignore[index]
            claude = anthropic.Anthropic(base_url=gw.url, api_key=ADMIN_KEY, max_retries=0)
            with pytest.raises(anthropic.APIStatusError) as messages:
                claude.messages.create(model="mini", max_tokens=10, messages=HELLO)  # type: ignore[arg-type]
            assert messages.value.status_code == 502 and messages.value.body["type"] == "error"  # type: ignore[index]
            assert none.requests and not azure.requests
            record = gw.log_record(refused.value.response.headers["x-request-id"])
            assert record["status"] == 502 and record["error"]["code"] == "upstream_auth_failed"
        finally:
            gw.stop()
