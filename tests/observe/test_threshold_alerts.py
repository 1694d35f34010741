"""Threshold alerts through a real gateway: a webhook receiver on loopback gets each threshold of
a key's monthly limit once, a jump over two thresholds fires both, a 402 fires the 100 % alert;
`GET /v1/alerts` and `tallygate alerts list` show them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import openai
import pytest

from tests.gateway import Gateway, InProcessGateway
from tests.observe.receiver import Receiver

SECRET = "whsec-test"
BIG = [{"role": "user", "content": "x" * 400}]  # $0.401 on `priced-bytes` (a token a byte)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver(SECRET) as r:
        yield r


@pytest.fixture(scope="module")
def gateway(upstream, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:  # type: ignore[no-untyped-def]
    from tests.conftest import standard_config

    config = standard_config(upstream)
    config["alerts"] = {"evaluate_every_s": 0.05, "webhooks": [
        {"url": receiver.url, "secret": "env:TEST_WEBHOOK_SECRET", "kinds": ["threshold"],
         "allow_private": True}]}
    gw = InProcessGateway(tmp_path_factory.mktemp("gw"), config, env={"TEST_WEBHOOK_SECRET": SECRET}).start()
    yield gw
    gw.stop()


def _thresholds(events: list[dict], key_id: str) -> list[int]:
    return sorted(e["threshold"] for e in events if e["kind"] == "threshold" and e["subject"]["id"] == key_id)


def test_each_threshold_fires_once_a_jump_fires_both_and_a_refusal_fires_none(
        gateway: Gateway, receiver: Receiver) -> None:
    status, _, rec = gateway.post_json("/v1/manage/apikey", {"name": "growth", "monthly_limit": "1.00"})
    assert status == 201, rec
    with openai.OpenAI(base_url=gateway.base_url, api_key=rec["key"], max_retries=0) as client:
        client.chat.completions.create(model="priced-bytes", messages=BIG, max_tokens=1)  # 40 %: nothing yet
        receiver.wait_for(lambda ev: False, timeout=0.3)
        assert _thresholds(receiver.events(), rec["id"]) == []
        client.chat.completions.create(model="priced-bytes", messages=BIG, max_tokens=1)  # 80.2 %: 50 and 80
        events = receiver.wait_for(lambda ev: len(_thresholds(ev, rec["id"])) >= 2)
        assert _thresholds(events, rec["id"]) == [50, 80]
        for _ in range(2):  # the worst case no longer fits: refused, and nothing was spent
            with pytest.raises(openai.APIStatusError) as err:
                client.chat.completions.create(model="priced-bytes", messages=BIG, max_tokens=1)
            assert err.value.status_code == 402
        receiver.wait_for(lambda ev: False, timeout=0.5)
        assert _thresholds(receiver.events(), rec["id"]) == [50, 80]  # no 100 % at 80.2 % spend
        status, _, _ = gateway.request("PUT", f"/v1/manage/apikey/{rec['id']}", b'{"monthly_limit": "0.80"}',
                                       headers={"Content-Type": "application/json"})
        assert status == 200  # now the recorded spend is past the limit: the next look fires 100 %
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="priced-bytes", messages=BIG, max_tokens=1)
    events = receiver.wait_for(lambda ev: len(_thresholds(ev, rec["id"])) >= 3)
    receiver.wait_for(lambda ev: False, timeout=0.3)  # nothing more arrives
    events = [e for e in receiver.events() if e["subject"]["id"] == rec["id"]]
    assert _thresholds(events, rec["id"]) == [50, 80, 100]
    by = {e["threshold"]: e for e in events}
    assert by[50]["spend"] == by[80]["spend"] and Decimal(by[80]["spend"]) >= Decimal("0.80")
    assert by[100]["refused"] is True and Decimal(by[100]["spend"]) >= Decimal("0.80")
    assert by[50]["limit"] == "1" and by[50]["subject"] == {"kind": "key", "id": rec["id"], "name": "growth"}
    assert len({e["id"] for e in events}) == 3 and all(e["created_at"].endswith("Z") for e in events)


def test_alerts_are_listed_with_filters_and_cursor_by_api_and_cli(gateway: Gateway) -> None:
    _, listed = gateway.get("/v1/alerts?kind=threshold&limit=2")
    assert [e["kind"] for e in listed["data"]] == ["threshold", "threshold"] and listed["has_more"]
    _, rest = gateway.get(f"/v1/alerts?kind=threshold&limit=2&cursor={listed['next_cursor']}")
    ids = [e["id"] for e in listed["data"] + rest["data"]]
    assert len(ids) == len(set(ids)) == 3
    subject = listed["data"][0]["subject"]["id"]
    _, by_subject = gateway.get(f"/v1/alerts?subject={subject}&kind=threshold")
    assert len(by_subject["data"]) == 3
    _, other = gateway.get("/v1/alerts?subject=no-such-key")
    assert other["data"] == []
    _, none = gateway.get("/v1/alerts?kind=spend_spike")
    assert none["data"] == []
    _, future = gateway.get("/v1/alerts?from=2999-01-01")
    assert future["data"] == []
    status, bad = gateway.get("/v1/alerts?kind=nonsense")
    assert status == 400 and bad["error"]["param"] == "kind"
    out = gateway.cli("alerts", "list", "--json")
    assert out.returncode == 0, out.stderr
    thresholds = [json.loads(line) for line in out.stdout.splitlines()]
    assert sorted(e["threshold"] for e in thresholds if e["kind"] == "threshold") == [50, 80, 100]
    table = gateway.cli("alerts", "list", "--kind", "threshold")
    assert "growth" in table.stdout and "100%" in table.stdout
