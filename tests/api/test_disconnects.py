"""A client that goes away mid-stream still leaves a complete ledger record."""

from __future__ import annotations

import json
import socket
import time

from tests.gateway import Gateway


def test_stream_disconnect_still_writes_ledger(gateway: Gateway, api_key: str) -> None:
    body = json.dumps({"model": "slowstream", "stream": True,
                       "messages": [{"role": "user", "content": "tell me a long story"}],
                       "request_tags": ["disconnect/test"]}).encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + api_key.encode() + b"\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        head = b""
        while b"data:" not in head:
            chunk = sock.recv(4096)
            assert chunk, f"the gateway closed the connection before the first event: {head!r}"
            head += chunk
    request_id = next(line.split(":", 1)[1].strip() for line in head.decode().split("\r\n")
                      if line.lower().startswith("x-request-id"))
    # The gateway drains the provider after the client left, so the record has real usage.
    deadline = time.monotonic() + 10
    while True:
        status, record = gateway.get(f"/v1/logs/{request_id}")
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200
    assert record["tags"] == ["disconnect/test"] and record["stream"] is True
    assert record["usage"]["output_tokens"] > 0 and record["cost"] != "0"


def test_stream_cut_by_shutdown_is_recorded_partial_with_estimated_cost(upstream, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import signal

    from tests.conftest import standard_config

    gw = Gateway(tmp_path, standard_config(upstream), env={"TALLYGATE_SHUTDOWN_GRACE_S": "1"}).start()
    key = gw.create_key("shutdown")
    body = json.dumps({"model": "slowstream", "stream": True,
                       "messages": [{"role": "user", "content": "a long story please"}]}).encode()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + key.encode() + b"\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        head = b""
        while head.count(b"data:") < 2:
            head += sock.recv(4096)
        gw.stop(signal.SIGTERM)
    [row] = [r for r in gw.ledger_rows() if r["stream"]]
    assert row["partial"] == 1 and row["status"] == 503
    assert row["output_tokens"] > 0 and row["cost_pico"] > 0
    assert row["pricing_source"].endswith("(estimated)")
    assert head.count(b"data:") >= 2  # the client had text before the gateway stopped
    log = gw.log()  # a stop past the grace time is no crash: the request was answered and recorded
    assert "Traceback" not in log and "Exception in ASGI" not in log, log[log.find("Traceback") - 500:]
