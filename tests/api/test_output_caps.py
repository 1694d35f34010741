"""A limited request cannot make a provider produce more output than the gateway reserved for:
on every route, native or translated, streamed or not, whatever output caps the body carries."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal

import openai
import pytest

from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import InProcessGateway

LIMIT = Decimal("5")  # $5 at $0.001 a token: room for 4,096 output tokens, not for 6,000
_PRICED = {"input_per_mtok": "1000", "output_per_mtok": "1000"}
HELLO = [{"role": "user", "content": "hi"}]

# (route, model, body without model/stream). "long" replies 6,000 words unless capped upstream.
_PREDICTED = {"type": "content", "content": "w " * 3000}  # 6,000 bytes the fake rejects: billed as output
_CHAT = [{}, {"max_tokens": 100}, {"max_completion_tokens": 100},
         {"max_tokens": 10, "max_completion_tokens": 6000}, {"max_completion_tokens": 10, "max_tokens": 6000},
         {"max_output_tokens": 10}, {"n": 2, "max_tokens": 3000}]
_MESSAGES = [{"max_tokens": 100}, {"max_tokens": 6000, "max_completion_tokens": 10},
             {"max_tokens": 6000, "max_output_tokens": 10}]
_RESPONSES = [{}, {"max_output_tokens": 100}, {"max_output_tokens": 6000, "max_tokens": 10},
              {"max_output_tokens": 6000, "max_completion_tokens": 10}]
CASES = [
    *[("/v1/chat/completions", m, {"messages": HELLO, **b}) for m in ("long", "claude-long") for b in _CHAT],
    *[("/v1/messages", m, {"messages": HELLO, **b}) for m in ("claude-long", "long") for b in _MESSAGES],
    *[("/v1/responses", m, {"input": "hi", **b}) for m in ("long", "claude-long") for b in _RESPONSES],
    *[("/v1/chat/completions", m, {"messages": HELLO, "max_tokens": 10, "prediction": _PREDICTED})
      for m in ("lopsided", "claude-lopsided")],
]


def caps_config(upstream: FakeUpstream) -> dict:
    """The standard config with the models these tests (and tests/multiprocess' across processes) use."""
    config = standard_config(upstream)
    config["models"]["long"] = {"provider": "openai", "model": "long-6000", "pricing": _PRICED}
    config["models"]["claude-long"] = {"provider": "anthropic", "model": "long-6000", "pricing": _PRICED}
    config["models"]["bytes"] = {"provider": "openai", "model": "bytetokens", "pricing": _PRICED}
    config["models"]["claude-bytes"] = {"provider": "anthropic", "model": "bytetokens", "pricing": _PRICED}
    lopsided = {"input_per_mtok": "100", "output_per_mtok": "1000"}  # output dearer than input, as on every list
    config["models"]["lopsided"] = {"provider": "openai", "model": "echo", "pricing": lopsided}
    config["models"]["claude-lopsided"] = {"provider": "anthropic", "model": "echo", "pricing": lopsided}
    config["models"]["mute"] = {"provider": "openai", "model": "nousage", "pricing": _PRICED}  # reports no usage
    config["models"]["mute-embed"] = {"provider": "openai", "model": "nousage", "kind": "embeddings",
                                      "pricing": _PRICED}
    config["models"]["gpt-4o"] = {"provider": "openai", "model": "gpt-4o"}  # list prices, with variants
    config["models"]["pdf"] = {"provider": "openai", "model": "docpages-100000", "pricing": _PRICED}
    config["models"]["claude-pdf"] = {"provider": "anthropic", "model": "docpages-100000", "pricing": _PRICED}
    config["models"]["opus"] = {"provider": "anthropic", "model": "claude-opus-4-8"}
    config["models"]["opus46"] = {"provider": "anthropic", "model": "claude-opus-4-6"}  # no fast price listed
    return config


@pytest.fixture(scope="module")
def gateway(upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:  # type: ignore[no-untyped-def]
    config = caps_config(upstream)
    gw = InProcessGateway(tmp_path_factory.mktemp("gw"), config).start()
    yield gw
    gw.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("path", "model", "body"), CASES, ids=[f"{p[4:]}-{m}-{sorted(b)}" for p, m, b in CASES])
def test_no_body_makes_a_limited_request_spend_past_its_reservation(gateway: InProcessGateway, path: str,
                                                                    model: str, body: dict, stream: bool) -> None:
    key = gateway.create_key("cap", monthly_limit=LIMIT)
    payload = {**body, "model": model, "stream": stream}
    status, _, answer = gateway.request("POST", path, json.dumps(payload).encode(), key,
                                        {"Content-Type": "application/json", "anthropic-version": "2023-06-01"})
    assert status in (200, 400, 402), answer[:300]
    if body.get("max_tokens") == 100 or body.get("max_completion_tokens") == 100 \
            or body.get("max_output_tokens") == 100:
        assert status == 200, answer[:300]  # an honest small cap is served
    assert gateway.spend_when_settled(key) <= LIMIT


def test_the_gateway_sends_the_cap_it_reserved_for_when_the_client_sets_none(gateway: InProcessGateway,
                                                                              upstream) -> None:  # type: ignore[no-untyped-def]
    key = gateway.create_key("capped", monthly_limit="20")
    upstream.clear()
    for path, body in (("/v1/chat/completions", {"messages": HELLO}), ("/v1/responses", {"input": "hi"})):
        status, _, answer = gateway.request("POST", path, json.dumps({**body, "model": "long"}).encode(),
                                            key, {"Content-Type": "application/json"})
        assert status == 200, answer[:300]
    sent = [r["body"] for r in upstream.requests]
    assert sent[0]["max_completion_tokens"] == 4096 and sent[1]["max_output_tokens"] == 4096


def test_responses_whose_cost_is_hidden_are_refused_for_a_limited_key(gateway: InProcessGateway) -> None:
    key = gateway.create_key("hidden", monthly_limit=LIMIT)
    for field, value in (("previous_response_id", "resp_1"), ("background", True),
                         ("conversation", "conv_1"), ("prompt", {"id": "pmpt_1"})):
        status, _, answer = gateway.post_json("/v1/responses", {"model": "long", "input": "hi", field: value},
                                              key)
        assert status == 400 and answer["error"]["param"] == field, answer


# Text whose every character costs the most tokens a tokenizer can charge: a token per UTF-8
# byte (4 for an emoji, 3 for a rare CJK ideograph, 1 for ASCII punctuation), 6,000+ tokens in all.
_COSTLY_TEXT = {"emoji": "\U0001F9EC" * 1600, "cjk": "\u9F98" * 2100, "punctuation": "!@#$%^&*" * 800}


@pytest.mark.parametrize("text", sorted(_COSTLY_TEXT))
@pytest.mark.parametrize(("path", "model"), [(p, m) for p in ("/v1/chat/completions", "/v1/messages")
                                             for m in ("bytes", "claude-bytes")])
def test_no_prompt_text_makes_a_limited_request_spend_past_its_reservation(
        gateway: InProcessGateway, path: str, model: str, text: str) -> None:
    """The fake bills a token per byte of prompt: the reservation must bound that, whatever the script."""
    key = gateway.create_key("bytes", monthly_limit=LIMIT)
    headers = {"Content-Type": "application/json", "anthropic-version": "2023-06-01"}
    costly = {"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": _COSTLY_TEXT[text]}]}
    status, _, answer = gateway.request("POST", path, json.dumps(costly).encode(), key, headers)
    assert status == 402, answer[:300]  # $6+ of prompt under a $5 limit: refused before any provider sees it
    honest = {**costly, "messages": [{"role": "user", "content": _COSTLY_TEXT[text][:200]}]}
    status, _, answer = gateway.request("POST", path, json.dumps(honest).encode(), key, headers)
    assert status == 200, answer[:300]  # the same text, short enough to fit, is served
    assert gateway.spend_when_settled(key) <= LIMIT


