"""Dashboard sessions across processes: two `tallygate serve` processes on one PostgreSQL and one
Redis (as behind a load balancer, or `--workers`). A cookie from one is good in the other; a sign-out or
an expiry in the database ends it in both; CSRF is checked in both."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from tests.api.test_dashboard_session import cookie_of, sign_in
from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import ADMIN_KEY, Gateway
from tests.postgres import postgres_server
from tests.redis import redis_server


@pytest.fixture(scope="module")
def pair(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Gateway]]:
    with postgres_server() as url, redis_server() as rds:
        root = tmp_path_factory.mktemp("sessions")
        started: list[Gateway] = []
        try:
            for name in ("a", "b"):  # one after the other: the first start migrates the database
                (root / name).mkdir()
                started.append(Gateway(root / name, standard_config(upstream), db_url=url,
                                       args=("--redis", rds.url)).start())
            yield started[0], started[1]
        finally:
            for gw in started:
                gw.stop()


def get(gw: Gateway, path: str, cookie: str) -> tuple[int, dict]:
    status, _, body = gw.request("GET", path, key=None, headers={"Cookie": cookie})
    return status, json.loads(body)


def test_a_session_from_one_process_works_in_the_other_until_signed_out(pair: tuple[Gateway, Gateway]) -> None:
    a, b = pair
    status, headers, doc = sign_in(a, ADMIN_KEY)
    assert status == 201, doc
    cookie, csrf = cookie_of(headers), doc["csrf_token"]
    status, there = get(b, "/v1/dashboard/session", cookie)
    assert status == 200 and there["signed_in"] and there["csrf_token"] == csrf
    assert there["expires_at"] == doc["expires_at"]
    assert get(b, "/v1/logs?limit=1", cookie)[0] == 200
    made = {"Cookie": cookie, "Content-Type": "application/json"}
    assert b.request("POST", "/v1/manage/apikey", b'{"name": "x"}', key=None, headers=made)[0] == 403  # no CSRF
    status, _, body = b.request("POST", "/v1/manage/apikey", b'{"name": "made-in-b"}', key=None,
                                headers={**made, "X-CSRF-Token": csrf})
    assert status == 201, body
    status, _, _ = b.request("DELETE", "/v1/dashboard/session", key=None, headers={"Cookie": cookie,
                                                                                   "X-CSRF-Token": csrf})
    assert status == 200
    for gw in (a, b):  # signed out in b: unknown in a too, at once
        status, body = get(gw, "/v1/logs?limit=1", cookie)
        assert status == 401 and body["error"]["code"] == "session_expired"
        assert get(gw, "/v1/dashboard/session", cookie)[1]["signed_in"] is False


def test_an_expired_session_is_refused_by_every_process(pair: tuple[Gateway, Gateway]) -> None:
    a, b = pair
    _, headers, _ = sign_in(b, ADMIN_KEY)
    cookie = cookie_of(headers)
    assert get(a, "/v1/logs?limit=1", cookie)[0] == 200
    engine = create_engine(a.db_url)
    try:
        with engine.begin() as conn:  # the session's end, as a clock past it would see it
            assert conn.execute(text("UPDATE dashboard_sessions SET expires_at = 1")).rowcount >= 1
    finally:
        engine.dispose()
    for gw in (a, b):
        status, body = get(gw, "/v1/logs?limit=1", cookie)
        assert status == 401 and body["error"]["code"] == "session_expired"
