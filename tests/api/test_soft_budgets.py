"""Soft budgets (`"enforce": false`) through a real gateway: they never refuse, yet count spend
and fire threshold alerts like a hard one; a bound key cannot turn a binding budget soft."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

from tests.conftest import standard_config
from tests.gateway import ADMIN_KEY, Gateway, InProcessGateway
from tests.observe.receiver import Receiver

SECRET = "whsec-soft"
BIG = [{"role": "user", "content": "x" * 1600}]  # about $0.40 a request on `priced`


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver(SECRET) as r:
        yield r


@pytest.fixture(scope="module")
def gateway(upstream, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:  # type: ignore[no-untyped-def]
    config = standard_config(upstream)
    config["alerts"] = {"evaluate_every_s": 0.05, "webhooks": [
        {"url": receiver.url, "secret": "env:TEST_WEBHOOK_SECRET", "kinds": ["threshold"], "allow_private": True}]}
    gw = InProcessGateway(tmp_path_factory.mktemp("soft"), config, env={"TEST_WEBHOOK_SECRET": SECRET}).start()
    yield gw
    gw.stop()


def _key(gateway: Gateway, name: str, labels: dict, manage: str = "none") -> dict:
    status, _, rec = gateway.post_json("/v1/manage/apikey", {
        "name": name, "labels": labels, "permissions": {"completions": "write", "manage": manage}})
    assert status == 201, rec
    return rec


def _budget(gateway: Gateway, name: str, team: str, limit: str, **extra: object) -> dict:
    status, _, rec = gateway.post_json("/v1/manage/budget", {"name": name, "scope": {"label": {"team": team}},
                                                             "monthly_limit": limit, **extra})
    assert status == 201, rec
    return rec


def _chat(gateway: Gateway, key: str) -> int:
    with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=10) as client:
        try:
            client.chat.completions.create(model="priced", messages=BIG, max_tokens=1)
            return 200
        except openai.APIStatusError as err:
            return err.status_code


def test_a_soft_budget_never_refuses_but_counts_and_alerts(gateway: Gateway, receiver: Receiver) -> None:
    soft = _budget(gateway, "soft team", "soft", "0.50", enforce=False)
    hard = _budget(gateway, "hard team", "hard", "0.50")
    assert soft["enforce"] is False and hard["enforce"] is True
    soft_key, hard_key = _key(gateway, "soft-k", {"team": "soft"}), _key(gateway, "hard-k", {"team": "hard"})
    assert [_chat(gateway, soft_key["key"]) for _ in range(3)] == [200, 200, 200]  # past $0.50, served
    assert _chat(gateway, hard_key["key"]) == 402  # the same request's worst case does not fit a hard one
    status, shown = gateway.get(f"/v1/manage/budget/{soft['id']}")
    assert status == 200 and float(shown["monthly_spend"]) > 1.0, shown
    events = receiver.wait_for(lambda ev: sum(1 for e in ev if e["subject"].get("id") == "budget:" + soft["id"]
                                              or e["subject"].get("id") == soft["id"]) >= 3)
    fired = sorted(e["threshold"] for e in events if soft["id"] in json.dumps(e["subject"]))
    assert fired == [50, 80, 100], events


def test_a_bound_key_cannot_make_its_budget_soft(gateway: Gateway) -> None:
    rec = _budget(gateway, "bound team", "bound-soft", "100")
    boss = _key(gateway, "bound-boss", {"team": "bound-soft"}, manage="write")
    path = f"/v1/manage/budget/{rec['id']}"
    body = json.dumps({"enforce": False}).encode()
    status, _, raw = gateway.request("PUT", path, body, boss["key"], {"Content-Type": "application/json"})
    assert status == 403 and json.loads(raw)["error"]["param"] == "enforce", raw
    status, _, raw = gateway.request("PUT", path, body, ADMIN_KEY, {"Content-Type": "application/json"})
    assert status == 200 and json.loads(raw)["enforce"] is False
    out = gateway.cli("budgets", "update", rec["id"], "--soft")  # as the admin, through the CLI
    assert out.returncode == 0 and json.loads(out.stdout)["enforce"] is False, out.stderr
    status, _, raw = gateway.request("PUT", path, json.dumps({"enforce": True}).encode(), ADMIN_KEY,
                                     {"Content-Type": "application/json"})
    assert status == 200
    out = gateway.cli("budgets", "create", "--name", "cli soft", "--tag", "soft/cli", "--limit", "5", "--soft")
    assert out.returncode == 0 and json.loads(out.stdout)["enforce"] is False, out.stderr
    back = json.dumps({"enforce": True}).encode()  # tightening is always allowed
    status, _, raw = gateway.request("PUT", path, back, boss["key"], {"Content-Type": "application/json"})
    assert status == 200 and json.loads(raw)["enforce"] is True


@pytest.mark.parametrize("value", ["no", "false", 0, 1, "yes"])
def test_enforce_takes_a_json_boolean_only(gateway: Gateway, value: object) -> None:
    # lax parsing made {"enforce": "no"} a soft budget that never refuses
    body = {"name": f"strict {value!r}", "scope": {"label": {"team": "strict"}}, "monthly_limit": "1",
            "enforce": value}
    status, _, raw = gateway.request("POST", "/v1/manage/budget", json.dumps(body).encode(), ADMIN_KEY,
                                     headers={"content-type": "application/json"})
    assert status == 400 and json.loads(raw)["error"]["param"] == "enforce", raw
