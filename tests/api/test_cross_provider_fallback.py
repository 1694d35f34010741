"""Upstream errors of every provider type through a real `tallygate serve` process, and fallback
policies mixing them. Each provider's throttling, quota, refused credentials, bad request and
"not ready" answer maps to the right status and `x-should-retry` (true for throttling, quota,
overload and 5xx; false for refused credentials and bad bodies), streamed or not, OpenAI- or
Anthropic-shaped. A policy moves across provider types on the retryable ones and on refused
credentials, records every attempt and charges the one that served at its own price; a
non-retryable 400 ends the request at once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import anthropic
import openai
import pytest

from tests.fakes.clouds import FakeClouds
from tests.fakes.vertex import FakeVertex
from tests.gateway import ADMIN_KEY, Gateway

THROTTLED = ["oa-429", "an-429", "az-429", "br-429", "ge-429", "vx-429", "vxc-429"]
HELLO = [{"role": "user", "content": "hi"}]
FAKE_PRICE = {"input_per_mtok": "1", "output_per_mtok": "2"}  # the fake's failure scenarios are in no price list
O4_MINI = (Decimal("1.1"), Decimal("4.4"))  # genai-prices' azure list, $/Mtok in and out
HAIKU = (Decimal("1"), Decimal("5"))  # genai-prices' google list (Claude on Vertex)
FLASH = (Decimal("0.3"), Decimal("2.5"))  # genai-prices' google list (Gemini)
# model -> (provider, upstream model): each provider's failures, as the fakes answer them
FAILING = {
    "az-400": ("az", "fail-400"), "az-503": ("az", "fail-503"), "az-badkey": ("az-bad", "o4-mini"),
    "br-quota": ("br", "aws-ServiceQuotaExceededException"),  # HTTP 400 on AWS, yet a quota
    "br-400": ("br", "aws-ValidationException"), "br-denied": ("br", "aws-AccessDeniedException"),
    "br-not-ready": ("br", "not-ready"), "br-timeout": ("br", "aws-ModelTimeoutException"),
    "brc-429": ("brc", "fail-429"), "brc-quota": ("brc", "aws-ServiceQuotaExceededException"),
    "brc-400": ("brc", "aws-ValidationException"),
    "ge-400": ("ge", "fail-400"), "ge-503": ("ge", "fail-503"), "ge-badkey": ("ge-bad", "gemini-2.5-flash"),
    "vx-400": ("vx", "fail-400"), "vx-503": ("vx", "fail-503"), "vx-forged": ("vx-forged", "gemini-2.5-flash"),
    "vxc-400": ("vxc", "fail-400@1"), "vxc-529": ("vxc", "fail-529@1"),
}
# model -> (status, x-should-retry, code) the client gets
ANSWERS = {
    "az-429": (429, "true", "upstream_rate_limited"), "az-400": (400, "false", "upstream_rejected"),
    "az-503": (503, "true", "upstream_overloaded"), "az-badkey": (502, "false", "upstream_auth_failed"),
    "br-429": (429, "true", "upstream_rate_limited"), "br-quota": (429, "true", "upstream_rate_limited"),
    "br-400": (400, "false", "upstream_rejected"), "br-denied": (502, "false", "upstream_auth_failed"),
    "br-not-ready": (503, "true", "upstream_overloaded"), "br-timeout": (502, "true", "upstream_server_error"),
    "ge-429": (429, "true", "upstream_rate_limited"), "ge-400": (400, "false", "upstream_rejected"),
    "ge-503": (503, "true", "upstream_overloaded"), "ge-badkey": (502, "false", "upstream_auth_failed"),
    "vx-429": (429, "true", "upstream_rate_limited"), "vx-400": (400, "false", "upstream_rejected"),
    "vx-503": (503, "true", "upstream_overloaded"), "vx-forged": (502, "false", "upstream_auth_failed"),
    "vxc-429": (429, "true", "upstream_rate_limited"), "vxc-400": (400, "false", "upstream_rejected"),
    "vxc-529": (503, "true", "upstream_overloaded"),
}
MESSAGES_ANSWERS = {  # /v1/messages on the native Claude providers: (status, x-should-retry, Anthropic error type)
    "brc-429": (429, "true", "rate_limit_error"), "brc-quota": (429, "true", "rate_limit_error"),
    "brc-400": (400, "false", "invalid_request_error"), "vxc-429": (429, "true", "rate_limit_error"),
    "vxc-400": (400, "false", "invalid_request_error"), "vxc-529": (503, "true", "overloaded_error"),
}
TARGETS = {
    "everywhere": [*THROTTLED, "br-ok"],
    "all-throttled": THROTTLED,
    "not-ready-then-gemini": ["br-not-ready", "ge-ok"],
    "bedrock-vertex-azure": ["br-429", "vx-429", "az-ok"],
    "claude-native-then-gemini": ["brc-429", "vxc-429", "az-429", "ge-ok"],  # native Messages, then translated
    "quota-overload-then-claude": ["br-quota", "ge-503", "vx-forged", "vxc-ok"],
    "invalid-then-azure": ["br-400", "az-ok"],
    "claude-invalid-then-azure": ["vxc-400", "az-ok"],
}
# every failing target is tried every time: no circuit opens, however often a test fails it
POLICIES = {name: {"strategy": "fallback", "targets": targets, "cooldown": {"failures": 1000}}
            for name, targets in TARGETS.items()}


@pytest.fixture(scope="module")
def gateway(clouds: FakeClouds, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    providers = clouds.providers()
    forged = FakeVertex()  # never started: its key signs JWTs the Vertex fake does not trust
    forged.port = clouds.vertex.port
    providers.update({
        "az-bad": {**providers["az"], "api_key": "wrong"}, "ge-bad": {**providers["ge"], "api_key": "wrong"},
        "vx-forged": {**providers["vx"], "credentials_file": str(forged.service_account_file(
            tmp_path_factory.mktemp("forged")))}})
    models = {f"{p}-429": {"provider": p, "model": "fail-429"} for p in ("oa", "an", "az", "br", "ge", "vx")}
    models.update({name: {"provider": p, "model": m} for name, (p, m) in FAILING.items()})
    for m in models.values():  # Bedrock: priced or refused at start-up
        if m["provider"] in ("br", "brc"):
            m["pricing"] = FAKE_PRICE
    models.update({
        "vxc-429": {"provider": "vxc", "model": "fail-429@1"},
        "br-ok": {"provider": "br", "model": "amazon.nova-lite-v1:0"},
        "ge-ok": {"provider": "ge", "model": "gemini-2.5-flash"},
        "az-ok": {"provider": "az", "model": "o4-mini"},
        "vxc-ok": {"provider": "vxc", "model": "claude-haiku-4-5@20251001"},
    })
    config = {"providers": providers, "models": models, "policies": POLICIES}
    env = {**clouds.env, "TALLYGATE_LEDGER_FLUSH_MS": "20"}
    gw = Gateway(tmp_path_factory.mktemp("gw"), config, env=env).start()
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


@pytest.mark.parametrize("stream", [False, True])
def test_throttling_on_each_provider_type_moves_to_the_next(client: openai.OpenAI, gateway: Gateway,
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


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", ["chat", "messages", "responses"])
@pytest.mark.parametrize("model", ANSWERS)
def test_each_providers_errors_map_to_a_status_and_whether_to_retry(client: openai.OpenAI, claude: anthropic.Anthropic,
                                                                     model: str, api: str, stream: bool) -> None:
    """On every inbound API, native or translated (Messages and Responses through chat)."""
    status, retry, code = ANSWERS[model]
    with pytest.raises((openai.APIStatusError, anthropic.APIStatusError)) as exc:
        if api == "chat":
            list(client.chat.completions.create(model=model, messages=HELLO, stream=True)) if stream \
                else client.chat.completions.create(model=model, messages=HELLO)  # type: ignore[arg-type]
        elif api == "messages":
            claude.messages.create(model=model, max_tokens=5, messages=HELLO, stream=stream)  # type: ignore[arg-type]
        else:
            list(client.responses.create(model=model, input="hi", stream=True)) if stream \
                else client.responses.create(model=model, input="hi")
    assert (exc.value.status_code, exc.value.response.headers["x-should-retry"]) == (status, retry)
    if api != "messages":  # Anthropic-shaped there: no code
        assert exc.value.body["code"] == code  # type: ignore[index]
    assert "wrong" not in exc.value.response.text and "PRIVATE KEY" not in exc.value.response.text


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", MESSAGES_ANSWERS)
def test_native_claude_providers_errors_are_anthropic_shaped(claude: anthropic.Anthropic, model: str,
                                                              stream: bool) -> None:
    """/v1/messages relayed to Bedrock's InvokeModel and Vertex's rawPredict: the same mapping,
    in Anthropic's error shape."""
    status, retry, kind = MESSAGES_ANSWERS[model]
    ask = {"model": model, "max_tokens": 5, "messages": HELLO}
    with pytest.raises(anthropic.APIStatusError) as exc:
        if stream:
            with claude.messages.stream(**ask) as events:  # type: ignore[arg-type]
                events.get_final_message()
        else:
            claude.messages.create(**ask)  # type: ignore[arg-type]
    assert (exc.value.status_code, exc.value.response.headers["x-should-retry"]) == (status, retry)
    assert exc.value.body["error"]["type"] == kind  # type: ignore[index]


