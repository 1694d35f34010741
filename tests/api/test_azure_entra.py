"""`type: azure` with Microsoft Entra tokens from azure-identity, in a real `tallygate serve`:
client secret, workload identity (federated token file) and managed identity (App Service's
IDENTITY_ENDPOINT) against a fake Entra authority over TLS; the token is fetched on first use,
reused, refreshed in the background before it expires, and the fake Azure resource only takes
tokens the fake Entra issued. A refused secret is a 502 `upstream_auth_failed`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tallygate.settings import ConfigError, parse_config
from tests.fakes.azure import FakeAzure
from tests.fakes.entra import CLIENT_ID, FEDERATED, IDENTITY_HEADER, SECRET, TENANT, FakeEntra
from tests.gateway import ADMIN_KEY, Gateway

HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def entra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeEntra]:
    with FakeEntra(tmp_path_factory.mktemp("entra")) as fake:
        yield fake


@pytest.fixture(scope="module")
def short_entra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeEntra]:
    with FakeEntra(tmp_path_factory.mktemp("entra-short"), token_lifetime_s=200) as fake:  # inside the margin
        yield fake


@pytest.fixture(scope="module")
def azure(entra: FakeEntra, short_entra: FakeEntra) -> Iterator[FakeAzure]:
    with FakeAzure(bearer_ok=lambda h: entra.valid(h) or short_entra.valid(h)) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(entra: FakeEntra, short_entra: FakeEntra, azure: FakeAzure,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("gw")
    (folder / "federated-token").write_text(FEDERATED)
    both = folder / "ca.pem"
    both.write_text(entra.ca_file.read_text() + short_entra.ca_file.read_text())
    secret = {"credential": "client_secret", "tenant_id": TENANT, "client_id": CLIENT_ID,
              "client_secret": "env:AZURE_CLIENT_SECRET", "authority_host": entra.root_url}

    def az(entra_cfg: dict) -> dict:
        return {"type": "azure", "base_url": azure.root_url, "entra": entra_cfg, "timeout_s": 2}

    config = {
        "providers": {
            "az-secret": az(secret),
            "az-short": az({**secret, "authority_host": short_entra.root_url}),
            "az-wrong": az({**secret, "client_secret": "env:WRONG_SECRET"}),
            "az-workload": az({"credential": "workload_identity", "tenant_id": TENANT, "client_id": CLIENT_ID,
                               "token_file": str(folder / "federated-token"), "authority_host": entra.root_url}),
            "az-managed": az({"credential": "managed_identity"}),
        },
        "models": {name: {"provider": f"az-{name}", "model": "o4-mini"}
                   for name in ("secret", "short", "wrong", "workload", "managed")},
    }
    env = {"AZURE_CLIENT_SECRET": SECRET, "WRONG_SECRET": "not-the-secret", "SSL_CERT_FILE": str(both),
           "IDENTITY_ENDPOINT": entra.root_url + "/msi/token", "IDENTITY_HEADER": IDENTITY_HEADER}
    gw = Gateway(folder, config, env=env).start()
    yield gw
    gw.stop()


@pytest.fixture()
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.base_url, api_key=ADMIN_KEY, max_retries=0) as c:
        yield c


def bearers(azure: FakeAzure, model: str) -> list[str]:
    return [r["headers"]["authorization"] for r in azure.requests if r["body"].get("model") == model]


def test_client_secret_token_is_fetched_once_and_reaches_azure(client: openai.OpenAI, entra: FakeEntra,
                                                               azure: FakeAzure) -> None:
    issued = len(entra.tokens)
    for stream in (False, True, False):
        result = client.chat.completions.create(model="secret", messages=HELLO, stream=stream)  # type: ignore[call-overload]
        if stream:
            list(result)
    grants = [r for r in entra.requests if r["path"] == f"/{TENANT}/oauth2/v2.0/token"
              and r["body"] is None and b"client_secret=" in r["raw"]]
    assert len(entra.tokens) == issued + 1 and len(grants) == 1
    used = bearers(azure, "o4-mini")[-3:]
    assert len(set(used)) == 1 and entra.valid(used[0])


def test_token_near_expiry_is_refreshed_in_the_background(client: openai.OpenAI, short_entra: FakeEntra,
                                                          azure: FakeAzure) -> None:
    azure.clear()
    client.chat.completions.create(model="short", messages=HELLO)  # first use: waits for the token
    client.chat.completions.create(model="short", messages=HELLO)  # 200 s left < 300 s margin, but
    assert len(short_entra.tokens) == 1  # azure-identity asks Entra again 30 s after its last ask only
    time.sleep(31)
    began = time.monotonic()
    client.chat.completions.create(model="short", messages=HELLO)  # starts the refresh, does not wait for it
    assert time.monotonic() - began < 1.0
    deadline = time.monotonic() + 5
    while len(short_entra.tokens) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    client.chat.completions.create(model="short", messages=HELLO)
    used = [r["headers"]["authorization"] for r in azure.requests]
    assert used[:3] == ["Bearer entra-access-1"] * 3 and used[3] == "Bearer entra-access-2"


def test_workload_identity_exchanges_the_federated_token(client: openai.OpenAI, entra: FakeEntra,
                                                         azure: FakeAzure) -> None:
    azure.clear()
    client.chat.completions.create(model="workload", messages=HELLO)
    assert any(b"client_assertion=" + FEDERATED.encode() in r["raw"] for r in entra.requests)
    assert entra.valid(azure.requests[-1]["headers"]["authorization"])


def test_managed_identity_uses_the_identity_endpoint(client: openai.OpenAI, entra: FakeEntra,
                                                     azure: FakeAzure) -> None:
    azure.clear()
    client.chat.completions.create(model="managed", messages=HELLO)
    msi = [r for r in entra.requests if r["path"] == "/msi/token"]
    assert msi and msi[-1]["query"]["resource"] == "https://cognitiveservices.azure.com"
    assert entra.valid(azure.requests[-1]["headers"]["authorization"])


def test_refused_secret_is_a_502_naming_no_secret(client: openai.OpenAI, azure: FakeAzure) -> None:
    azure.clear()
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="wrong", messages=HELLO)
    assert refused.value.status_code == 502 and refused.value.body["code"] == "upstream_auth_failed"  # type: ignore[index]
    assert "not-the-secret" not in refused.value.response.text and not azure.requests


@pytest.mark.parametrize(("entra", "message"), [
    ({"credential": "client_secret", "tenant_id": "t"}, "needs tenant_id, client_id and client_secret"),
    ({"credential": "managed_identity", "authority_host": "http://login"}, "must be an https:// URL"),
    ({"credential": "managed_identity", "token_file": "/x"}, "token_file applies to credential: workload_identity"),
])
def test_bad_entra_config_is_an_error_naming_the_field(entra: dict, message: str) -> None:
    provider = {"type": "azure", "base_url": "https://r.openai.azure.com", "entra": entra}
    with pytest.raises(ConfigError, match=f"providers.p.entra: .*{message}"):
        parse_config({"providers": {"p": provider}, "models": {}}, env={})


def test_entra_is_for_azure_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="entra applies to type: azure only"):
        parse_config({"providers": {"p": {"type": "openai", "entra": {"credential": "managed_identity"}}},
                      "models": {}}, env={})
