"""Rate-limit records through the management API and the CLI (one gateway on SQLite, over HTTP):
CRUD, validation naming the field, and the no-escalation rules budgets have, label escape
included."""

from __future__ import annotations

import json

import pytest

from tests.gateway import ADMIN_KEY, Gateway


def _key(gateway: Gateway, name: str, labels: dict | None = None, manage: str = "write",
         key: str = ADMIN_KEY) -> dict:
    body = {"name": name, "labels": labels or {}, "permissions": {"completions": "write", "manage": manage}}
    status, _, rec = gateway.post_json("/v1/manage/apikey", body, key=key)
    assert status == 201, rec
    return rec


def _limit(gateway: Gateway, name: str, scope: dict, key: str = ADMIN_KEY, **limits: int) -> tuple[int, dict]:
    status, _, rec = gateway.post_json("/v1/manage/ratelimit", {"name": name, "scope": scope, **limits}, key=key)
    return status, rec


def _put(gateway: Gateway, path: str, body: dict, key: str = ADMIN_KEY) -> tuple[int, dict]:
    status, _, raw = gateway.request("PUT", path, json.dumps(body).encode(), key, {"Content-Type": "application/json"})
    return status, json.loads(raw)


def _delete(gateway: Gateway, path: str, key: str = ADMIN_KEY) -> tuple[int, dict]:
    status, _, raw = gateway.request("DELETE", path, key=key)
    return status, json.loads(raw)


def test_rate_limit_crud_through_the_api(gateway: Gateway) -> None:
    status, rec = _limit(gateway, "growth rpm", {"label": {"team": "crud"}}, requests_per_minute=600,
                         max_concurrent=20)
    assert status == 201, rec
    assert set(rec) == {"id", "name", "scope", "requests_per_second", "requests_per_minute", "tokens_per_minute",
                        "max_concurrent", "created_by", "created_at"}
    assert rec["requests_per_second"] is None
    assert rec["requests_per_minute"] == 600 and rec["tokens_per_minute"] is None and rec["max_concurrent"] == 20
    assert rec["scope"] == {"label": {"team": "crud"}} and rec["created_by"]["name"] == "admin"
    status, listing = gateway.get("/v1/manage/ratelimit")
    assert status == 200 and rec["id"] in [r["id"] for r in listing["data"]]
    status, changed = _put(gateway, f"/v1/manage/ratelimit/{rec['id']}",
                           {"tokens_per_minute": 100000, "max_concurrent": None, "name": "g2"})
    assert status == 200, changed
    assert changed["tokens_per_minute"] == 100000 and changed["max_concurrent"] is None and changed["name"] == "g2"
    assert changed["requests_per_minute"] == 600
    status, shown = gateway.get(f"/v1/manage/ratelimit/{rec['id']}")
    assert status == 200 and shown == changed
    status, _ = _delete(gateway, f"/v1/manage/ratelimit/{rec['id']}")
    assert status == 200
    status, body = gateway.get(f"/v1/manage/ratelimit/{rec['id']}")
    assert status == 404 and body["error"]["param"] == "id"


def test_model_scope_and_policy_scope_are_accepted(gateway: Gateway) -> None:
    for model in ("gpt-4o-mini", "policy/cheap"):
        status, rec = _limit(gateway, f"on {model}", {"model": model}, tokens_per_minute=5000)
        assert status == 201 and rec["scope"] == {"model": model}, rec
        assert _delete(gateway, f"/v1/manage/ratelimit/{rec['id']}")[0] == 200


@pytest.mark.parametrize(("body", "param"), [
    ({"name": "x", "scope": {"label": {"team": "x"}, "model": "m"}, "requests_per_minute": 1}, "scope"),
    ({"name": "x", "scope": {}, "requests_per_minute": 1}, "scope"),
    ({"name": "x", "scope": {"model": ""}, "requests_per_minute": 1}, "scope.model"),
    ({"name": "x", "scope": {"tag": "a//b"}, "requests_per_minute": 1}, "scope.tag"),
    ({"name": "x", "scope": {"key": "nope"}, "requests_per_minute": 1}, "scope.key"),
    ({"name": "x", "scope": {"model": "m"}}, None),
    ({"name": "x", "scope": {"model": "m"}, "requests_per_minute": 0}, "requests_per_minute"),
    ({"name": "x", "scope": {"model": "m"}, "tokens_per_minute": "5"}, "tokens_per_minute"),
    ({"name": "x", "scope": {"model": "m"}, "max_concurrent": 1.5}, "max_concurrent"),
    ({"name": "x", "scope": {"model": "m"}, "max_concurrent": 2, "burst": 3}, "burst"),
], ids=["two-scopes", "no-scope", "empty-model", "bad-tag", "unknown-key", "no-limit", "zero", "string",
        "float", "unknown-field"])
def test_bad_rate_limit_is_a_400_naming_the_field(gateway: Gateway, body: dict, param: str | None) -> None:
    status, _, answer = gateway.post_json("/v1/manage/ratelimit", body)
    assert status == 400, answer
    assert answer["error"]["param"] == param, answer


def test_update_cannot_remove_the_last_limit(gateway: Gateway) -> None:
    status, rec = _limit(gateway, "only rpm", {"model": "embed"}, requests_per_minute=5)
    assert status == 201
    status, answer = _put(gateway, f"/v1/manage/ratelimit/{rec['id']}", {"requests_per_minute": None})
    assert status == 400 and answer["error"]["param"] == "requests_per_minute", answer
    _delete(gateway, f"/v1/manage/ratelimit/{rec['id']}")