def test_bedrock_model_not_ready_falls_through(client: openai.OpenAI, gateway: Gateway) -> None:
    done = client.chat.completions.create(model="policy/not-ready-then-gemini", messages=HELLO)  # type: ignore[arg-type]
    assert attempts(gateway.log_record(done.id)) == [("br-not-ready", 503), ("ge-ok", 200)]


def served(gateway: Gateway, request_id: str, prompt: int, output: int, price: tuple[Decimal, Decimal]) -> dict:
    """The ledger record, checked to charge the client's token counts at the serving target's price."""
    record = gateway.log_record(request_id)
    assert (record["usage"]["input_tokens"], record["usage"]["output_tokens"]) == (prompt, output)
    assert Decimal(record["cost"]) == (prompt * price[0] + output * price[1]) / 10**6 > 0
    return record


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", ["chat", "messages", "responses"])
@pytest.mark.parametrize(("policy", "provider", "price"), [("bedrock-vertex-azure", "az", O4_MINI),
                                                          ("claude-native-then-gemini", "ge", FLASH)])
def test_throttled_across_provider_types_then_served_at_the_servers_price(
        client: openai.OpenAI, claude: anthropic.Anthropic, gateway: Gateway, clouds: FakeClouds,
        policy: str, provider: str, price: tuple[Decimal, Decimal], api: str, stream: bool) -> None:
    """Each throttled target is an attempt; the one that serves is charged at its own price (the
    codec switching between a native relay and a translation as the targets do)."""
    clouds.clear()
    model = f"policy/{policy}"
    if api == "chat":
        usage_too = {"stream_options": {"include_usage": True}} if stream else {}
        raw = client.chat.completions.with_raw_response.create(model=model, messages=HELLO, stream=stream,  # type: ignore[call-overload]
                                                               **usage_too)
        last = list(raw.parse())[-1] if stream else raw.parse()
        request_id, usage = raw.headers["x-request-id"], (last.usage.prompt_tokens, last.usage.completion_tokens)
    elif api == "messages":
        if stream:
            with claude.messages.stream(model=model, max_tokens=50, messages=HELLO) as events:  # type: ignore[arg-type]
                message = events.get_final_message()
        else:
            message = claude.messages.create(model=model, max_tokens=50, messages=HELLO)  # type: ignore[arg-type]
        request_id, usage = message.id, (message.usage.input_tokens, message.usage.output_tokens)
    else:
        raw = client.responses.with_raw_response.create(model=model, input="hi", stream=stream)  # type: ignore[call-overload]
        done = next(e.response for e in raw.parse() if e.type == "response.completed") if stream else raw.parse()
        request_id, usage = raw.headers["x-request-id"], (done.usage.input_tokens, done.usage.output_tokens)
    record = served(gateway, request_id, *usage, price)
    *failed, last = TARGETS[policy]
    assert attempts(record) == [(t, 429) for t in failed] + [(last, 200)]
    assert record["provider"] == provider
    assert len([r for f in clouds.fakes() for r in f.requests if r["path"] != "/token"]) == len(TARGETS[policy])