# A dearer tier the body asks for, at genai-prices' list prices: OpenAI's priority processing
# (gpt-4o: $4.25 / $17 per Mtok instead of $2.50 / $10), Anthropic's fast mode (claude-opus-4-8:
# $10 / $50 instead of $5 / $25). (route, model, field, value, limit between the two worst cases)
_TIERS = [("/v1/chat/completions", "gpt-4o", "service_tier", "priority", "0.015"),
          ("/v1/responses", "gpt-4o", "service_tier", "priority", "0.015"),
          ("/v1/messages", "opus", "speed", "fast", "0.04")]


def test_a_dearer_tier_without_a_known_price_is_refused_for_a_limited_key(gateway: InProcessGateway,
                                                                          upstream: FakeUpstream) -> None:
    """Anthropic bills claude-opus-4-6's fast mode at six times its standard price ($30 / $150 per
    Mtok), which genai-prices does not list: a limited request asking for it could be neither
    reserved nor metered at that price, so it is a 400 naming `speed` (before: served, reserved
    and recorded at $5 / $25); the standard speed is served."""
    key = gateway.create_key("tier", monthly_limit="5")
    body = {"model": "opus46", "max_tokens": 100, "messages": HELLO}
    headers = {"Content-Type": "application/json", "anthropic-version": "2023-06-01"}
    # fast mode; US-only inference (`inference_geo: "us"`), billed at 1.1 times the price
    for field, dear, standard in (("speed", "fast", "standard"), ("inference_geo", "us", "global")):
        upstream.clear()
        status, _, answer = gateway.request("POST", "/v1/messages", json.dumps({**body, field: dear}).encode(), key,
                                            headers)
        assert status == 400 and json.loads(answer)["error"]["message"].startswith(field), answer[:300]
        assert upstream.requests == []
        status, _, answer = gateway.request("POST", "/v1/messages", json.dumps({**body, field: standard}).encode(),
                                            key, headers)
        assert status == 200, answer[:300]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("path", "model", "field", "value", "limit"), _TIERS, ids=[t[0][4:] for t in _TIERS])
