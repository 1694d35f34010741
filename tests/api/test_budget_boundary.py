"""A request whose headers arrive before a window's end and whose body arrives after it is held
against the window it is counted in: its key's spend in the month that ended stays within the
limit (one gateway process, SQLite: the counters of a window that ended are dropped as soon as
another request reserves in the next one)."""

from __future__ import annotations

import datetime as dt
import json
import socket
import time
from pathlib import Path

from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway

MIDNIGHT = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)  # a month's, a week's and a day's end
LEAD_S = 12.0  # system seconds from the gateway's start to that midnight on its clock


def _body(n: int) -> bytes:
    return json.dumps({"model": "dear", "max_tokens": 1000,
                       "messages": [{"role": "user", "content": f"spend {n}"}]}).encode()


def _headers(gw: Gateway, key: str, body: bytes) -> bytes:
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()


def _status(sock: socket.socket) -> int:
    sock.settimeout(30)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


def test_a_request_whose_body_crosses_the_month_end_stays_within_the_month_limit(upstream: FakeUpstream,
                                                                                  tmp_path: Path) -> None:
    config = standard_config(upstream)
    # A reply as long as the cap, $0.001 a token: a request costs about $1.00 and reserves about $1.20.
    config["models"]["dear"] = {"provider": "openai", "model": "long-2000",
                                "pricing": {"input_per_mtok": "1000", "output_per_mtok": "1000"}}
    origin_ms = time.time_ns() // 1_000_000
    start = MIDNIGHT - dt.timedelta(seconds=LEAD_S)
    gw = Gateway(tmp_path, config, env={"TALLYGATE_FAKE_NOW": f"{start.isoformat()}@{origin_ms}"}).start()
    try:
        status, _, rec = gw.post_json("/v1/manage/apikey", {"name": "boundary", "monthly_limit": "1.5"})
        assert status == 201, rec
        key = rec["key"]
        other = gw.create_key("mover")
        status, _, first = gw.post_json("/v1/chat/completions", json.loads(_body(0)), key=key)
        assert status == 200, first  # December: about $1.00 of $1.50
        late = _body(1)
        sock = socket.create_connection(("127.0.0.1", gw.port))
        try:
            sock.sendall(_headers(gw, key, late) + late[:10])  # started in December ...
            assert time.time_ns() // 1_000_000 < origin_ms + LEAD_S * 1000, "the gateway started too slowly"
            time.sleep(max(0.0, origin_ms / 1000 + LEAD_S + 0.5 - time.time()))
            status, _, body = gw.post_json("/v1/chat/completions", {  # January: the windows move
                "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "happy new year"}]}, key=other)
            assert status == 200, body
            sock.sendall(late[10:])  # ... admitted in January
            late_status = _status(sock)
        finally:
            sock.close()
        gw.spend_when_settled(key)
        time.sleep(1.0)  # the batched ledger writer
        rows = [r for r in gw.ledger_rows() if r["key_id"] == rec["id"]]
        december = sum(r["cost_pico"] for r in rows if r["created_at"] < MIDNIGHT.timestamp() * 1000)
        assert december <= 1_500_000_000_000, (late_status, december, rows)
    finally:
        gw.stop()
