"""Dashboard sessions over HTTP: the cookie, CSRF on changes, Bearer keys unchanged, revocation."""

from __future__ import annotations

import json

import pytest

from tallygate.manage.sessions import SessionStore
from tests.gateway import ADMIN_KEY, Gateway


def sign_in(gw: Gateway, key: str) -> tuple[int, dict[str, str], dict]:
    status, headers, body = gw.request("POST", "/v1/dashboard/session", json.dumps({"key": key}).encode(), key=None,
                                       headers={"Content-Type": "application/json"})
    return status, headers, json.loads(body)


def cookie_of(headers: dict[str, str]) -> str:
    return headers["set-cookie"].split(";", 1)[0]


@pytest.fixture(scope="module")
def session(gateway: Gateway) -> tuple[str, str]:
    status, headers, body = sign_in(gateway, ADMIN_KEY)
    assert status == 201, body
    return cookie_of(headers), body["csrf_token"]


def test_session_cookie_is_httponly_samesite_strict_with_an_expiry(gateway: Gateway) -> None:
    status, headers, body = sign_in(gateway, ADMIN_KEY)
    assert status == 201
    attrs = [a.strip().lower() for a in headers["set-cookie"].split(";")]
    assert "httponly" in attrs and "samesite=strict" in attrs and "path=/" in attrs
    assert any(a.startswith("max-age=") and int(a[8:]) > 0 for a in attrs)
    assert ADMIN_KEY not in json.dumps(body) and ADMIN_KEY not in headers["set-cookie"]


def test_cookie_reads_but_changes_need_the_csrf_token(gateway: Gateway, session: tuple[str, str]) -> None:
    cookie, csrf = session
    status, _, _ = gateway.request("GET", "/v1/manage/apikey", key=None, headers={"Cookie": cookie})
    assert status == 200
    body = json.dumps({"name": "via-cookie"}).encode()
    base = {"Cookie": cookie, "Content-Type": "application/json"}
    status, _, raw = gateway.request("POST", "/v1/manage/apikey", body, key=None, headers=base)
    assert status == 403 and json.loads(raw)["error"]["code"] == "csrf_failed"
    status, _, raw = gateway.request("POST", "/v1/manage/apikey", body, key=None,
                                     headers={**base, "X-CSRF-Token": csrf + "x"})
    assert status == 403
    status, _, raw = gateway.request("POST", "/v1/manage/apikey", body, key=None,
                                     headers={**base, "X-CSRF-Token": csrf, "Origin": "http://attacker.test"})
    assert status == 403 and json.loads(raw)["error"]["code"] == "csrf_failed"
    status, _, raw = gateway.request("POST", "/v1/manage/apikey", body, key=None,
                                     headers={**base, "X-CSRF-Token": csrf})
    assert status == 201, raw


def test_bearer_keys_work_unchanged_next_to_a_session_cookie(gateway: Gateway) -> None:
    headers = {"Cookie": "tallygate_session=stale-or-forged", "Content-Type": "application/json"}
    status, _, raw = gateway.request("POST", "/v1/manage/apikey", b'{"name": "bearer"}', headers=headers)
    assert status == 201, raw  # Bearer wins; no CSRF token needed without the cookie's authority
    status, _, raw = gateway.request("GET", "/v1/manage/apikey", key=None, headers=headers)
    assert status == 401 and json.loads(raw)["error"]["code"] == "session_expired"


def test_a_completions_only_key_cannot_sign_in(gateway: Gateway, api_key: str) -> None:
    status, headers, body = sign_in(gateway, api_key)
    assert status == 403 and "set-cookie" not in headers
    assert "no management permission" in body["error"]["message"]
    status, _, body = sign_in(gateway, "tg-nope")
    assert status == 401


def test_revoking_the_key_ends_its_sessions_and_sign_out_ends_one(gateway: Gateway) -> None:
    status, _, created = gateway.post_json("/v1/manage/apikey", {"name": "dash-user",
                                                                 "permissions": {"manage": "read"}})
    assert status == 201
    _, headers, doc = sign_in(gateway, created["key"])
    cookie = cookie_of(headers)
    assert gateway.request("GET", "/v1/logs", key=None, headers={"Cookie": cookie})[0] == 200
    gateway.request("DELETE", f"/v1/manage/apikey/{created['id']}")
    status, _, raw = gateway.request("GET", "/v1/logs", key=None, headers={"Cookie": cookie})
    assert status == 401 and json.loads(raw)["error"]["code"] == "revoked_api_key"
    _, headers, doc = sign_in(gateway, ADMIN_KEY)
    cookie = cookie_of(headers)
    assert gateway.request("DELETE", "/v1/dashboard/session", key=None, headers={"Cookie": cookie})[0] == 403
    status, out_headers, _ = gateway.request("DELETE", "/v1/dashboard/session", key=None,
                                             headers={"Cookie": cookie, "X-CSRF-Token": doc["csrf_token"]})
    assert status == 200 and "max-age=0" in out_headers["set-cookie"].lower()
    assert gateway.request("GET", "/v1/logs", key=None, headers={"Cookie": cookie})[0] == 401


def test_sessions_expire_after_their_ttl_and_are_kept_hashed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from sqlalchemy import text

    from tallygate.store.db import migrate, open_engine
    from tallygate.store.sessions import SessionRows

    engine = open_engine(f"sqlite:///{tmp_path}/s.db")
    migrate(engine)
    now = [1_000.0]
    store = SessionStore(SessionRows(engine), ttl_s=60, clock=lambda: now[0])

    async def run() -> None:
        token, session = await store.open("tg-abc", "digest")
        assert await store.get(token) == session and session.csrf_ok(session.csrf_token)
        assert not session.csrf_ok(None)
        with engine.connect() as conn:
            assert token not in str(conn.execute(text("SELECT * FROM dashboard_sessions")).all())
        now[0] += 59
        assert await store.get(token) is not None
        now[0] += 1
        assert await store.get(token) is None
        await store.open("tg-abc", "digest")  # opening a session drops the expired ones
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM dashboard_sessions")).scalar_one() == 1

    asyncio.run(run())
    engine.dispose()


def test_dashboard_files_are_served_without_escaping_their_folder(gateway: Gateway) -> None:
    status, headers, body = gateway.request("GET", "/dashboard/explore?group=model", key=None)
    assert status in (200, 503)  # 503 names `make dashboard` when the assets are not built
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    for path in ("/dashboard/..%2f..%2fsettings.py", "/dashboard/assets/missing.js", "/dashboard/../app.py"):
        status, _, body = gateway.request("GET", path, key=None)
        assert status in (404, 503) and b"import" not in body
