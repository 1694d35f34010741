"""`/v1/analytics/usage` and `/v1/analytics/tags/tree` end to end: traffic from the openai SDK
through a real gateway, then the same questions answered from the roll-ups and from the raw
ledger. The failure this guards against: a tag view whose rows, each counting a multi-tag
request once per tag, are summed into a total larger than the spend."""

from __future__ import annotations

import json
import math
import time
from decimal import Decimal

import openai
import pytest

from tallygate.core.histogram import MAX_RELATIVE_ERROR
from tests.gateway import Gateway

HELLO = [{"role": "user", "content": "hello analytics"}]


def send(gateway: Gateway, key: str, n: int, tags: list[str] | None = None, model: str = "gpt-4o-mini",
         stream: bool = False) -> list[str]:
    ids = []
    with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0) as client:
        for _ in range(n):
            extra = {"request_tags": tags} if tags else None
            try:
                if stream:
                    chunks = list(client.chat.completions.create(model=model, messages=HELLO, stream=True,
                                                                 extra_body=extra))
                    ids.append(chunks[0].id)
                else:
                    ids.append(client.chat.completions.create(model=model, messages=HELLO, extra_body=extra).id)
            except openai.APIStatusError as exc:
                ids.append(exc.response.headers["x-request-id"])
    gateway.log_record(ids[-1])  # the batched writer has flushed them
    return ids


def usage(gateway: Gateway, query: str) -> dict:
    status, body = gateway.get(f"/v1/analytics/usage?{query}")
    assert status == 200, body
    return body


def rows(body: dict, dim: str) -> dict:
    return {r["group"][dim]: r for r in body["data"]}


def cost_of(gateway: Gateway, ids: list[str]) -> Decimal:
    return sum((Decimal(gateway.log_record(i)["cost"]) for i in ids), Decimal(0))


def test_multi_tag_requests_count_once_in_totals_and_the_rows_say_they_overlap(gateway: Gateway) -> None:
    key = gateway.create_key("overlap", team="ov")
    start = int(time.time() * 1000)
    two = send(gateway, key, 3, ["ov/US/CA/SF", "ov/US/NYC"])
    eu = send(gateway, key, 2, ["ov/EU/FR"])
    top = send(gateway, key, 1, ["ov"])
    end = int(time.time() * 1000) + 1
    spend = cost_of(gateway, two + eu + top)

    by_tag = usage(gateway, "group_by=tag&tag=ov")
    assert by_tag["overlapping"] is True and "note" in by_tag
    got = {k: r["requests"] for k, r in rows(by_tag, "tag").items()}
    assert got == {"ov/US/CA/SF": 3, "ov/US/NYC": 3, "ov/EU/FR": 2, "ov": 1}
    assert by_tag["totals"]["requests"] == 6 and Decimal(by_tag["totals"]["cost"]) == spend
    assert sum(Decimal(r["cost"]) for r in by_tag["data"]) > spend  # what summing the rows would claim

    level2 = usage(gateway, "group_by=tag_level.2&tag=ov")
    assert {k: r["requests"] for k, r in rows(level2, "tag_level.2").items()} == {"ov/US": 3, "ov/EU": 2, "ov": 1}
    assert Decimal(rows(level2, "tag_level.2")["ov/US"]["cost"]) == cost_of(gateway, two)
    level3 = usage(gateway, "group_by=tag_level.3&tag=ov")
    assert {k: r["requests"] for k, r in rows(level3, "tag_level.3").items()} == {
        "ov/US/CA": 3, "ov/US/NYC": 3, "ov/EU/FR": 2, "ov": 1}
    assert usage(gateway, "tag=ov/US")["totals"]["requests"] == 3  # once, though two tags are under it

    # The same questions over an unaligned range are answered from the raw ledger: same figures.
    raw = usage(gateway, f"group_by=tag&tag=ov&from={start}&to={end}")
    assert raw["plan"]["segments"][0]["level"] == "raw" and raw["plan"]["percentiles"] == "exact"
    assert by_tag["plan"]["segments"][0]["level"] == "month"
    for name, row in rows(raw, "tag").items():
        assert (row["requests"], row["cost"]) == (rows(by_tag, "tag")[name]["requests"],
                                                  rows(by_tag, "tag")[name]["cost"])
    assert raw["totals"]["cost"] == by_tag["totals"]["cost"]


def test_tag_tree_has_every_level_and_counts_each_request_once_per_node(gateway: Gateway) -> None:
    key = gateway.create_key("tree", team="tr")
    send(gateway, key, 2, ["tr/a/x", "tr/a/y"])
    send(gateway, key, 1, ["tr/b"])
    send(gateway, key, 1, ["tr"])
    status, tree = gateway.get("/v1/analytics/tags/tree?root=tr")
    assert status == 200, tree
    (node,) = tree["data"]
    assert node["tag"] == "tr" and node["requests"] == 4 and tree["totals"]["requests"] == 4
    kids = {c["tag"]: c for c in node["children"]}
    assert kids["tr/a"]["requests"] == 2  # once, with two tags under it
    assert {c["tag"]: c["requests"] for c in kids["tr/a"]["children"]} == {"tr/a/x": 2, "tr/a/y": 2}
    assert kids["tr/b"]["requests"] == 1 and kids["tr/b"]["children"] == []
    status, shallow = gateway.get("/v1/analytics/tags/tree?root=tr&depth=1")
    assert {c["tag"]: c["children"] for c in shallow["data"][0]["children"]} == {"tr/a": [], "tr/b": []}
    status, roots = gateway.get("/v1/analytics/tags/tree?depth=1")
    assert "tr" in {n["tag"] for n in roots["data"]} and all(n["depth"] == 1 for n in roots["data"])