def test_read_only_key_cannot_write_rate_limits(gateway: Gateway) -> None:
    reader = _key(gateway, "rl-reader", manage="read")
    status, answer = _limit(gateway, "x", {"model": "m"}, key=reader["key"], requests_per_minute=1)
    assert status == 403, answer
    assert gateway.get("/v1/manage/ratelimit", key=reader["key"])[0] == 200


def test_a_bound_key_cannot_loosen_or_delete_a_limit_that_binds_it(gateway: Gateway) -> None:
    team = _key(gateway, "rl-team-admin", {"team": "bound-rl"})
    status, mine = _limit(gateway, "team rpm", {"label": {"team": "bound-rl"}}, requests_per_minute=10,
                          tokens_per_minute=1000)
    assert status == 201
    status, on_model = _limit(gateway, "model cap", {"model": "gpt-4o-mini"}, max_concurrent=3)
    assert status == 201
    status, other = _limit(gateway, "other team", {"label": {"team": "elsewhere"}}, requests_per_minute=10)
    assert status == 201
    secret = team["key"]
    for path, body, param in [
        (mine["id"], {"requests_per_minute": 11}, "requests_per_minute"),
        (mine["id"], {"tokens_per_minute": None}, "tokens_per_minute"),
        (mine["id"], {"scope": {"label": {"team": "x"}}}, "scope"),
        (on_model["id"], {"max_concurrent": 30}, "max_concurrent"),  # a model limit binds every bound key
    ]:
        status, answer = _put(gateway, f"/v1/manage/ratelimit/{path}", body, key=secret)
        assert status == 403 and answer["error"]["param"] == param, (body, answer)
    assert _delete(gateway, f"/v1/manage/ratelimit/{mine['id']}", key=secret)[0] == 403
    assert _delete(gateway, f"/v1/manage/ratelimit/{on_model['id']}", key=secret)[0] == 403
    # Tightening and renaming are fine; a limit on another team does not bind it.
    status, tighter = _put(gateway, f"/v1/manage/ratelimit/{mine['id']}", {"requests_per_minute": 5, "name": "t"},
                           key=secret)
    assert status == 200 and tighter["requests_per_minute"] == 5
    status, _ = _put(gateway, f"/v1/manage/ratelimit/{other['id']}", {"requests_per_minute": 99}, key=secret)
    assert status == 200
    for rec in (mine, on_model, other):
        assert _delete(gateway, f"/v1/manage/ratelimit/{rec['id']}")[0] == 200


def test_a_bound_key_cannot_take_keys_out_of_its_label_group_limit(gateway: Gateway) -> None:
    team = _key(gateway, "rl-escaper", {"team": "escape-rl"})
    status, rec = _limit(gateway, "escape rpm", {"label": {"team": "escape-rl"}}, requests_per_minute=2)
    assert status == 201
    secret = team["key"]
    # A key it creates inherits the group's labels, and cannot contradict them.
    child = _key(gateway, "rl-child", {"env": "x"}, manage="none", key=secret)
    assert child["labels"] == {"env": "x", "team": "escape-rl"}
    status, _, answer = gateway.post_json("/v1/manage/apikey", {"name": "rl-out", "labels": {"team": "free"}},
                                          key=secret)
    assert status == 403 and answer["error"]["param"] == "labels.team", answer
    # Nor can it relabel a key of the group out of it.
    status, answer = _put(gateway, f"/v1/manage/apikey/{child['id']}", {"labels": {"env": "x"}}, key=secret)
    assert status == 403 and answer["error"]["param"] == "labels" and "escape rpm" in answer["error"]["message"]
    # The admin (bound by nothing) may.
    status, _ = _put(gateway, f"/v1/manage/apikey/{child['id']}", {"labels": {"env": "x"}})
    assert status == 200
    assert _delete(gateway, f"/v1/manage/ratelimit/{rec['id']}")[0] == 200


def test_ratelimits_cli_round_trip(gateway: Gateway) -> None:
    out = gateway.cli("ratelimits", "create", "--name", "cli tag", "--tag", "batch/nightly", "--rpm", "30",
                      "--concurrent", "2")
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout)
    assert rec["scope"] == {"tag": "batch/nightly"} and rec["requests_per_minute"] == 30
    assert rec["max_concurrent"] == 2 and rec["tokens_per_minute"] is None
    listing = gateway.cli("ratelimits", "list")
    assert rec["id"] in listing.stdout and "tag batch/nightly" in listing.stdout
    out = gateway.cli("ratelimits", "update", rec["id"], "--tpm", "900", "--rps", "3", "--unset", "concurrent")
    assert out.returncode == 0, out.stderr
    shown = json.loads(gateway.cli("ratelimits", "show", rec["id"]).stdout)
    assert shown["tokens_per_minute"] == 900 and shown["max_concurrent"] is None and shown["requests_per_second"] == 3
    assert "requests_per_second 3" in gateway.cli("ratelimits", "list").stdout
    out = gateway.cli("ratelimits", "update", rec["id"], "--unset", "rps")
    assert out.returncode == 0 and json.loads(out.stdout)["requests_per_second"] is None, out.stderr
    status, via_api = gateway.get(f"/v1/manage/ratelimit/{rec['id']}")
    assert status == 200 and via_api["tokens_per_minute"] == 900
    bad = gateway.cli("ratelimits", "create", "--name", "none", "--model", "m")
    assert bad.returncode != 0 and "at least one" in bad.stderr
    assert gateway.cli("ratelimits", "delete", rec["id"]).returncode == 0
    assert gateway.cli("ratelimits", "show", rec["id"]).returncode != 0
