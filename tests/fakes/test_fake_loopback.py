"""The fakes' loopback server: it starts, records what it is sent, stops (leaving no thread or port)
and restarts on its port."""
from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from .loopback import closed_port_url, free_port
from .raw_client import chat, post
from .upstream import FakeUpstream


def test_lifecycle_leaves_no_thread_or_port():
    up = FakeUpstream().start()
    port = up.port
    assert up.base_url == f"http://127.0.0.1:{port}/v1"
    assert any(t.name == f"fake-upstream-{port}" for t in threading.enumerate())
    assert post(up, "/v1/chat/completions", chat())[0] == 200
    up.stop()
    up.stop()  # idempotent
    assert not any(t.name == f"fake-upstream-{port}" for t in threading.enumerate())
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_stop_with_request_in_flight_and_restart_on_same_port():
    up = FakeUpstream().start()
    port = up.port
    errors: list[Exception] = []

    def hang():
        try:
            post(up, "/v1/chat/completions", chat("slow-5000"), timeout=3)
        except Exception as exc:  # the server went away mid-request
            errors.append(exc)
    hung = threading.Thread(target=hang)
    hung.start()
    up.wait_for_requests(1)
    t0 = time.monotonic()
    up.stop()
    assert time.monotonic() - t0 < 1.0
    hung.join(5)
    assert len(errors) == 1 and not isinstance(errors[0], TimeoutError)
    with FakeUpstream(port=port) as again:
        assert again.base_url.endswith(f":{port}/v1")
        assert post(again, "/v1/chat/completions", chat())[0] == 200


def test_free_port_and_closed_port_url():
    assert 0 < free_port() < 65536
    url = closed_port_url()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    with pytest.raises(urllib.error.URLError) as ei:
        urllib.request.urlopen(url + "/models", timeout=2)
    assert isinstance(ei.value.reason, ConnectionRefusedError)


def test_records_requests(up):
    post(up, "/v1/chat/completions", chat(temperature=0.5))
    (rec,) = up.wait_for_requests(1)
    assert rec["method"] == "POST" and rec["path"] == "/v1/chat/completions"
    assert rec["headers"]["authorization"] == "Bearer sk-test"
    assert rec["body"] == chat(temperature=0.5)
    assert json.loads(rec["raw"]) == rec["body"]