def test_a_dearer_tier_is_reserved_and_metered_at_its_price(gateway: InProcessGateway, path: str, model: str,
                                                            field: str, value: str, limit: str,
                                                            stream: bool) -> None:
    """A limited key that asks for a priority tier or fast mode is reserved for it (402 when only
    the standard price would fit), and the cost recorded is the provider's price for that tier."""
    from genai_prices import data_snapshot

    key = gateway.create_key("tier", monthly_limit=limit)
    cap = "max_output_tokens" if path == "/v1/responses" else "max_tokens"
    text = {"input": "hi"} if path == "/v1/responses" else {"messages": HELLO}
    body = {"model": model, cap: 1000, "stream": stream, **text}
    headers = {"Content-Type": "application/json", "anthropic-version": "2023-06-01"}
    status, _, answer = gateway.request("POST", path, json.dumps({**body, field: value}).encode(), key, headers)
    assert status == 402, answer[:300]  # its worst case at the dearer price does not fit
    status, _, answer = gateway.request("POST", path, json.dumps(body).encode(), key, headers)
    assert status == 200, answer[:300]  # at the standard price it does
    gateway.spend_when_settled(key)

    free_key = gateway.create_key("tier-free")
    status, answered, answer = gateway.request("POST", path, json.dumps({**body, field: value}).encode(),
                                               free_key, headers)
    assert status == 200, answer[:300]
    row = gateway.log_record(answered["x-request-id"])
    upstream_model, provider = ("claude-opus-4-8", "anthropic") if model == "opus" else ("gpt-4o", "openai")
    _, info = data_snapshot.get_snapshot().find_provider_model(upstream_model, None, provider, None)
    price = info.get_prices(dt.datetime.now(dt.UTC), {field: value})
    usage = row["usage"]
    expected = (usage["input_tokens"] * price.input_mtok + usage["output_tokens"] * price.output_mtok) / 10**6
    assert Decimal(row["cost"]) == expected and f"{field}={value}" in row["pricing_source"], row


