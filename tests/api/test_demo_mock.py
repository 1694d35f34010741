"""The demo's `mock` provider stops at the output cap, as every provider does: a new user trying a
hard limit on `make run` sees it hold. It answered 24 tokens whatever `max_tokens` said, so a
request cost more than the worst case the gateway reserved for it and a key passed its limit."""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal

import anthropic
import openai
import pytest

from tests.gateway import ADMIN_KEY, Gateway


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("demo-mock"), None).start()
    yield gw
    gw.stop()


def test_every_route_stops_at_the_cap_and_says_so(demo: Gateway) -> None:
    hi = [{"role": "user", "content": "hi"}]
    with openai.OpenAI(base_url=demo.base_url, api_key=ADMIN_KEY, max_retries=0) as client:
        chat = client.chat.completions.create(model="gpt-4o-mini", max_tokens=5, messages=hi)
        assert chat.usage.completion_tokens == 5 and chat.choices[0].finish_reason == "length"
        stream = client.chat.completions.create(model="gpt-4o-mini", max_completion_tokens=3, messages=hi,
                                                stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[-1].usage.completion_tokens == 3 and len(text.split()) == 3
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
        response = client.responses.create(model="gpt-4o-mini", max_output_tokens=16, input="hi")
        assert response.usage.output_tokens == 16 and response.status == "incomplete"
        whole = client.chat.completions.create(model="gpt-4o-mini", max_tokens=500, messages=hi)
        assert whole.usage.completion_tokens == 24 and whole.choices[0].finish_reason == "stop"
    with anthropic.Anthropic(base_url=demo.url, api_key=ADMIN_KEY, max_retries=0) as claude:
        message = claude.messages.create(model="claude-3.5-haiku", max_tokens=2, messages=hi)
        assert message.usage.output_tokens == 2 and message.stop_reason == "max_tokens"


def test_a_hard_limit_holds_on_the_demo(demo: Gateway) -> None:
    """The limit is one answer plus one worst case: a second request is admitted and must fit."""
    body = {"model": "claude-3.5-haiku", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    status, _, probe = demo.post_json("/v1/manage/apikey", {"name": "probe", "monthly_limit": "0.000000001"})
    assert status == 201, probe
    status, _, refused = demo.post_json("/v1/chat/completions", body, key=probe["key"])
    assert status == 402, refused
    worst = Decimal(re.findall(r"may cost up to \$([0-9.]+)", refused["error"]["message"])[0])
    status, _, answer = demo.post_json("/v1/chat/completions", body, key=ADMIN_KEY)
    assert status == 200, answer
    cost = Decimal(str(answer["usage"]["cost"]))
    assert cost <= worst, (cost, worst)
    limit = cost + worst
    status, _, capped = demo.post_json("/v1/manage/apikey", {"name": "capped", "monthly_limit": str(limit)})
    assert status == 201, capped
    codes = [demo.post_json("/v1/chat/completions", body, key=capped["key"])[0] for _ in range(4)]
    assert codes[:2] == [200, 200] and 402 in codes, codes
    status, record = demo.get(f"/v1/manage/apikey/{capped['id']}")
    assert Decimal(record["monthly_spend"]) <= limit, (record["monthly_spend"], limit)


def _worst_case(demo: Gateway, path: str, body: dict) -> Decimal:
    """What the gateway reserves for `body`, as a key whose limit nothing fits is told."""
    status, _, probe = demo.post_json("/v1/manage/apikey", {"name": "probe", "monthly_limit": "0.000000001"})
    assert status == 201, probe
    status, _, refused = demo.post_json(path, body, key=probe["key"])
    assert status == 402, refused
    return Decimal(re.findall(r"may cost up to \$([0-9.]+)", refused["error"]["message"])[0])


@pytest.mark.parametrize("inputs", [[2**63 - 1] * 1000, [[2**63 - 1] * 50] * 20, ["a"] * 1000],
                         ids=["ids", "arrays-of-ids", "one-byte-strings"])
def test_embeddings_cost_no_more_than_they_reserve_on_the_demo(demo: Gateway, inputs: list) -> None:
    """Token ids count one token each, however many digits they have (the mock counted their text)."""
    body = {"model": "text-embedding-3-small", "input": inputs}
    worst = _worst_case(demo, "/v1/embeddings", body)
    status, _, answer = demo.post_json("/v1/embeddings", body, key=ADMIN_KEY)
    assert status == 200, answer
    assert Decimal(str(answer["usage"]["cost"])) <= worst, (answer["usage"], worst)


@pytest.mark.parametrize("inputs", ["", ["a", ""], [""] * 3000])
def test_empty_embeddings_inputs_are_refused_as_openai_refuses_them(demo: Gateway, inputs: object) -> None:
    """OpenAI refuses an empty string; the mock billed each a token the reservation (a token per
    byte) did not hold, so 3,000 of them passed a key's limit."""
    status, _, body = demo.post_json("/v1/embeddings", {"model": "text-embedding-3-small", "input": inputs})
    assert status == 400, body
    assert body["error"]["param"] == ("input" if inputs == "" else f"input[{inputs.index('')}]"), body


@pytest.mark.parametrize(("inputs", "vectors", "tokens"), [([5, 6, 7], 1, 3), ([[5, 6, 7], [8]], 2, 4),
                                                          ("hello world", 1, 2), (["a", "b"], 2, 2)],
                         ids=["token-ids", "arrays-of-ids", "string", "strings"])
def test_embeddings_answer_one_vector_per_input_as_openai_does(demo: Gateway, inputs: object, vectors: int,
                                                              tokens: int) -> None:
    """An array of token ids is one input (one vector, as OpenAI answers it), not one input per id:
    the mock answered [5, 6, 7] with three vectors, so a new user's SDK got three embeddings."""
    with openai.OpenAI(base_url=demo.base_url, api_key=ADMIN_KEY, max_retries=0) as client:
        answer = client.embeddings.create(model="text-embedding-3-small", input=inputs)  # type: ignore[arg-type]
    assert [d.index for d in answer.data] == list(range(vectors)), answer.data
    assert answer.usage.prompt_tokens == tokens, answer.usage
