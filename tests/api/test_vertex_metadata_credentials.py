"""`type: vertex` without a key file, as on Compute Engine, GKE workload identity or Cloud Run:
google-auth's Application Default Credentials find the metadata server (a fake one on loopback,
through GCE_METADATA_HOST / GCE_METADATA_IP, which google-auth honours) and take its tokens, in
a real `tallygate serve`. A token is reused while valid, replaced once inside google-auth's
refresh margin (before it expires), and an instance without a service account is a 502
`upstream_auth_failed`, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from tests.fakes.vertex import FakeVertex
from tests.gateway import ADMIN_KEY, Gateway

HELLO = [{"role": "user", "content": "hello metadata"}]


@pytest.fixture(scope="module")
def vertex() -> Iterator[FakeVertex]:
    with FakeVertex() as fake:
        yield fake


def start(folder: Path, vertex: FakeVertex) -> Gateway:
    host = f"{vertex.host}:{vertex.port}"
    config = {"providers": {"vertex": {"type": "vertex", "project": "tally-project", "location": "europe-west4",
                                       "base_url": vertex.root_url, "timeout_s": 2}},
              "models": {"flash": {"provider": "vertex", "model": "gemini-2.5-flash"}}}
    env = {"GCE_METADATA_HOST": host, "GCE_METADATA_IP": host, "GOOGLE_APPLICATION_CREDENTIALS": "",
           "CLOUDSDK_CONFIG": str(folder / "no-gcloud"), "GCE_METADATA_TIMEOUT": "1"}
    return Gateway(folder, config, env=env).start()


@pytest.fixture(scope="module")
def gateway(vertex: FakeVertex, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start(tmp_path_factory.mktemp("gce"), vertex)
    yield gw
    gw.stop()


@pytest.fixture()
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.base_url, api_key=ADMIN_KEY, max_retries=0) as c:
        yield c


def bearers(vertex: FakeVertex) -> list[str]:
    return [r["headers"]["authorization"] for r in vertex.requests if ":generateContent" in r["path"]
            or ":streamGenerateContent" in r["path"]]


def test_metadata_server_token_is_refreshed_inside_the_margin_then_reused(client: openai.OpenAI,
                                                                         gateway: Gateway, vertex: FakeVertex) -> None:
    vertex.token_lifetime_s = 120  # inside google-auth's 3 min 45 s margin: replaced on the next request
    first = client.chat.completions.create(model="flash", messages=HELLO)  # type: ignore[arg-type]
    vertex.token_lifetime_s = 3600
    streamed = list(client.chat.completions.create(model="flash", messages=HELLO, stream=True))  # type: ignore[arg-type]
    claude_code = anthropic.Anthropic(base_url=gateway.url, api_key=ADMIN_KEY, max_retries=0)
    message = claude_code.messages.create(model="flash", max_tokens=20, messages=HELLO)  # type: ignore[arg-type]
    assert first.choices[0].message.content == "Echo: hello metadata"
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "Echo: hello metadata"
    assert message.content[0].text == "Echo: hello metadata"  # type: ignore[union-attr]
    token_asks = [r for r in vertex.requests if r["path"].endswith("/service-accounts/default/token")]
    assert len(token_asks) == 2 and all(r["headers"]["metadata-flavor"] == "Google" for r in token_asks)
    assert token_asks[0]["query"]["scopes"] == "https://www.googleapis.com/auth/cloud-platform"
    assert bearers(vertex) == ["Bearer ya29.fake-1", "Bearer ya29.fake-2", "Bearer ya29.fake-2"]
    assert gateway.log_record(message.id)["cost"] == gateway.log_record(first.id)["cost"]


def test_an_instance_without_a_service_account_is_a_502(tmp_path: Path) -> None:
    with FakeVertex() as bare:
        bare.metadata_account = False
        gw = start(tmp_path, bare)
        try:
            with openai.OpenAI(base_url=gw.base_url, api_key=ADMIN_KEY, max_retries=0) as client, \
                    pytest.raises(openai.APIStatusError) as refused:
                client.chat.completions.create(model="flash", messages=HELLO)  # type: ignore[arg-type]
        finally:
            gw.stop()
    assert refused.value.status_code == 502
    assert refused.value.body["code"] == "upstream_auth_failed"  # type: ignore[index]
    assert "Google access token" in refused.value.body["message"]  # type: ignore[index]
    assert any("/service-accounts/" in r["path"] for r in bare.requests) and not bearers(bare)