# Parts billed by what they hold, not by their bytes (the fake's docpages-<n> bills n tokens for
# each, as a provider bills a PDF's pages): (route, part, the param a limited request is refused on).
_PDF = "data:application/pdf;base64,JVBERi0xLjcK"
_UNBOUNDED = [
    ("/v1/chat/completions", {"type": "file", "file": {"filename": "a.pdf", "file_data": _PDF}}, "type"),
    ("/v1/chat/completions", {"type": "file", "file": {"file_id": "file-abc"}}, "type"),
    ("/v1/chat/completions", {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}, "type"),
    ("/v1/chat/completions", {"type": "image_url", "image_url": {"url": "data:video/mp4;base64,AAAA"}},
     "image_url.url"),
    ("/v1/messages", {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                                     "data": _PDF.split(",")[1]}}, "source"),
    ("/v1/messages", {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}, "source"),
    ("/v1/messages", {"type": "image", "source": {"type": "base64", "media_type": "video/mp4", "data": "AAAA"}},
     "source.media_type"),
    ("/v1/responses", {"type": "input_file", "filename": "a.pdf", "file_data": _PDF}, "type"),
    ("/v1/responses", {"type": "input_file", "file_url": "https://example.com/a.pdf"}, "type"),
]


@pytest.mark.parametrize("model", ["pdf", "claude-pdf"])
@pytest.mark.parametrize(("path", "part", "param"), _UNBOUNDED,
                         ids=[f"{p[4:]}-{part['type']}-{i}" for i, (p, part, _) in enumerate(_UNBOUNDED)])
def test_no_document_or_audio_makes_a_limited_request_spend_past_its_reservation(
        gateway: InProcessGateway, path: str, part: dict, param: str, model: str) -> None:
    """A document is billed by its pages, audio at audio prices: a limited request holding one is
    refused with a 400 naming the part before any provider sees it."""
    key = gateway.create_key("doc", monthly_limit=LIMIT)
    text = {"type": "input_text" if path == "/v1/responses" else "text", "text": "summarise this"}
    turn = {"role": "user", "content": [text, part]}
    body = {"model": model, "max_tokens": 10, "messages": [turn]} if path != "/v1/responses" else \
        {"model": model, "max_output_tokens": 10, "input": [turn]}
    headers = {"Content-Type": "application/json", "anthropic-version": "2023-06-01"}
    status, _, answer = gateway.request("POST", path, json.dumps(body).encode(), key, headers)
    assert gateway.spend_when_settled(key) <= LIMIT, answer[:300]
    where = "input[0].content[1]" if path == "/v1/responses" else "messages[0].content[1]"
    assert status == 400 and f"{where}.{param}" in answer.decode(), answer[:300]


def test_a_stored_audio_answer_in_a_chat_turn_cannot_make_a_limited_request_spend_past_its_reservation(
        gateway: InProcessGateway) -> None:
    """An assistant turn's `audio: {"id": ...}` has OpenAI put that earlier answer's audio back in
    the prompt, billed by its length at audio token prices: its few bytes bound nothing (before:
    served, 100,000 tokens billed against a reservation of a few hundred)."""
    key = gateway.create_key("audio", monthly_limit=LIMIT)
    turns = [{"role": "user", "content": "say hi"}, {"role": "assistant", "audio": {"id": "audio_abc123"}},
             {"role": "user", "content": "again, slower"}]
    body = {"model": "pdf", "max_tokens": 10, "messages": turns}
    status, _, answer = gateway.request("POST", "/v1/chat/completions", json.dumps(body).encode(), key,
                                        {"Content-Type": "application/json"})
    assert gateway.spend_when_settled(key) <= LIMIT, answer[:300]
    assert status == 400 and json.loads(answer)["error"]["param"] == "messages[1].audio", answer[:300]