def test_group_by_labels_as_recorded_or_as_the_keys_are_labelled_now(gateway: Gateway) -> None:
    a = gateway.create_key("lab-a", suite="lab", team="alpha", env="prod")
    b = gateway.create_key("lab-b", suite="lab", team="beta", env="prod")
    c = gateway.create_key("lab-c", suite="lab", team="alpha", env="dev")
    send(gateway, a, 2)
    send(gateway, b, 3, model="local-llama")
    send(gateway, b, 1, model="fail-500")
    send(gateway, c, 1)

    body = usage(gateway, "group_by=label.team&label.suite=lab")
    assert body["overlapping"] is False
    teams = rows(body, "label.team")
    assert {k: (r["requests"], r["errors"]) for k, r in teams.items()} == {"alpha": (3, 0), "beta": (4, 1)}
    assert teams["beta"]["error_rate"] == 0.25
    assert body["totals"]["requests"] == 7
    assert sum(Decimal(r["cost"]) for r in body["data"]) == Decimal(body["totals"]["cost"])  # no overlap

    both = usage(gateway, "group_by=label.team,label.env,model&label.suite=lab")
    assert {(r["group"]["label.team"], r["group"]["label.env"], r["group"]["model"]): r["requests"]
            for r in both["data"]} == {("alpha", "prod", "gpt-4o-mini"): 2, ("alpha", "dev", "gpt-4o-mini"): 1,
                                       ("beta", "prod", "local-llama"): 3, ("beta", "prod", "fail-500"): 1}
    key_b = gateway.log_record(send(gateway, b, 1)[0])["key"]["id"]
    by_key = usage(gateway, f"group_by=key,status&key={key_b}")
    assert {r["group"]["status"]: r["requests"] for r in by_key["data"]} == {200: 4, 502: 1}
    assert {r["key_name"] for r in by_key["data"]} == {"lab-b"}
    assert usage(gateway, "model=local-llama&label.suite=lab")["totals"]["requests"] == 3

    # Relabel key b: history stays with "beta" as recorded, moves to "gamma" with labels=current.
    status, _, _ = gateway.request("PUT", f"/v1/manage/apikey/{key_b}",
                                   json.dumps({"labels": {"suite": "lab", "team": "gamma"}}).encode(),
                                   headers={"Content-Type": "application/json"})
    assert status == 200
    recorded = rows(usage(gateway, "group_by=label.team&label.suite=lab"), "label.team")
    current = rows(usage(gateway, "group_by=label.team&label.suite=lab&labels=current"), "label.team")
    assert set(recorded) == {"alpha", "beta"} and recorded["beta"]["requests"] == 5
    assert set(current) == {"alpha", "gamma"} and current["gamma"]["requests"] == 5
    assert usage(gateway, "label.team=beta&labels=current")["totals"]["requests"] == 0


def test_percentiles_are_exact_from_raw_records_and_close_from_rollups(gateway: Gateway) -> None:
    key = gateway.create_key("pct", team="pct")
    start = int(time.time() * 1000)
    ids = send(gateway, key, 4, ["pct"], model="priced-slow", stream=True)  # the upstream waits 400 ms
    ids += send(gateway, key, 2, ["pct"], model="local-llama")
    end = int(time.time() * 1000) + 1
    records = [gateway.log_record(i) for i in ids]
    lat = sorted(r["latency_ms"] for r in records)
    ttft = sorted(r["ttft_ms"] for r in records if r["ttft_ms"] is not None)
    raw = usage(gateway, f"tag=pct&from={start}&to={end}")["totals"]
    assert raw["latency_ms"] == {"p50": lat[2], "p95": lat[5], "p99": lat[5]}  # nearest rank of 6
    assert raw["ttft_ms"]["p50"] == ttft[math.ceil(len(ttft) / 2) - 1]
    rolled = usage(gateway, "tag=pct")
    assert rolled["plan"]["percentiles"] == "histogram"
    for q, exact in (("p50", lat[2]), ("p95", lat[5])):
        assert abs(rolled["totals"]["latency_ms"][q] - exact) <= exact * MAX_RELATIVE_ERROR
    t50 = ttft[math.ceil(len(ttft) / 2) - 1]
    assert abs(rolled["totals"]["ttft_ms"]["p50"] - t50) <= t50 * MAX_RELATIVE_ERROR


def test_tag_grouping_has_an_untagged_row_and_time_buckets(gateway: Gateway) -> None:
    key = gateway.create_key("untagged", team="un")
    send(gateway, key, 2)  # no tags
    ledger = gateway.ledger_rows()
    untagged = sum(1 for r in ledger if r["tags"] == "[]")
    body = usage(gateway, "group_by=tag_level.1")
    assert rows(body, "tag_level.1")[None]["requests"] == untagged
    assert body["totals"]["requests"] == len(ledger)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    per_day = usage(gateway, "group_by=time.day,tag_level.1")
    assert rows(per_day, "tag_level.1")[None]["group"]["time.day"] == day
    hourly = usage(gateway, "group_by=time.hour")
    assert sum(r["requests"] for r in hourly["data"]) == len(ledger)
    assert all(r["group"]["time.hour"].endswith(":00:00Z") for r in hourly["data"])


@pytest.mark.parametrize("query", ["group_by=label.team", "group_by=model,provider", "group_by=tag",
                                   "group_by=time.month,served_model"])
def test_rows_and_totals_agree_with_the_ledger(gateway: Gateway, query: str) -> None:
    ledger = gateway.ledger_rows()
    body = usage(gateway, query)
    assert body["totals"]["requests"] == len(ledger)
    total = sum(r["cost_pico"] for r in ledger)
    assert Decimal(body["totals"]["cost"]) == Decimal(total) / 10**12
    if not body["overlapping"]:
        assert sum(r["requests"] for r in body["data"]) == len(ledger)
