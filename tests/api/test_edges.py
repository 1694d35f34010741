"""The HTTP edge holds without a key: header and body caps, header/body/idle timeouts, the
connection bound and the file-descriptor limit, and 405s that say what is allowed."""

from __future__ import annotations

import json
import resource
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import psutil
import pytest

from tests.conftest import standard_config
from tests.gateway import ADMIN_KEY, Gateway, read_until_closed

HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def edge(upstream, tmp_path_factory) -> Iterator[Gateway]:  # type: ignore[no-untyped-def]
    """A gateway with short timeouts, started with a low soft open-file limit (1024) that it must
    raise itself to hold its connection bound."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        gw = Gateway(tmp_path_factory.mktemp("edge"), standard_config(upstream),
                     env={"TALLYGATE_HEADER_TIMEOUT_S": "2", "TALLYGATE_BODY_TIMEOUT_S": "2",
                          "TALLYGATE_IDLE_TIMEOUT_S": "2",
                          # its 1,100 held sockets share one address: per-address cap in test_edge_fairness.py
                          "TALLYGATE_MAX_CONNECTIONS_PER_ADDRESS": "2000"}).start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    yield gw
    gw.stop()


def _rss(gw: Gateway) -> int:
    assert gw.proc is not None
    return psutil.Process(gw.proc.pid).memory_info().rss


def _connect(gw: Gateway) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gw.port), timeout=10)


def test_gateway_raises_its_open_file_limit_at_start(edge: Gateway) -> None:
    assert edge.proc is not None
    soft, _hard = psutil.Process(edge.proc.pid).rlimit(psutil.RLIMIT_NOFILE)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft >= min(hard, 4096 + 256)  # TALLYGATE_MAX_CONNECTIONS (4096) and some room


def test_1100_idle_and_slow_sockets_do_not_stop_a_legitimate_client(edge: Gateway) -> None:
    key = edge.create_key("legit")
    idle = [_connect(edge) for _ in range(600)]
    slow = [_connect(edge) for _ in range(500)]
    for s in slow:
        s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    stop = threading.Event()

    def trickle() -> None:  # one byte a second of a header that never ends
        while not stop.is_set():
            for s in slow:
                try:
                    s.send(b"a")
                except OSError:
                    pass
            stop.wait(1.0)

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        started = time.monotonic()
        with openai.OpenAI(base_url=edge.base_url, api_key=key, max_retries=0, timeout=5) as client:
            reply = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        assert reply.id and time.monotonic() - started < 2
        # Past the header timeout (2 s) the idle and slow sockets are answered 408 and closed.
        time.sleep(3.5)
        answers = [read_until_closed(s) for s in idle[:20] + slow[:20]]
        assert all(a.startswith(b"HTTP/1.1 408") and b"header_timeout" in a for a in answers), \
            [a[:40] for a in answers]
    finally:
        stop.set()
        t.join()
        for s in idle + slow:
            s.close()


def test_unfinished_huge_headers_get_431_and_memory_stays_flat(edge: Gateway) -> None:
    before = _rss(edge)
    socks = [_connect(edge) for _ in range(20)]
    line = b"X-Big: " + b"a" * (1 << 20)  # a 1 MiB header value, then more, never ending
    answers = []
    for s in socks:
        s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
        try:
            for _ in range(50):  # up to 50 MB per connection, if the gateway kept reading
                s.sendall(line)
        except OSError:
            pass  # closed by the gateway, as it should be
        answers.append(read_until_closed(s))
        s.close()
    grown = _rss(edge) - before
    print(f"20 unfinished 50 MB headers: RSS +{grown / 2**20:.1f} MB")
    assert all(a.startswith(b"HTTP/1.1 431") for a in answers), answers[0][:200]
    assert grown < 16 << 20


def _post_stream(gw: Gateway, path: str, size: int, chunked: bool, out: list) -> None:  # type: ignore[type-arg]
    s = _connect(gw)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {size}\r\n\r\n"
    piece = b"[" * (1 << 20)
    try:
        s.sendall(head.encode())
        for _ in range(size >> 20):
            s.sendall(b"100000\r\n" + piece + b"\r\n" if chunked else piece)
    except OSError:
        pass
    out.append(read_until_closed(s))
    s.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_8_parallel_200mb_unauthenticated_bodies_do_not_move_rss(edge: Gateway, chunked: bool) -> None:
    before, peak = _rss(edge), 0
    answers: list[bytes] = []
    paths = ["/v1/manage/apikey", "/v1/feedback", "/v1/analytics/usage", "/v1/logs"] * 2
    threads = [threading.Thread(target=_post_stream, args=(edge, p, 200 << 20, chunked, answers)) for p in paths]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, _rss(edge))
        time.sleep(0.05)
    grown = max(peak, _rss(edge)) - before
    print(f"8 x 200 MB unauthenticated bodies ({'chunked' if chunked else 'content-length'}): "
          f"RSS +{grown / 2**20:.1f} MB at the peak")
    # 413 (over the limit), or 405 for the GET-only routes (refused before the body is read).
    assert len(answers) == 8 and all(a[:12] in (b"HTTP/1.1 413", b"HTTP/1.1 405") for a in answers), \
        [a[:40] for a in answers]
    assert sum(a.startswith(b"HTTP/1.1 413") for a in answers) >= 4
    assert grown < 8 << 20


def test_slow_body_is_cut_at_the_body_timeout(edge: Gateway) -> None:
    s = _connect(edge)
    s.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
              "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode())
    started = time.monotonic()
    answer = b""
    s.settimeout(0.5)
    while time.monotonic() - started < 8 and not answer:
        try:
            s.send(b" ")  # one byte every half second: never 1000 in time
            answer = s.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            break
    s.close()
    assert answer.startswith(b"HTTP/1.1 408") and b"body_timeout" in answer, answer
    assert time.monotonic() - started < 5
    error = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
    deadline = time.monotonic() + 5
    while not (logged := edge.get("/v1/logs?status=408")[1]["data"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [(r["status"], r["error"]["type"], r["error"]["code"]) for r in logged] == [
        (408, error["type"], error["code"])]  # recorded as the edge answered it, not as a disconnect


def test_management_bodies_are_capped_before_parsing(edge: Gateway) -> None:
    big = json.dumps({"name": "x" * 100_000}).encode()
    for path, key in (("/v1/manage/apikey", ADMIN_KEY), ("/v1/feedback", None), ("/v1/manage/apikey", None)):
        status, headers, body = edge.request("POST", path, big, key, {"Content-Type": "application/json"})
        assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large", (path, body)


def test_wrong_method_is_405_with_allow(edge: Gateway) -> None:
    status, headers, body = edge.request("GET", "/v1/chat/completions")
    assert status == 405 and headers["allow"] == "POST"
    assert json.loads(body)["error"]["code"] == "method_not_allowed"
    status, headers, _ = edge.request("DELETE", "/v1/logs")
    assert status == 405 and "GET" in headers["allow"]


def test_readyz_shows_the_ledger_backlog(edge: Gateway) -> None:
    status, body = edge.get("/readyz", key=None)
    assert status == 200 and body["status"] == "ready"
    assert set(body["ledger"]) >= {"pending_records", "backlog_bytes", "max_bytes", "full"}


def test_past_the_connection_bound_the_answer_is_a_503_in_the_routes_shape(upstream, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    gw = Gateway(tmp_path, standard_config(upstream), env={"TALLYGATE_MAX_CONNECTIONS": "8"}).start()
    held = [_connect(gw) for _ in range(10)]
    try:
        time.sleep(0.3)  # the gateway has accepted them all
        s = _connect(gw)
        s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = read_until_closed(s)
        s.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503") and b"application/json" in head, answer[:200]
        assert json.loads(body)["error"]["code"] == "too_many_connections"
        s = _connect(gw)  # on /v1/messages, in Anthropic's shape
        s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        head, _, body = read_until_closed(s).partition(b"\r\n\r\n")
        s.close()
        assert head.startswith(b"HTTP/1.1 503"), head
        assert json.loads(body)["type"] == "error" and json.loads(body)["error"]["type"] == "overloaded_error", body
        assert json.loads(body)["error"]["code"] == "too_many_connections"
    finally:
        for s in held:
            s.close()
        gw.stop()