@pytest.mark.parametrize("screenshot", [{"image_url": "https://example.com/screen.png"}, {"file_id": "file-abc"}])
def test_a_computer_use_screenshot_is_reserved_as_an_image(gateway: InProcessGateway, screenshot: dict) -> None:
    """A Responses `computer_call_output` carries its screenshot as a `computer_screenshot` (by
    URL or file id), billed as an image by its pixels: it counts as an image part (at the dearest
    image of a model the gateway does not know, 48,169 tokens: $48 here, past the $5 limit), not
    as its few bytes (before: served, 100,000 tokens billed by the fake)."""
    key = gateway.create_key("computer", monthly_limit=LIMIT)
    output = {"type": "computer_call_output", "call_id": "call_1",
              "output": {"type": "computer_screenshot", **screenshot}}
    body = {"model": "pdf", "max_output_tokens": 10, "input": [{"role": "user", "content": "click OK"}, output]}
    status, _, answer = gateway.request("POST", "/v1/responses", json.dumps(body).encode(), key,
                                        {"Content-Type": "application/json"})
    assert gateway.spend_when_settled(key) <= LIMIT, answer[:300]
    assert status == 402, answer[:300]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/responses", "/v1/embeddings"])
def test_a_part_of_any_json_type_is_a_400_not_a_500_for_a_limited_key(gateway: InProcessGateway, path: str) -> None:
    key = gateway.create_key("odd", monthly_limit=LIMIT)
    for odd in ({"type": []}, {"type": {}}, {"type": None, "source": []},
                {"type": "image", "source": {"media_type": 5}}):
        turn = [{"role": "user", "content": [odd]}]
        body = {"model": "long", "max_tokens": 10, "messages": turn, "input": turn}
        status, _, answer = gateway.request("POST", path, json.dumps(body).encode(), key,
                                            {"Content-Type": "application/json", "anthropic-version": "2023-06-01"})
        assert 400 <= status < 500, (odd, answer[:300])


def test_stored_items_are_refused_for_a_limited_key(gateway: InProcessGateway) -> None:
    key = gateway.create_key("stored", monthly_limit=LIMIT)
    for item in ({"type": "item_reference", "id": "msg_1"}, {"id": "msg_1"}):
        status, _, answer = gateway.post_json("/v1/responses", {"model": "long", "input": [item]}, key)
        assert status == 400 and answer["error"]["param"] == "input[0]", answer
    status, _, answer = gateway.post_json("/v1/responses", {"model": "long", "input": "hi"}, key)
    assert status == 200, answer  # an honest request of the same key is served


_MUTE = [("/v1/chat/completions", {"model": "mute", "max_tokens": 10,
                                   "messages": [{"role": "user", "content": "w " * 2000}]}),
         ("/v1/chat/completions", {"model": "mute", "max_tokens": 10, "stream": True,
                                   "messages": [{"role": "user", "content": "w " * 2000}]}),
         ("/v1/messages", {"model": "mute", "max_tokens": 10, "messages": [{"role": "user", "content": "w " * 2000}]}),
         ("/v1/embeddings", {"model": "mute-embed", "input": ["w " * 1000, "w " * 1000]})]


@pytest.mark.parametrize(("path", "body"), _MUTE, ids=["chat", "chat-stream", "messages", "embeddings"])
def test_an_answer_without_usage_is_priced_by_estimate_not_free(gateway: InProcessGateway, path: str,
                                                                 body: dict) -> None:
    """A server that reports no usage (JSON or stream) leaves a record priced from the prompt's
    size and the answer's text, marked estimated, so a limit still binds; never $0."""
    key = gateway.create_key("mute", monthly_limit=LIMIT)
    status, answered, answer = gateway.request("POST", path, json.dumps(body).encode(), key,
                                               {"Content-Type": "application/json",
                                                "anthropic-version": "2023-06-01"})
    assert status == 200, answer[:300]
    row = gateway.log_record(answered["x-request-id"])
    assert row["usage"]["input_tokens"] >= 1000 and row["pricing_source"].endswith("(estimated)"), row
    assert Decimal(row["cost"]) >= Decimal("1"), row  # 1,000 tokens at least, at $0.001 a token
    assert gateway.spend_when_settled(key) == Decimal(row["cost"])


