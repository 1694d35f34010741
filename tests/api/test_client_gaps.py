"""What SDK clients hit besides completions: models.retrieve, unknown routes, exact `usage.cost`,
and clients that leave mid-stream on the Messages and Responses routes."""

from __future__ import annotations

import json
import re
import socket
import time
from decimal import Decimal

import openai
import pytest

from tests.gateway import Gateway


def test_models_retrieve_finds_models_and_policies(client: openai.OpenAI) -> None:
    model = client.models.retrieve("gpt-4o-mini")
    assert model.id == "gpt-4o-mini" and model.owned_by == "openai"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert missing.value.body["code"] == "model_not_found"
    assert missing.value.response.headers["x-request-id"].startswith("req_")


def test_unknown_route_is_an_openai_shaped_404_with_request_id(gateway: Gateway) -> None:
    status, headers, body = gateway.request("POST", "/v1/assistants", b"{}")
    assert status == 404 and headers["x-request-id"].startswith("req_")
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "not_found"
    assert "/v1/assistants" in error["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_usage_cost_is_written_as_exact_decimal_digits(gateway: Gateway, api_key: str, stream: bool) -> None:
    # 7 prompt tokens at $1e-6... chosen so a float would print 1.5e-05-like exponents
    body = {"model": "local-llama", "messages": [{"role": "user", "content": "x" * 28}], "stream": stream,
            **({"stream_options": {"include_usage": True}} if stream else {})}
    status, _, raw = gateway.request("POST", "/v1/chat/completions", json.dumps(body).encode(), api_key,
                                     {"Content-Type": "application/json"})
    assert status == 200
    found = re.findall(rb'"cost":([^,}]+)', raw)
    assert len(found) == 1, raw[-400:]
    [digits] = found
    assert re.fullmatch(rb"0\.0*[1-9][0-9]*", digits), digits  # never 1.5e-06
    usage = json.loads(raw.split(b"data: ")[-2] if stream else raw)["usage"]
    exact = (Decimal(usage["prompt_tokens"]) * Decimal("0.05")
             + Decimal(usage["completion_tokens"]) * Decimal("0.10")) / 10**6
    assert Decimal(digits.decode()) == exact


def _open_and_leave(gateway: Gateway, key: str, path: str, body: dict, headers: bytes = b"") -> str:
    """Start a stream over a raw socket, read its first event, and close the connection."""
    data = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"x-api-key: " + key.encode() + b"\r\n" + headers
                     + b"Content-Length: %d\r\n\r\n" % len(data) + data)
        head = b""
        while b"data:" not in head:
            head += sock.recv(4096)
    return next(line.split(":", 1)[1].strip() for line in head.decode().split("\r\n")
                if line.lower().startswith("x-request-id"))


@pytest.mark.parametrize(("path", "model"), [("/v1/messages", "claude-slowstream"),
                                             ("/v1/messages", "slowstream"),
                                             ("/v1/responses", "slowstream")])
def test_client_disconnect_mid_stream_still_writes_the_ledger(gateway: Gateway, api_key: str,
                                                              path: str, model: str) -> None:
    body = {"model": model, "stream": True, "request_tags": ["disconnect/agents"]}
    body.update({"max_tokens": 64, "messages": [{"role": "user", "content": "a long story"}]}
                if path == "/v1/messages" else {"input": "a long story"})
    request_id = _open_and_leave(gateway, api_key, path, body)
    deadline = time.monotonic() + 10
    while True:
        status, record = gateway.get(f"/v1/logs/{request_id}")
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200, record
    assert record["tags"] == ["disconnect/agents"] and record["stream"] is True
    assert record["endpoint"] == path.rsplit("/", 1)[1]
    assert record["usage"]["input_tokens"] > 0 and record["usage"]["output_tokens"] > 0
