"""A routing policy's first target's model rate limit is admitted in the request's one Redis round
trip, with its key's budget and rate limit (counted on a real redis-server with MONITOR): one
reservation script call a request, whether that target admits it or, at its limit, is skipped for
the next one. Only a fallback to a further target that has a limit of its own costs a second call
(a new attempt, as documented)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator

import openai
import pytest
import redis

from tallygate.pipeline.redis_lua import HEARTBEAT, RESERVE, SETTLE
from tallygate.pipeline.redis_ratelimit_lua import RATE_SETTLE, RESERVE_RATED
from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import InProcessGateway
from tests.redis import RedisServer

HELLO = [{"role": "user", "content": "hello round trips"}]


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


RESERVATIONS = {_sha(RESERVE_RATED), _sha(RESERVE)}
AFTER_THE_ANSWER = {_sha(SETTLE), _sha(RATE_SETTLE), _sha(HEARTBEAT)}  # settles; the heartbeat's timer


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, rds: RedisServer, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[InProcessGateway]:
    config = standard_config(upstream)
    config["policies"] = {"mini-first": {"strategy": "fallback", "targets": ["gpt-4o-mini", "local-llama"]},
                          "mini-then-priced": {"strategy": "fallback", "targets": ["gpt-4o-mini", "priced"]}}
    config["alerts"] = {"enabled": False}  # no spend reads on a timer: only what requests send
    gw = InProcessGateway(tmp_path_factory.mktemp("target-trips"), config,
                          env={"TALLYGATE_REDIS_URL": rds.url}).start()
    yield gw
    gw.stop()


def _create(gw: InProcessGateway, path: str, body: dict) -> dict:
    status, _, rec = gw.post_json(path, body)
    assert status == 201, rec
    return rec


class _Stamped(list):
    """The fake upstream's record of requests, each stamped with the time it arrived."""

    def append(self, request: dict) -> None:
        super().append({**request, "at": time.time()})


def _commands_during(rds: RedisServer, action: Callable[[], None]) -> list[tuple[float, str, str]]:
    """(time, command, client) of every command clients sent Redis while `action` ran (MONITOR;
    not those scripts ran)."""
    seen: list[tuple[float, str, str]] = []
    client = redis.Redis.from_url(rds.url)
    stop = threading.Event()

    def watch() -> None:
        with client.monitor() as m:
            for command in m.listen():
                if stop.is_set() and "trips-monitor-off" in command["command"]:
                    return  # every command sent before it has been read
                if command.get("client_type") != "lua":
                    seen.append((float(command["time"]), command["command"],
                                 f"{command.get('client_address')}:{command.get('client_port')}"))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    other = redis.Redis.from_url(rds.url)
    deadline = time.monotonic() + 5
    while not any("trips-monitor-on" in c for _, c, _ in seen) and time.monotonic() < deadline:
        other.echo("trips-monitor-on")  # MONITOR sees it once it is listening
        time.sleep(0.05)
    other.close()
    start = len(seen)
    try:
        action()
        time.sleep(0.3)  # the settles, sent after the answers
    finally:
        stop.set()
        client.echo("trips-monitor-off")  # the monitor reads up to this one, then stops
        watcher.join(10)
        client.close()
    return seen[start:]


def _script(command: str) -> str:
    return command.split()[1].strip('"') if command.upper().startswith("EVALSHA ") else ""


def _on_the_request_path(commands: list[tuple[float, str, str]]) -> list[tuple[float, str]]:
    """What the gateway sent that is neither a settle nor a timer's (the hold heartbeat; the
    shared circuits' poll, on connections of its own) nor this test's own, nor a pooled
    connection's handshake (the pool opens one more when a settle is being sent as a request
    reserves: the connection's, not the reservation's, and once)."""
    polling = {who for _, c, who in commands if c.upper().startswith("MGET TG:COOL:")}
    return [(t, c) for t, c, who in commands if _script(c) not in AFTER_THE_ANSWER and who not in polling
            and not c.upper().startswith(("ECHO ", "HELLO ", "CLIENT "))]


def _served(gw: InProcessGateway, upstream: FakeUpstream, key: str, model: str, n: int,
            windows: list[tuple[float, float]]) -> list[str]:
    """`n` requests one after the other: the models that served them; `windows` gets, for each,
    (when it was sent, when the upstream received it)."""
    served = []
    with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=10) as client:
        for _ in range(n):
            sent = time.time()
            served.append(client.chat.completions.create(model=model, messages=HELLO,  # type: ignore[arg-type]
                                                         max_tokens=5).model)
            windows.append((sent, upstream.requests[-1]["at"]))
    return served


def test_a_policys_first_target_limit_rides_in_the_reservation_round_trip(
        gateway: InProcessGateway, upstream: FakeUpstream, rds: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before each request reaches the upstream, Redis received exactly one call from the
    gateway: the reservation (key budget, key rate limit, the first target's model limit)."""
    monkeypatch.setattr(upstream, "requests", _Stamped())
    key = _create(gateway, "/v1/manage/apikey", {"name": "trips", "monthly_limit": "100"})
    _create(gateway, "/v1/manage/ratelimit", {"name": "trips-key", "scope": {"key": key["id"]},
                                              "requests_per_minute": 1000, "tokens_per_minute": 10**9})
    mini = _create(gateway, "/v1/manage/ratelimit", {"name": "trips-mini", "scope": {"model": "gpt-4o-mini"},
                                                     "requests_per_minute": 6, "max_concurrent": 10})
    windows: list[tuple[float, float]] = []
    assert _served(gateway, upstream, key["key"], "policy/mini-first", 3, windows) == ["gpt-4o-mini"] * 3  # warm

    served: list[str] = []
    windows.clear()
    commands = _on_the_request_path(_commands_during(
        rds, lambda: served.extend(_served(gateway, upstream, key["key"], "policy/mini-first", 5, windows))))
    # 3 more fit under the first target's 6 a minute; the other 2 are skipped to `local-llama`.
    assert served == ["gpt-4o-mini"] * 3 + ["llama-3.1-8b"] * 2, served
    shown = "\n".join(f"{t:.4f} {c[:90]}" for t, c in commands) + f"\nwindows: {windows}"
    reservations = [(t, c) for t, c in commands if _script(c) in RESERVATIONS]
    assert [_script(c) for _, c in reservations] == [_sha(RESERVE_RATED)] * 5, shown  # budget and limits in one
    for sent, reached in windows:  # between sending each request and its reaching the upstream: that one call
        assert [_script(c) for t, c in commands if sent <= t <= reached] == [_sha(RESERVE_RATED)], shown
    assert redis.Redis.from_url(rds.url).zcard(f"tg:rq:rl:{mini['id']}") == 6  # counted in Redis, exactly

    # A fallback to a further target with a limit of its own is a new attempt: one more call.
    _create(gateway, "/v1/manage/ratelimit", {"name": "trips-priced", "scope": {"model": "priced"},
                                              "requests_per_minute": 100})
    _served(gateway, upstream, key["key"], "policy/mini-then-priced", 1, windows)  # the new limit read
    commands = _on_the_request_path(_commands_during(
        rds, lambda: served.extend(_served(gateway, upstream, key["key"], "policy/mini-then-priced", 1, windows))))
    assert served[-1] == "echo-priced", served
    assert [_script(c) for _, c in commands if _script(c) in RESERVATIONS] == [_sha(RESERVE_RATED)] * 2, commands
