"""Fair under floods: one client address holding many connections cannot take the gateway's
connection bound from other addresses, and wrong keys from one address are slowed (429 with
`retry-after`) while valid keys, from there or anywhere, are served at once.

127.0.0.2 is a second client address on the loopback interface (the client socket binds to it)."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import openai
import pytest

from tests.conftest import standard_config
from tests.gateway import ADMIN_KEY, Gateway, read_until_closed

HELLO = [{"role": "user", "content": "hi"}]
OTHER = "127.0.0.2"


def _client(gw: Gateway, key: str, source: str) -> openai.OpenAI:
    transport = httpx2.HTTPTransport(local_address=source)
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=5,
                         http_client=httpx2.Client(transport=transport))


def _request(gw: Gateway, method: str, path: str, source: str, key: str | None = None,
             body: object = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], dict]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10, source_address=(source, 0))
    try:
        hdrs = {**({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(raw) if raw else {}
    finally:
        conn.close()


def test_one_address_holding_many_connections_leaves_other_addresses_served(upstream, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    gw = Gateway(tmp_path, standard_config(upstream),
                 env={"TALLYGATE_MAX_CONNECTIONS": "64", "TALLYGATE_MAX_CONNECTIONS_PER_ADDRESS": "16",
                      "TALLYGATE_HEADER_TIMEOUT_S": "30"}).start()
    held: list[socket.socket] = []
    try:
        key = gw.create_key("fair")
        for _ in range(200):  # three times the whole bound, from one address, headers never finished
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=5, source_address=("127.0.0.1", 0))
            s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            held.append(s)
        time.sleep(0.5)
        with _client(gw, key, OTHER) as client:
            served = [client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).id for _ in range(5)]
        assert len(served) == 5 and all(served)
        # The flooding address: its first 16 connections are held, the rest were answered and closed.
        for s in held[16:]:
            s.settimeout(2)
        refused = [read_until_closed(s) for s in held[16:40]]
        assert all(a.startswith(b"HTTP/1.1 429") and b"too_many_connections_from_address" in a
                   and b"retry-after: 1" in a for a in refused), refused[0][:300]
        status, _, body = _request(gw, "GET", "/v1/models", "127.0.0.1", key)
        assert status == 429 and body["error"]["type"] == "rate_limit_error", body
        for s in held:
            s.close()
        held.clear()
        time.sleep(0.3)  # closed connections no longer count against the address
        status, _, _ = _request(gw, "GET", "/v1/models", "127.0.0.1", key)
        assert status == 200
    finally:
        for s in held:
            s.close()
        gw.stop()


@pytest.fixture(scope="module")
def throttled(upstream, tmp_path_factory) -> Iterator[Gateway]:  # type: ignore[no-untyped-def]
    gw = Gateway(tmp_path_factory.mktemp("throttle"), standard_config(upstream)).start()
    yield gw
    gw.stop()


def test_wrong_keys_from_one_address_are_slowed_while_valid_keys_are_served(throttled: Gateway) -> None:
    gw = throttled
    key = gw.create_key("real-user")
    wrong = [_request(gw, "GET", "/v1/models", "127.0.0.1", f"tg-wrong-{i:04d}")[0] for i in range(30)]
    assert wrong[:10] == [401] * 10 and set(wrong[10:]) == {429}, wrong
    status, headers, body = _request(gw, "POST", "/v1/chat/completions", "127.0.0.1", "tg-wrong-x",
                                     {"model": "gpt-4o-mini", "messages": HELLO})
    assert status == 429 and 1 <= int(headers["retry-after"]) <= 3
    assert body["error"]["type"] == "rate_limit_error" and body["error"]["code"] == "too_many_failed_attempts"
    with _client(gw, "tg-wrong-sdk", "127.0.0.1") as client, pytest.raises(openai.RateLimitError):
        client.models.list()
    status, headers, body = _request(gw, "POST", "/v1/messages", "127.0.0.1", "tg-wrong-a",
                                     {"model": "claude", "max_tokens": 5, "messages": HELLO},
                                     {"anthropic-version": "2023-06-01"})
    assert status == 429 and "retry-after" in headers
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"

    # A valid key is never delayed: from the throttled address, and from another one.
    with _client(gw, key, "127.0.0.1") as client:
        assert client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).id
    with _client(gw, key, OTHER) as client:
        assert client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).id
    # Another address is not throttled for the first one's failures.
    assert _request(gw, "GET", "/v1/models", OTHER, "tg-wrong-elsewhere")[0] == 401
    # Management routes and the dashboard sign-in count and refuse the same way (the steps above
    # may have taken long enough on a loaded machine for a try or two to refill: spend them first).
    _drain(gw, "127.0.0.1")
    assert _request(gw, "GET", "/v1/manage/apikey", "127.0.0.1", "tg-wrong-m")[0] == 429
    _drain(gw, "127.0.0.1")
    assert _request(gw, "POST", "/v1/dashboard/session", "127.0.0.1", body={"key": "tg-wrong-s"})[0] == 429
    assert _request(gw, "POST", "/v1/dashboard/session", "127.0.0.1", body={"key": ADMIN_KEY})[0] == 201


def _drain(gw: Gateway, address: str) -> None:
    """Spend whatever tries the address has regained, until it is refused again."""
    for i in range(10):
        if _request(gw, "GET", "/v1/models", address, f"tg-wrong-drain-{i}")[0] == 429:
            return
    raise AssertionError("ten more wrong keys were not throttled")


def test_the_throttle_refills_after_its_retry_after(throttled: Gateway) -> None:
    for i in range(12):
        _request(throttled, "GET", "/v1/models", "127.0.0.3", f"tg-wrong-r{i}")
    status, headers, _ = _request(throttled, "GET", "/v1/models", "127.0.0.3", "tg-wrong-r")
    assert status == 429
    time.sleep(int(headers["retry-after"]) + 0.1)
    assert _request(throttled, "GET", "/v1/models", "127.0.0.3", "tg-wrong-r")[0] == 401


def test_x_forwarded_for_names_the_client_only_from_a_trusted_proxy(upstream, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    untrusted = Gateway(tmp_path / "a", standard_config(upstream)).start()
    trusted = Gateway(tmp_path / "b", standard_config(upstream), env={"TALLYGATE_TRUSTED_PROXIES": "127.0.0.1"})
    try:
        trusted.start()
        # Without trusted proxies a forged X-Forwarded-For does not escape the throttle.
        statuses = [_request(untrusted, "GET", "/v1/models", "127.0.0.1", f"tg-w{i}",
                             headers={"X-Forwarded-For": f"198.51.100.{i}"})[0] for i in range(12)]
        assert statuses[-1] == 429, statuses
        # Behind a trusted proxy each forwarded client has its own allowance.
        statuses = [_request(trusted, "GET", "/v1/models", "127.0.0.1", f"tg-w{i}",
                             headers={"X-Forwarded-For": "203.0.113.7"})[0] for i in range(12)]
        assert statuses[-1] == 429, statuses
        assert _request(trusted, "GET", "/v1/models", "127.0.0.1", "tg-w",
                        headers={"X-Forwarded-For": "203.0.113.8"})[0] == 401
    finally:
        untrusted.stop()
        trusted.stop()
