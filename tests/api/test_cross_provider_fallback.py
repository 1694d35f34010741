"""A fallback policy may mix every provider type: upstream throttling on openai, anthropic, azure,
bedrock, gemini and vertex (Gemini and Claude) moves the request on to the next target; every
upstream error answer says `x-should-retry` (true for throttling, quota, overload and 5xx, false
for refused credentials and bad bodies); Bedrock's ModelNotReadyException is a retryable 503."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.fakes.azure import KEY as AZURE_KEY
from tests.fakes.azure import FakeAzure
from tests.fakes.bedrock import API_KEY as BEDROCK_KEY
from tests.fakes.bedrock import FakeBedrock
from tests.fakes.gemini import KEY as GEMINI_KEY
from tests.fakes.gemini import FakeGemini
from tests.fakes.upstream import FakeUpstream
from tests.fakes.vertex import FakeVertex
from tests.gateway import ADMIN_KEY, InProcessGateway

THROTTLED = ["oa-429", "an-429", "az-429", "br-429", "ge-429", "vx-429", "vxc-429"]
HELLO = [{"role": "user", "content": "hi"}]


FAKE_PRICE = {"input_per_mtok": "1", "output_per_mtok": "2"}  # the fake's failure scenarios are in no price list


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    with FakeUpstream() as up, FakeAzure() as az, FakeBedrock() as br, FakeGemini() as ge, FakeVertex() as vx:
        sa = str(vx.service_account_file(tmp_path_factory.mktemp("sa")))
        vertex = {"type": "vertex", "project": "p", "location": "us-central1", "base_url": vx.root_url,
                  "credentials_file": sa}
        providers = {
            "oa": {"type": "openai", "base_url": up.base_url, "api_key": "sk-up"},
            "an": {"type": "anthropic", "base_url": up.root_url, "api_key": "sk-ant-up"},
            "az": {"type": "azure", "base_url": az.root_url, "api_key": AZURE_KEY},
            "br": {"type": "bedrock", "region": "us-east-1", "base_url": br.root_url, "api_key": BEDROCK_KEY},
            "ge": {"type": "gemini", "base_url": ge.root_url, "api_key": GEMINI_KEY},
            "vx": vertex,
            "vxc": {**vertex, "publisher": "anthropic"},
        }
        models = {f"{p}-429": {"provider": p, "model": "fail-429"} for p in providers if p != "vxc"}
        models["vxc-429"] = {"provider": "vxc", "model": "fail-429@1"}
        models.update({
            "br-429": {"provider": "br", "model": "fail-429", "pricing": FAKE_PRICE},  # Bedrock: priced or refused
            "br-ok": {"provider": "br", "model": "amazon.nova-lite-v1:0"},
            "ge-ok": {"provider": "ge", "model": "gemini-2.5-flash"},
            "br-not-ready": {"provider": "br", "model": "not-ready", "pricing": FAKE_PRICE},
            "br-400": {"provider": "br", "model": "fail-400", "pricing": FAKE_PRICE},
            "ge-badkey": {"provider": "ge-bad", "model": "gemini-2.5-flash"},
        })
        providers["ge-bad"] = {"type": "gemini", "base_url": ge.root_url, "api_key": "wrong"}
        policies = {
            "everywhere": {"strategy": "fallback", "targets": [*THROTTLED, "br-ok"]},
            "all-throttled": {"strategy": "fallback", "targets": THROTTLED},
            "not-ready-then-gemini": {"strategy": "fallback", "targets": ["br-not-ready", "ge-ok"]},
        }
        config = {"providers": providers, "models": models, "policies": policies}
        gw = InProcessGateway(tmp_path_factory.mktemp("gw"), config).start()
        yield gw
        gw.stop()


@pytest.fixture()
def client(gateway: InProcessGateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.base_url, api_key=ADMIN_KEY, max_retries=0) as c:
        yield c


def attempts(record: dict) -> list[tuple[str, int]]:
    return [(a["target"], a["status"]) for a in record["attempts"]]


@pytest.mark.parametrize("stream", [False, True])
def test_throttling_on_each_provider_type_moves_to_the_next(client: openai.OpenAI, gateway: InProcessGateway,
                                                             stream: bool) -> None:
    if stream:
        chunks = list(client.chat.completions.create(model="policy/everywhere", messages=HELLO, stream=True))  # type: ignore[arg-type]
        rid = chunks[0].id
    else:
        rid = client.chat.completions.create(model="policy/everywhere", messages=HELLO).id  # type: ignore[arg-type]
    record = gateway.log_record(rid)
    assert attempts(record) == [(t, 429) for t in THROTTLED] + [("br-ok", 200)]
    assert record["provider"] == "br" and record["status"] == 200


def test_throttled_everywhere_is_a_429_to_retry(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="policy/all-throttled", messages=HELLO)  # type: ignore[arg-type]
    headers = exc.value.response.headers
    assert headers["x-should-retry"] == "true" and headers["retry-after"] == "2"


@pytest.mark.parametrize("model", THROTTLED)
def test_each_throttled_provider_says_retry(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model=model, messages=HELLO)  # type: ignore[arg-type]
    assert exc.value.response.headers["x-should-retry"] == "true"


def test_bedrock_model_not_ready_is_a_retryable_503_and_falls_through(client: openai.OpenAI,
                                                                       gateway: InProcessGateway) -> None:
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="br-not-ready", messages=HELLO)  # type: ignore[arg-type]
    assert exc.value.status_code == 503 and exc.value.body["code"] == "upstream_overloaded"  # type: ignore[index]
    assert exc.value.response.headers["x-should-retry"] == "true"
    done = client.chat.completions.create(model="policy/not-ready-then-gemini", messages=HELLO)  # type: ignore[arg-type]
    assert attempts(gateway.log_record(done.id)) == [("br-not-ready", 503), ("ge-ok", 200)]


@pytest.mark.parametrize(("model", "status"), [("br-400", 400), ("ge-badkey", 502)])
def test_validation_and_refused_credentials_say_do_not_retry(client: openai.OpenAI, model: str, status: int) -> None:
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(model=model, messages=HELLO)  # type: ignore[arg-type]
    assert exc.value.status_code == status and exc.value.response.headers["x-should-retry"] == "false"


def test_anthropic_shaped_errors_carry_it_too(gateway: InProcessGateway) -> None:
    with anthropic.Anthropic(base_url=gateway.url, api_key=ADMIN_KEY, max_retries=0) as claude:
        with pytest.raises(anthropic.RateLimitError) as exc:
            claude.messages.create(model="vxc-429", max_tokens=5, messages=HELLO)  # type: ignore[arg-type]
    assert exc.value.response.headers["x-should-retry"] == "true"
