"""What the HTTP edge answers on its own (a body or headers too slow) is shaped like the errors of
the API asked: Anthropic's on `/v1/messages`, OpenAI's elsewhere; and a request the ledger
records (a proxy request whose body was too slow) is named by the answer's `x-request-id`."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.conftest import standard_config
from tests.gateway import ADMIN_KEY, Gateway


@pytest.fixture(scope="module")
def edge(upstream, tmp_path_factory) -> Iterator[Gateway]:  # type: ignore[no-untyped-def]
    gw = Gateway(tmp_path_factory.mktemp("edge-shapes"), standard_config(upstream),
                 env={"TALLYGATE_HEADER_TIMEOUT_S": "1", "TALLYGATE_BODY_TIMEOUT_S": "1"}).start()
    yield gw
    gw.stop()


def _late(gw: Gateway, head: str) -> tuple[bytes, dict[str, str], dict]:
    """Send `head` and then nothing; the edge's answer (status line, headers, JSON body)."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(head.encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    top, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = top.split(b"\r\n")
    headers = {k.decode().lower(): v.decode() for k, _, v in (line.partition(b": ") for line in lines)}
    return status, headers, json.loads(body)


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions"])
def test_a_slow_body_is_answered_in_the_routes_shape_naming_its_record(edge: Gateway, path: str) -> None:
    status, headers, body = _late(edge, f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
                                        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    assert status.startswith(b"HTTP/1.1 408"), (status, body)
    if path == "/v1/messages":
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error", body
    else:
        assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] is None, body
    assert body["error"]["code"] == "body_timeout"
    record = edge.log_record(headers["x-request-id"])
    assert (record["status"], record["error"]["code"]) == (408, "body_timeout")


def test_slow_headers_on_messages_get_anthropics_shape(edge: Gateway) -> None:
    started = time.monotonic()
    status, headers, body = _late(edge, "POST /v1/messages HTTP/1.1\r\nHost: x\r\n")
    assert status.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 5, status
    assert body["type"] == "error" and body["error"]["code"] == "header_timeout", body
    assert "x-request-id" not in headers  # no key was read: no record


@pytest.mark.parametrize("late", [
    "Transfer-Encoding: chunked\r\n\r\nzz\r\n",  # a chunk size that is not hex: 400 invalid_http
    "X-Big: " + "a" * 70_000 + "\r\n\r\n",  # headers past TALLYGATE_MAX_HEAD_BYTES: 431
], ids=["invalid-http", "headers-too-large"])
def test_unreadable_requests_on_messages_get_anthropics_shape(edge: Gateway, late: str) -> None:
    status, _, body = _late(edge, f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
                                  "Content-Type: application/json\r\n" + late)
    assert status.split()[1] in (b"400", b"431"), (status, body)
    assert body["type"] == "error" and body["error"]["code"] in ("invalid_http", "headers_too_large"), body
