"""The demo's `mock` provider refuses what OpenAI refuses, naming the field: a new user trying
malformed requests on `make run` sees the 400 the real provider would give, recorded, not a 200."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway import ADMIN_KEY, Gateway

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("demo-refusals"), None).start()
    yield gw
    gw.stop()


@pytest.mark.parametrize("extra, param", [
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"messages": [*HI, {"role": "assistant", "tool_calls": 5}]}, "messages[1].tool_calls"),
    ({"tools": "x"}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": 5}}]}, "tools[0].function.name"),
    ({"tool_choice": 5}, "tool_choice"),
    ({"stop": 5}, "stop"),
    ({"response_format": "json"}, "response_format"),
    ({"user": 5}, "user"),
    ({"seed": "x"}, "seed"),
    ({"parallel_tool_calls": "x"}, "parallel_tool_calls"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_demo_chat_refuses_what_openai_refuses(demo: Gateway, extra: dict, param: str, stream: bool) -> None:
    body = {"model": "gpt-4o-mini", "messages": HI, "stream": stream, **extra}
    status, headers, out = demo.post_json("/v1/chat/completions", body, key=ADMIN_KEY)
    assert status == 400, out
    assert out["error"]["param"] == param and out["error"]["type"] == "invalid_request_error", out
    assert demo.log_record(headers["x-request-id"])["status"] == 400


@pytest.mark.parametrize("extra, param", [({"dimensions": -3}, "dimensions"), ({"encoding_format": "hex"},
                                                                                "encoding_format")])
def test_demo_embeddings_refuse_what_openai_refuses(demo: Gateway, extra: dict, param: str) -> None:
    body = {"model": "text-embedding-3-small", "input": "hi", **extra}
    status, _, out = demo.post_json("/v1/embeddings", body, key=ADMIN_KEY)
    assert status == 400 and out["error"]["param"] == param, out
