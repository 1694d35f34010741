"""API keys as labelled records through `/v1/manage/apikey`, `/v1/key` and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from tests.gateway import ADMIN_KEY, Gateway

HELLO = [{"role": "user", "content": "hi"}]
FIELDS = {"id", "name", "key_prefix", "monthly_limit", "monthly_spend", "monthly_reserved", "permissions",
          "labels", "created_by", "created_at", "revoked_at", "policy", "period", "window_start", "window_end"}


def create(gateway: Gateway, body: dict, key: str = ADMIN_KEY) -> tuple[int, dict]:
    status, _, out = gateway.post_json("/v1/manage/apikey", body, key=key)
    return status, out


def put(gateway: Gateway, key_id: str, body: dict, key: str = ADMIN_KEY) -> tuple[int, dict]:
    import json

    status, _, raw = gateway.request("PUT", f"/v1/manage/apikey/{key_id}", json.dumps(body).encode(), key,
                                     {"Content-Type": "application/json"})
    return status, json.loads(raw)


def test_created_key_works_with_the_sdk_and_never_shows_a_hash(gateway: Gateway) -> None:
    status, rec = create(gateway, {"name": "growth-autocomplete-prod", "monthly_limit": 2000,
                                   "permissions": {"completions": "write", "manage": "none"},
                                   "labels": {"team": "growth", "env": "prod", "feature": "autocomplete"}})
    assert status == 201
    assert set(rec) == FIELDS | {"key"}
    assert rec["monthly_limit"] == "2000" and rec["monthly_spend"] == "0"
    assert rec["created_by"]["name"] == "admin" and rec["key"].startswith(rec["key_prefix"])
    with openai.OpenAI(base_url=gateway.base_url, api_key=rec["key"], max_retries=0) as client:
        done = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert gateway.log_record(done.id)["labels"] == {"team": "growth", "env": "prod", "feature": "autocomplete"}
    status, shown = gateway.get(f"/v1/manage/apikey/{rec['id']}")
    assert status == 200 and set(shown) == FIELDS and "key" not in shown
    assert all("hash" not in k for k in shown)
    assert float(shown["monthly_spend"]) > 0


def test_list_filters_by_label_and_paginates(gateway: Gateway) -> None:
    made = [create(gateway, {"name": f"page-{i}", "labels": {"suite": "paging", "i": str(i)}})[1]["id"]
            for i in range(5)]
    create(gateway, {"name": "other", "labels": {"suite": "elsewhere"}})
    seen, cursor = [], None
    while True:
        status, page = gateway.get("/v1/manage/apikey?label.suite=paging&limit=2"
                                   + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200
        seen += [k["id"] for k in page["data"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert seen == made
    status, page = gateway.get("/v1/manage/apikey?label.suite=paging&label.i=3")
    assert [k["name"] for k in page["data"]] == ["page-3"]


def test_put_replaces_labels_whole_and_history_keeps_old_labels(gateway: Gateway) -> None:
    _, rec = create(gateway, {"name": "relabel", "labels": {"team": "a", "env": "dev"}})
    with openai.OpenAI(base_url=gateway.base_url, api_key=rec["key"], max_retries=0) as client:
        before = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).id
        status, updated = put(gateway, rec["id"], {"labels": {"team": "b"}, "name": "relabelled"})
        assert status == 200 and updated["labels"] == {"team": "b"} and updated["name"] == "relabelled"
        after = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).id
    assert gateway.log_record(before)["labels"] == {"team": "a", "env": "dev"}
    assert gateway.log_record(after)["labels"] == {"team": "b"}


def test_delete_revokes_at_once_and_keeps_the_record(gateway: Gateway) -> None:
    _, rec = create(gateway, {"name": "to-revoke"})
    with openai.OpenAI(base_url=gateway.base_url, api_key=rec["key"], max_retries=0) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        status, _, body = gateway.request("DELETE", f"/v1/manage/apikey/{rec['id']}")
        assert status == 200
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    status, shown = gateway.get(f"/v1/manage/apikey/{rec['id']}")
    assert status == 200 and shown["revoked_at"] is not None


def test_a_key_reads_only_its_own_record(gateway: Gateway) -> None:
    _, mine = create(gateway, {"name": "self-reader", "monthly_limit": "5.5", "labels": {"team": "x"}})
    _, other = create(gateway, {"name": "someone-else"})
    status, me = gateway.get("/v1/key", key=mine["key"])
    assert status == 200 and me["id"] == mine["id"] and me["monthly_limit"] == "5.5"
    assert me["labels"] == {"team": "x"}
    status, body = gateway.get(f"/v1/manage/apikey/{other['id']}", key=mine["key"])
    assert status == 403


def test_permissions_are_enforced_everywhere(gateway: Gateway) -> None:
    _, no_completions = create(gateway, {"name": "manager-only",
                                         "permissions": {"completions": "none", "manage": "read"}})
    _, reader = create(gateway, {"name": "reader", "permissions": {"completions": "none", "manage": "read"}})
    with openai.OpenAI(base_url=gateway.base_url, api_key=no_completions["key"], max_retries=0) as client:
        with pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        with pytest.raises(openai.PermissionDeniedError):
            client.embeddings.create(model="embed", input="x")
    assert gateway.get("/v1/manage/apikey", key=reader["key"])[0] == 200
    assert gateway.get("/v1/logs", key=reader["key"])[0] == 200
    status, body = create(gateway, {"name": "nope"}, key=reader["key"])
    assert status == 403 and body["error"]["type"] == "permission_error"
    assert put(gateway, reader["id"], {"name": "x"}, key=reader["key"])[0] == 403


def test_no_escalation(gateway: Gateway) -> None:
    _, manager = create(gateway, {"name": "limited-manager",
                                  "permissions": {"completions": "none", "manage": "write"}})
    _, strong = create(gateway, {"name": "strong", "permissions": {"completions": "write", "manage": "write"}})
    status, body = create(gateway, {"name": "escalated", "permissions": {"completions": "write"}},
                          key=manager["key"])
    assert status == 403 and body["error"]["param"] == "permissions.completions"
    status, ok = create(gateway, {"name": "weaker", "permissions": {"completions": "none", "manage": "read"}},
                        key=manager["key"])
    assert status == 201
    assert put(gateway, ok["id"], {"permissions": {"completions": "write", "manage": "read"}},
               key=manager["key"])[0] == 403
    assert put(gateway, strong["id"], {"labels": {"hijacked": "yes"}}, key=manager["key"])[0] == 403
    assert gateway.request("DELETE", f"/v1/manage/apikey/{strong['id']}", key=manager["key"])[0] == 403
    for change in ({"permissions": {"completions": "none", "manage": "read"}}, {"monthly_limit": 1}):
        status, body = put(gateway, manager["id"], change, key=manager["key"])
        assert status == 403 and "its own" in body["error"]["message"]


def test_created_by_is_the_user_behind_the_calling_key(gateway: Gateway) -> None:
    out = gateway.cli("users", "create", "--name", "alice")
    assert out.returncode == 0, out.stderr
    alice_key = out.stdout.strip().splitlines()[-1]
    import time

    deadline = time.monotonic() + 5
    while True:  # created by another process: picked up by the key poller within ~1 s
        status, rec = create(gateway, {"name": "made-by-alice", "labels": {"team": "a"}}, key=alice_key)
        if status == 201 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 201 and rec["created_by"]["name"] == "alice"
    out = gateway.cli("users", "create", "--name", "alice")
    assert out.returncode != 0 and "already exists" in out.stderr


@pytest.mark.parametrize("body, param", [
    ({"name": "x", "colour": "red"}, "colour"),
    ({"name": 5}, "name"),
    ({}, "name"),
    ({"name": "x", "monthly_limit": -1}, "monthly_limit"),
    ({"name": "x", "monthly_limit": "lots"}, "monthly_limit"),
    ({"name": "x", "monthly_limit": "NaN"}, "monthly_limit"),
    ({"name": "x", "monthly_limit": "0.0000000000001"}, "monthly_limit"),
    ({"name": "x", "labels": {"team": 5}}, "labels.team"),
    ({"name": "x", "labels": {"bad name": "v"}}, "labels.bad name"),
    ({"name": "x", "labels": {"team": ""}}, "labels.team"),
    ({"name": "x", "labels": {f"l{i}": "v" for i in range(33)}}, "labels"),
    ({"name": "x", "labels": ["team"]}, "labels"),
    ({"name": "x", "permissions": {"manage": "admin"}}, "permissions.manage"),
    ({"name": "x", "permissions": {"completions": "read"}}, "permissions.completions"),
    ({"name": "x", "permissions": {"billing": "write"}}, "permissions.billing"),
    ({"name": "x", "policy": "no-such-policy"}, "policy"),
])
def test_bad_key_bodies_are_400_naming_the_field(gateway: Gateway, body: dict, param: str) -> None:
    status, out = create(gateway, body)
    assert status == 400, out
    assert out["error"]["param"] == param and out["error"]["type"] == "invalid_request_error"


def test_bad_ids_and_keys(gateway: Gateway) -> None:
    assert gateway.get("/v1/manage/apikey/00000000-0000-0000-0000-000000000000")[0] == 404
    assert put(gateway, "nope", {"name": "x"})[0] == 404
    assert gateway.request("DELETE", "/v1/manage/apikey/nope")[0] == 404
    status, body = gateway.get("/v1/manage/apikey", key="garbage")
    assert status == 401 and body["error"]["type"] == "authentication_error"
    _, manager = create(gateway, {"name": "gone-manager", "permissions": {"manage": "write"}})
    gateway.request("DELETE", f"/v1/manage/apikey/{manager['id']}")
    status, body = gateway.get("/v1/manage/apikey", key=manager["key"])
    assert status == 401 and "revoked" in body["error"]["message"]


def test_cli_mirrors_the_api(gateway: Gateway) -> None:
    out = gateway.cli("keys", "create", "--name", "cli-key", "--label", "team=cli", "--limit", "12.50")
    assert out.returncode == 0, out.stderr
    status, page = gateway.get("/v1/manage/apikey?label.team=cli")
    [rec] = page["data"]
    assert rec["monthly_limit"] == "12.5"
    out = gateway.cli("keys", "update", rec["id"], "--label", "team=cli2", "--no-limit")
    assert out.returncode == 0, out.stderr
    out = gateway.cli("keys", "show", rec["id"])
    assert '"team": "cli2"' in out.stdout and '"monthly_limit": null' in out.stdout
    assert "cli-key" in gateway.cli("keys", "list").stdout
    out = gateway.cli("keys", "create", "--name", "bad", "--label", "team=x", "--limit", "-3")
    assert out.returncode != 0 and "monthly_limit" in out.stderr and "Traceback" not in out.stderr


def test_a_limited_manager_cannot_grant_or_lift_limits(gateway: Gateway) -> None:
    _, capped = create(gateway, {"name": "capped-mgr", "monthly_limit": "1",
                                 "permissions": {"completions": "write", "manage": "write"}})
    status, child = create(gateway, {"name": "child"}, key=capped["key"])
    assert status == 201 and child["monthly_limit"] == "1"  # inherited
    for body in ({"name": "unlimited", "monthly_limit": None}, {"name": "bigger", "monthly_limit": "2"}):
        status, out = create(gateway, body, key=capped["key"])
        assert status == 403 and out["error"]["param"] == "monthly_limit"
    status, sidekick = create(gateway, {"name": "sidekick", "monthly_limit": "0.5",
                                        "permissions": {"completions": "write", "manage": "write"}},
                              key=capped["key"])
    assert status == 201
    assert put(gateway, capped["id"], {"monthly_limit": None}, key=sidekick["key"])[0] == 403
    assert put(gateway, child["id"], {"monthly_limit": None}, key=capped["key"])[0] == 403
    assert put(gateway, child["id"], {"monthly_limit": "0.25"}, key=capped["key"])[0] == 200
    _, free = create(gateway, {"name": "free"})
    assert put(gateway, free["id"], {"labels": {"x": "y"}}, key=capped["key"])[0] == 403


def test_management_bad_input_never_becomes_a_500(gateway: Gateway) -> None:
    import base64

    huge = base64.urlsafe_b64encode(b"99999999999999999999:x").decode().rstrip("=")
    for path, param in (("/v1/logs?from=100000000000000000000", "from"),
                        ("/v1/logs?to=99999999999999999999", "to"),
                        (f"/v1/logs?cursor={huge}", "cursor"),
                        (f"/v1/manage/apikey?cursor={huge}", "cursor"),
                        ("/v1/logs?tag=", "tag"), ("/v1/logs?tag=US/", "tag")):
        status, body = gateway.get(path)
        assert status == 400 and body["error"]["param"] == param, (path, body)
    status, _, raw = gateway.request("POST", "/v1/manage/apikey", b'{"name": ', ADMIN_KEY,
                                     {"Content-Type": "application/json"})
    import json

    assert status == 400 and json.loads(raw)["error"]["message"] == "request body is not valid JSON"


def test_cli_rejects_bad_input_without_a_traceback(gateway: Gateway) -> None:
    out = gateway.cli("keys", "create", "--name", "x", "--limit", "abc")
    assert out.returncode != 0 and "not a number of dollars" in out.stderr and "Traceback" not in out.stderr
    for _ in range(2):  # refused before anything is stored: the retry is not "already exists"
        out = gateway.cli("users", "create", "--name", "evil\nname")
        assert out.returncode != 0 and "name" in out.stderr and "already exists" not in out.stderr
        assert "Traceback" not in out.stderr


@pytest.mark.parametrize("command", [("keys", "create", "--name", "lost"), ("budgets", "list"), ("ratelimits", "list"),
                                     ("report",), ("alerts", "list")], ids=lambda c: c[0])
def test_cli_away_from_the_gateway_says_it_made_a_new_empty_ledger(tmp_path: Path, command: tuple[str, ...]) -> None:
    """`tallygate keys create` run in another directory used to make a fresh tallygate.db there and
    print a secret the running gateway answers 401 to, without a word: now stderr says so, once."""
    env = {k: v for k, v in os.environ.items() if k != "TALLYGATE_DB_URL"}
    run = [sys.executable, "-m", "tallygate", *command]
    first = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert f"{tmp_path / 'tallygate.db'} did not exist" in first.stderr and "--db" in first.stderr, first.stderr
    again = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "did not exist" not in again.stderr, again.stderr
