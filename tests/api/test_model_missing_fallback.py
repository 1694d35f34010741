"""A target that does not have the model (an HTTP 404 saying so, in each provider's words) moves a
fallback policy on to its next target, through a real `tallygate serve` process: Bedrock's
ResourceNotFoundException and the ValidationExceptions it answers for a model id the region does
not offer or offers through an inference profile only (a 404 to the caller), Azure's
DeploymentNotFound, Gemini's and
Vertex AI's NOT_FOUND model, OpenAI's model_not_found, Anthropic's not_found_error. When no target
is left the caller gets a 404 in its API's shape, told not to retry. A 404 about something else
(a `previous_response_id` the provider does not know) is the caller's and ends the request at once."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.fakes.clouds import FakeClouds
from tests.gateway import ADMIN_KEY, Gateway

HELLO = [{"role": "user", "content": "hi"}]
FAKE_PRICE = {"input_per_mtok": "1", "output_per_mtok": "2"}
# target -> (provider, upstream model): each provider's "no such model here"
MISSING = {
    "oa-404": ("oa", "fail-404"), "an-404": ("an", "fail-404"), "az-404": ("az", "fail-404"),
    "br-404": ("br", "aws-ResourceNotFoundException"), "brc-404": ("brc", "aws-ResourceNotFoundException"),
    "br-region": ("br", "not-in-region"), "brc-on-demand": ("brc", "on-demand"),  # ValidationExceptions on AWS
    "ge-404": ("ge", "fail-404"), "vx-404": ("vx", "fail-404"), "vxc-404": ("vxc", "fail-404@1"),
}
TARGETS = {
    "missing-then-gemini": [*MISSING, "ge-ok"],
    "missing-everywhere": list(MISSING),
    "openai-then-azure": ["oa-ok", "az-ok"],
}
POLICIES = {name: {"strategy": "fallback", "targets": targets, "cooldown": {"failures": 1000}}
            for name, targets in TARGETS.items()}


@pytest.fixture(scope="module")
def gateway(clouds: FakeClouds, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    models: dict[str, dict] = {name: {"provider": p, "model": m} for name, (p, m) in MISSING.items()}
    for m in models.values():  # the fakes' failure scenarios are in no price list
        m["pricing"] = FAKE_PRICE
    models.update({"ge-ok": {"provider": "ge", "model": "gemini-2.5-flash"},
                   "az-ok": {"provider": "az", "model": "o4-mini"},
                   "oa-ok": {"provider": "oa", "model": "gpt-4o-mini"}})
    config = {"providers": clouds.providers(), "models": models, "policies": POLICIES}
    gw = Gateway(tmp_path_factory.mktemp("gw"), config,
                 env={**clouds.env, "TALLYGATE_LEDGER_FLUSH_MS": "20"}).start()
    yield gw
    gw.stop()
    assert "Traceback" not in gw.log(), gw.log()


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.base_url, api_key=ADMIN_KEY, max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def claude(gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key=ADMIN_KEY, max_retries=0) as c:
        yield c


def attempts(record: dict) -> list[tuple[str, int]]:
    return [(a["target"], a["status"]) for a in record["attempts"]]


def ask(client: openai.OpenAI, claude: anthropic.Anthropic, api: str, model: str, stream: bool) -> str:
    """One request on `api`; the gateway's request id."""
    if api == "chat":
        raw = client.chat.completions.with_raw_response.create(model=model, messages=HELLO, stream=stream)  # type: ignore[call-overload]
        list(raw.parse()) if stream else raw.parse()
    elif api == "messages":
        raw = claude.messages.with_raw_response.create(model=model, max_tokens=50, messages=HELLO, stream=stream)  # type: ignore[call-overload]
        list(raw.parse()) if stream else raw.parse()
    else:
        raw = client.responses.with_raw_response.create(model=model, input="hi", stream=stream)  # type: ignore[call-overload]
        list(raw.parse()) if stream else raw.parse()
    return str(raw.headers["x-request-id"])


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", ["chat", "messages", "responses"])
def test_a_target_without_the_model_moves_the_policy_on(client: openai.OpenAI, claude: anthropic.Anthropic,
                                                        gateway: Gateway, api: str, stream: bool) -> None:
    """Every provider type's "no such model" 404 in turn, natively relayed or translated; Gemini serves."""
    record = gateway.log_record(ask(client, claude, api, "policy/missing-then-gemini", stream))
    assert attempts(record) == [(t, 404) for t in MISSING] + [("ge-ok", 200)]
    assert record["provider"] == "ge" and record["status"] == 200


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["policy/missing-everywhere", *MISSING])
def test_no_target_with_the_model_is_a_404_in_the_apis_shape(client: openai.OpenAI, claude: anthropic.Anthropic,
                                                             gateway: Gateway, model: str, stream: bool) -> None:
    with pytest.raises(openai.NotFoundError) as chat:
        ask(client, claude, "chat", model, stream)
    with pytest.raises(anthropic.NotFoundError) as messages:
        ask(client, claude, "messages", model, stream)
    for exc in (chat.value, messages.value):
        assert exc.response.headers["x-should-retry"] == "false"
    expected = "all_targets_failed" if model.startswith("policy/") else "upstream_model_not_found"
    assert chat.value.body["code"] == expected  # type: ignore[index]
    assert messages.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    if model.startswith("policy/"):
        record = gateway.log_record(chat.value.response.headers["x-request-id"])
        assert attempts(record) == [(t, 404) for t in MISSING]


@pytest.mark.parametrize("stream", [False, True])
def test_a_404_about_something_else_is_not_retried(client: openai.OpenAI, gateway: Gateway, clouds: FakeClouds,
                                                   stream: bool) -> None:
    """A response id OpenAI does not know: Azure would not know it either, and is never asked."""
    clouds.clear()
    with pytest.raises(openai.NotFoundError) as exc:
        made = client.responses.create(model="policy/openai-then-azure", input="hi", stream=stream,
                                       previous_response_id="resp_unknown_1")
        list(made) if stream else made  # type: ignore[call-overload]
    assert exc.value.response.headers["x-should-retry"] == "false"
    assert exc.value.body["code"] == "upstream_rejected"  # type: ignore[index]
    assert "Previous response with id" in exc.value.body["message"]  # type: ignore[index]
    assert attempts(gateway.log_record(exc.value.response.headers["x-request-id"])) == [("oa-ok", 404)]
    assert clouds.azure.requests == []