@pytest.mark.parametrize("stream", [False, True])
def test_quota_overload_and_refused_credentials_fall_through_to_claude_on_vertex(
        claude: anthropic.Anthropic, gateway: Gateway, stream: bool) -> None:
    """Bedrock's quota (an HTTP 400 there), Gemini's overload and Vertex refusing our service
    account each move the request on; Claude on Vertex serves it natively, at Google's price."""
    ask = {"model": "policy/quota-overload-then-claude", "max_tokens": 50, "messages": HELLO}
    if stream:
        with claude.messages.stream(**ask) as events:  # type: ignore[arg-type]
            done = events.get_final_message()
    else:
        done = claude.messages.create(**ask)  # type: ignore[arg-type]
    assert done.content[0].text == "Echo: hi"  # type: ignore[union-attr]
    record = served(gateway, done.id, done.usage.input_tokens, done.usage.output_tokens, HAIKU)
    assert attempts(record) == [("br-quota", 429), ("ge-503", 503), ("vx-forged", 502), ("vxc-ok", 200)]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("policy", ["invalid-then-azure", "claude-invalid-then-azure"])
def test_a_bad_request_does_not_fall_back(client: openai.OpenAI, claude: anthropic.Anthropic, gateway: Gateway,
                                          clouds: FakeClouds, policy: str, stream: bool) -> None:
    """The upstream refused the request itself (a 400 that is not a quota): every other target would
    too, so the caller gets it at once, told not to retry, and Azure is never asked."""
    clouds.clear()
    with pytest.raises(openai.BadRequestError) as refused:
        list(client.chat.completions.create(model=f"policy/{policy}", messages=HELLO, stream=True)) if stream \
            else client.chat.completions.create(model=f"policy/{policy}", messages=HELLO)  # type: ignore[arg-type]
    with pytest.raises(anthropic.BadRequestError) as refused_messages:
        claude.messages.create(model=f"policy/{policy}", max_tokens=5, messages=HELLO, stream=stream)  # type: ignore[arg-type]
    for exc in (refused.value, refused_messages.value):
        assert exc.response.headers["x-should-retry"] == "false"
        record = gateway.log_record(exc.response.headers["x-request-id"])
        assert attempts(record) == [(TARGETS[policy][0], 400)] and json.dumps(record["cost"]) in ('"0"', "0")
    assert clouds.azure.requests == []
