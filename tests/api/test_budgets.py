"""Budgets on label groups, tag subtrees and keys, in one gateway process (SQLite): the API and
CLI, one reservation across every scope, spend from the ledger, and no escalation."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal

import openai
import pytest

from tests.gateway import ADMIN_KEY, Gateway

HELLO = [{"role": "user", "content": "hello budget"}]


def _key(gateway: Gateway, name: str, labels: dict | None = None, manage: str = "none",
         limit: str | None = None, key: str = ADMIN_KEY) -> dict:
    body: dict = {"name": name, "labels": labels or {}, "permissions": {"completions": "write", "manage": manage}}
    if limit is not None:
        body["monthly_limit"] = limit
    status, _, rec = gateway.post_json("/v1/manage/apikey", body, key=key)
    assert status == 201, rec
    return rec


def _budget(gateway: Gateway, name: str, scope: dict, limit: str, key: str = ADMIN_KEY) -> dict:
    status, _, rec = gateway.post_json("/v1/manage/budget", {"name": name, "scope": scope, "monthly_limit": limit},
                                       key=key)
    assert status == 201, rec
    return rec


def _put(gateway: Gateway, path: str, body: dict, key: str = ADMIN_KEY) -> tuple[int, dict]:
    status, _, raw = gateway.request("PUT", path, json.dumps(body).encode(), key, {"Content-Type": "application/json"})
    return status, json.loads(raw)


def _chat(key: str, gateway: Gateway, tags: list[str] | None = None, model: str = "priced") -> object:
    with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=10) as client:
        try:
            return client.chat.completions.create(model=model, messages=HELLO, max_tokens=10,
                                                  extra_body={"request_tags": tags or []})
        except openai.APIStatusError as err:
            return err


def _until(predicate, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def _get_budget(gateway: Gateway, budget_id: str) -> dict:
    status, rec = gateway.get(f"/v1/manage/budget/{budget_id}")
    assert status == 200, rec
    return rec


def test_budget_crud_through_the_api_with_exact_money(gateway: Gateway) -> None:
    rec = _budget(gateway, "growth", {"label": {"team": "crud-growth"}}, "2000.000000000001")
    assert rec["monthly_limit"] == "2000.000000000001" and rec["monthly_spend"] == "0"
    assert rec["scope"] == {"label": {"team": "crud-growth"}} and rec["created_by"]["name"] == "admin"
    status, listing = gateway.get("/v1/manage/budget")
    assert status == 200 and rec["id"] in [b["id"] for b in listing["data"]]
    status, changed = _put(gateway, f"/v1/manage/budget/{rec['id']}", {"monthly_limit": "300", "name": "g2"})
    assert status == 200 and changed["monthly_limit"] == "300" and changed["name"] == "g2"
    status, _, gone = gateway.request("DELETE", f"/v1/manage/budget/{rec['id']}")
    assert status == 200
    status, body = gateway.get(f"/v1/manage/budget/{rec['id']}")
    assert status == 404 and body["error"]["param"] == "id"


@pytest.mark.parametrize(("scope", "param"), [
    ({"label": {"team": "x"}, "tag": "a"}, "scope"),
    ({}, "scope"),
    ({"label": {}}, "scope.label"),
    ({"tag": "a//b"}, "scope.tag"),
    ({"key": "no-such-key"}, "scope.key"),
])
def test_bad_budget_scopes_get_a_400_naming_the_field(gateway: Gateway, scope: dict, param: str) -> None:
    status, _, body = gateway.post_json("/v1/manage/budget", {"name": "bad", "scope": scope, "monthly_limit": "1"})
    assert status == 400, body
    assert body["error"]["param"] == param


def test_budget_money_is_checked_like_key_limits(gateway: Gateway) -> None:
    for limit in ("-1", "abc", "0.0000000000001", "9000001"):
        status, _, body = gateway.post_json("/v1/manage/budget", {"name": "m", "scope": {"tag": "m"},
                                                                  "monthly_limit": limit})
        assert status == 400 and body["error"]["param"] == "monthly_limit", (limit, body)


def test_label_budget_spans_keys_and_counts_history(gateway: Gateway) -> None:
    a, b = _key(gateway, "a", {"team": "span"}), _key(gateway, "b", {"team": "span", "env": "prod"})
    other = _key(gateway, "c", {"team": "elsewhere"})
    first = _chat(a["key"], gateway)
    assert not isinstance(first, openai.APIStatusError)
    spent_before = Decimal(str(first.usage.cost))  # type: ignore[attr-defined]
    time.sleep(0.3)  # the ledger writer flushes every 50 ms
    budget = _budget(gateway, "span team", {"label": {"team": "span"}}, "0.03")
    assert Decimal(budget["monthly_spend"]) == spent_before  # history from before the budget
    results = [_chat(k["key"], gateway) for k in (a, b) * 6]
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    assert refused and all(r.status_code == 402 for r in refused)
    assert "a budget on this request's tags or this key's labels" in refused[0].body["message"]
    assert not isinstance(_chat(other["key"], gateway), openai.APIStatusError)  # not in the group
    final = _until(lambda: (r := _get_budget(gateway, budget["id"]))["monthly_reserved"] == "0" and r)
    assert Decimal(final["monthly_spend"]) <= Decimal("0.03")


def test_tag_budget_counts_a_request_once_however_many_tags_are_under_it(gateway: Gateway) -> None:
    key = _key(gateway, "tagger")
    budget = _budget(gateway, "acme", {"tag": "customer/acme"}, "100")
    ok = _chat(key["key"], gateway, tags=["customer/acme/eu", "customer/acme/us", "customer/acmex"])
    assert not isinstance(ok, openai.APIStatusError)
    cost = Decimal(str(ok.usage.cost))  # type: ignore[attr-defined]
    rec = _until(lambda: (r := _get_budget(gateway, budget["id"]))["monthly_spend"] != "0" and r)
    assert Decimal(rec["monthly_spend"]) == cost
    _chat(key["key"], gateway, tags=["customer/acmex"])  # not under customer/acme
    _chat(key["key"], gateway)
    assert Decimal(_get_budget(gateway, budget["id"])["monthly_spend"]) == cost
    status, _ = _put(gateway, f"/v1/manage/budget/{budget['id']}", {"monthly_limit": "0.001"})
    refused = _chat(key["key"], gateway, tags=["customer/acme"])
    assert isinstance(refused, openai.APIStatusError) and refused.status_code == 402
    assert "customer/acme" not in refused.body["message"] and "acme" not in refused.body["message"]
    assert not isinstance(_chat(key["key"], gateway, tags=["customer/other"]), openai.APIStatusError)


def test_one_reservation_holds_every_scope_or_none(gateway: Gateway, upstream) -> None:  # type: ignore[no-untyped-def]
    """Many concurrent requests under a key limit, a label budget and a tag budget at once: the
    tightest one refuses, nothing is left reserved, no scope passes its limit."""
    key = _key(gateway, "triple", {"team": "triple"}, limit="10")
    label = _budget(gateway, "triple team", {"label": {"team": "triple"}}, "0.40")
    tag = _budget(gateway, "triple tag", {"tag": "proj/triple"}, "5")

    async def fire() -> list[object]:
        async with openai.AsyncOpenAI(base_url=gateway.base_url, api_key=key["key"], max_retries=0,
                                      timeout=30) as client:
            calls = [client.chat.completions.create(model="priced", messages=HELLO, max_tokens=10,
                                                    extra_body={"request_tags": ["proj/triple/x"]})
                     for _ in range(100)]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(fire())
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    assert refused and all(r.status_code == 402 and "a budget on this request" in r.body["message"] for r in refused)
    for b in (label, tag):
        rec = _until(lambda b=b: (r := _get_budget(gateway, b["id"]))["monthly_reserved"] == "0" and r)
        assert rec and Decimal(rec["monthly_spend"]) <= Decimal("0.40")
    status, me = gateway.get("/v1/key", key=key["key"])
    assert me["monthly_reserved"] == "0"


def test_a_bound_key_cannot_loosen_or_delete_its_budget(gateway: Gateway) -> None:
    manager = _key(gateway, "bound-manager", {"team": "bound"}, manage="write")
    budget = _budget(gateway, "bound team", {"label": {"team": "bound"}}, "50")
    path = f"/v1/manage/budget/{budget['id']}"
    assert _put(gateway, path, {"monthly_limit": "51"}, key=manager["key"])[0] == 403
    assert _put(gateway, path, {"scope": {"label": {"team": "other"}}}, key=manager["key"])[0] == 403
    assert gateway.request("DELETE", path, key=manager["key"])[0] == 403
    status, lowered = _put(gateway, path, {"monthly_limit": "40"}, key=manager["key"])
    assert status == 200 and lowered["monthly_limit"] == "40"
    # Leaving the budget by changing labels: neither its own nor those of a key it manages.
    assert _put(gateway, f"/v1/manage/apikey/{manager['id']}", {"labels": {"team": "free"}},
                key=manager["key"])[0] == 403
    child = _key(gateway, "child", key=manager["key"])
    assert child["labels"] == {"team": "bound"}  # keys it creates stay in the budget
    status, body = _put(gateway, f"/v1/manage/apikey/{child['id']}", {"labels": {}}, key=manager["key"])
    assert status == 403 and "bound team" in body["error"]["message"]
    status, _, body = gateway.post_json("/v1/manage/apikey", {"name": "escapee", "labels": {"team": "x"}},
                                        key=manager["key"])
    assert status == 403 and body["error"]["param"] == "labels.team"
    reader = _key(gateway, "reader", manage="read")
    assert gateway.post_json("/v1/manage/budget", {"name": "r", "scope": {"tag": "r"}, "monthly_limit": "1"},
                             key=reader["key"])[0] == 403
    # An unbound manager (no limit, no key or label budget) may loosen it.
    free = _key(gateway, "free-manager", manage="write")
    assert _put(gateway, path, {"monthly_limit": "60"}, key=free["key"])[0] == 200


def test_budgets_cli_changes_apply_to_a_running_gateway_within_a_second(gateway: Gateway) -> None:
    key = _key(gateway, "cli-bound", {"team": "cli"})
    out = gateway.cli("budgets", "create", "--name", "cli team", "--label", "team=cli", "--limit", "0.000001")
    assert out.returncode == 0, out.stderr
    budget = json.loads(out.stdout)
    assert budget["scope"] == {"label": {"team": "cli"}} and budget["monthly_limit"] == "0.000001"
    t0 = time.monotonic()
    refused = _until(lambda: isinstance(r := _chat(key["key"], gateway), openai.APIStatusError) and r, 5)
    assert refused and refused.status_code == 402 and time.monotonic() - t0 < 2.5
    listing = gateway.cli("budgets", "list")
    assert budget["id"] in listing.stdout and "label team=cli" in listing.stdout
    assert gateway.cli("budgets", "update", budget["id"], "--limit", "100").returncode == 0
    assert _until(lambda: not isinstance(_chat(key["key"], gateway), openai.APIStatusError), 5)
    shown = json.loads(gateway.cli("budgets", "show", budget["id"]).stdout)
    assert shown["monthly_limit"] == "100"
    assert gateway.cli("budgets", "delete", budget["id"]).returncode == 0
    assert gateway.cli("budgets", "show", budget["id"]).returncode != 0


def test_health_and_readiness_need_no_key_and_say_nothing_secret(gateway: Gateway) -> None:
    status, body = gateway.get("/healthz", key=None)
    assert status == 200 and body == {"status": "ok"}
    status, body = gateway.get("/readyz", key=None)
    assert status == 200 and body["status"] == "ready" and body["passed"] == ["database", "ledger"]
    assert "sqlite" not in json.dumps(body) and ADMIN_KEY not in json.dumps(body)


@pytest.mark.parametrize("binding", ["key budget", "label budget"])
def test_a_key_bound_only_by_a_budget_cannot_create_or_loosen_an_unbound_key(gateway: Gateway,
                                                                            binding: str) -> None:
    team = f"esc-{binding.split()[0]}"
    manager = _key(gateway, f"{team}-manager", {"team": team}, manage="write")  # no limit of its own
    scope = {"key": manager["id"]} if binding == "key budget" else {"label": {"team": team}}
    _budget(gateway, f"{team} cap", scope, "1")
    child = _key(gateway, f"{team}-child", key=manager["key"])
    assert child["monthly_limit"] == "1"  # bound at least as tightly as its creator
    for limit in (None, "2"):
        status, _, body = gateway.post_json("/v1/manage/apikey", {"name": "escapee", "monthly_limit": limit},
                                            key=manager["key"])
        assert status == 403 and body["error"]["param"] == "monthly_limit", body
        status, body = _put(gateway, f"/v1/manage/apikey/{child['id']}", {"monthly_limit": limit},
                            key=manager["key"])
        assert status == 403 and body["error"]["param"] == "monthly_limit", body
    unbound = _key(gateway, f"{team}-unbound")
    assert _put(gateway, f"/v1/manage/apikey/{unbound['id']}", {"name": "mine now"}, key=manager["key"])[0] == 403
    status, lowered = _put(gateway, f"/v1/manage/apikey/{child['id']}", {"monthly_limit": "0.5"}, key=manager["key"])
    assert status == 200 and lowered["monthly_limit"] == "0.5"


def test_a_402_discloses_another_teams_budget_only_to_a_key_that_may_read_budgets(gateway: Gateway) -> None:
    budget = _budget(gateway, "secret launch", {"tag": "proj/secret"}, "0.001")
    outsider = _key(gateway, "outsider", limit="7")
    refused = _chat(outsider["key"], gateway, tags=["proj/secret"])
    assert isinstance(refused, openai.APIStatusError) and refused.status_code == 402
    message = refused.body["message"]
    assert "a budget on this request's tags or this key's labels" in message
    for secret in ("secret launch", "proj/secret", "$0.001", budget["id"]):
        assert secret not in message, message
    reader = _key(gateway, "budget reader", manage="read")
    refused = _chat(reader["key"], gateway, tags=["proj/secret"])
    assert isinstance(refused, openai.APIStatusError)
    assert "secret launch" in refused.body["message"] and budget["id"] in refused.body["message"]
    own = _key(gateway, "own limit", limit="0.000001")
    refused = _chat(own["key"], gateway)  # its own limit: told in full
    assert isinstance(refused, openai.APIStatusError) and "API key 'own limit'" in refused.body["message"]