def test_a_stream_without_usage_tells_a_client_that_asked_for_it_the_estimate(gateway: InProcessGateway) -> None:
    """A client that asked for usage (`include_usage`) of a stream whose server sends none gets a
    usage chunk before [DONE] anyway: the estimate the record carries, with its `cost`, as an
    unstreamed answer without usage does; not silence while the ledger charges the estimate."""
    key = gateway.create_key("mute", monthly_limit=LIMIT)
    with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0) as client:
        chunks = list(client.chat.completions.create(
            model="mute", max_tokens=10, messages=[{"role": "user", "content": "w " * 2000}], stream=True,
            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None, last
    row = gateway.log_record(last.id)
    assert row["pricing_source"].endswith("(estimated)") and row["partial"] is False, row
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (
        row["usage"]["input_tokens"], row["usage"]["output_tokens"])
    assert Decimal(str(last.usage.model_extra["cost"])) == Decimal(row["cost"]) > 0
    assert gateway.spend_when_settled(key) == Decimal(row["cost"])


# Anthropic's schema-less tools: a few bytes each in the body, hundreds of prompt tokens each at
# the provider (the fake bills them as Anthropic documents: 1,234 + 700 + 245).
_DEFINED_TOOLS = [{"type": "computer_20250124", "name": "computer", "display_width_px": 1024,
                   "display_height_px": 768},
                  {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
                  {"type": "bash_20250124", "name": "bash"}]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_anthropic_defined_tools_are_reserved_at_the_prompt_they_add(gateway: InProcessGateway,
                                                                     stream: bool) -> None:
    """$2.2 of prompt the tools add, a few hundred bytes in the body: a $1 key is refused, a $7
    key is served within its limit (the hold counts a Claude prompt at its 1-hour cache write
    price, 2 times the input price: $6.05)."""
    body = json.dumps({"model": "claude-long", "max_tokens": 10, "stream": stream, "tools": _DEFINED_TOOLS,
                       "messages": [{"role": "user", "content": "[[no tools]] hi"}]}).encode()
    headers = {"Content-Type": "application/json", "anthropic-version": "2023-06-01"}
    for limit, expected in (("1", 402), ("7", 200)):
        key = gateway.create_key("tools", monthly_limit=limit)
        status, _, answer = gateway.request("POST", "/v1/messages", body, key, headers)
        assert status == expected, answer[:300]
        spent = gateway.spend_when_settled(key)
        assert spent <= Decimal(limit), spent
        assert expected == 402 or spent >= Decimal("2.179"), spent  # the tools' prompt was billed


def test_server_side_compaction_is_refused_for_a_limited_key(gateway: InProcessGateway) -> None:
    """Compaction is another sampling pass at Anthropic, reading the whole context and writing a
    summary no field caps: a 400 naming the edit, before any provider sees it."""
    key = gateway.create_key("compact", monthly_limit=LIMIT)
    body = {"model": "claude-long", "max_tokens": 10, "messages": HELLO,
            "context_management": {"edits": [{"type": "clear_thinking_20251015"}, {"type": "compact_20260112"}]}}
    status, _, answer = gateway.request("POST", "/v1/messages", json.dumps(body).encode(), key,
                                        {"Content-Type": "application/json", "anthropic-version": "2023-06-01"})
    assert status == 400 and b"context_management.edits[1].type" in answer, answer[:300]


def test_azure_on_your_data_is_refused_for_a_limited_key(gateway: InProcessGateway) -> None:
    """`data_sources` makes Azure retrieve documents into the prompt, billed as prompt tokens the
    body does not hold: a 400 naming it (the body is relayed to Azure as it is)."""
    key = gateway.create_key("oyd", monthly_limit=LIMIT)
    source = {"type": "azure_search", "parameters": {"endpoint": "https://s.search.windows.net", "index_name": "i",
                                                     "top_n_documents": 50}}
    status, _, answer = gateway.post_json("/v1/chat/completions", {"model": "long", "max_tokens": 10, "messages": HELLO,
                                                                   "data_sources": [source]}, key)
    assert status == 400 and answer["error"]["param"] == "data_sources", answer
