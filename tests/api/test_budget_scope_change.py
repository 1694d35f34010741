"""A budget whose scope is changed (`PUT /v1/manage/budget/{id}` with another `scope`) counts the
new scope's spend from that moment, as a budget created on it would: not the old scope's."""

from __future__ import annotations

import json
from decimal import Decimal

import openai

from tests.gateway import Gateway

HELLO = [{"role": "user", "content": "hello budget"}]


def _chat(gateway: Gateway, key: str, tag: str) -> openai.types.chat.ChatCompletion | openai.APIStatusError:
    with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=10) as client:
        try:
            return client.chat.completions.create(model="priced", messages=HELLO, max_tokens=10,
                                                  extra_body={"request_tags": [tag]})
        except openai.APIStatusError as err:
            return err


def _spend(gateway: Gateway, tag: str) -> Decimal:
    status, doc = gateway.get(f"/v1/analytics/usage?tag={tag}")
    assert status == 200, doc
    return Decimal(doc["totals"]["cost"])


def _put(gateway: Gateway, budget_id: str, body: dict) -> dict:
    status, _, raw = gateway.request("PUT", f"/v1/manage/budget/{budget_id}", json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    assert status == 200, raw
    return json.loads(raw)


def test_a_budget_moved_to_a_spent_subtree_counts_its_spend(gateway: Gateway) -> None:
    key = gateway.create_key("mover")
    last = None
    for tag, n in (("moved/quiet", 2), ("moved/busy", 20)):  # $0.003 each ($0.001 a token)
        for _ in range(n):
            reply = _chat(gateway, key, tag)
            assert isinstance(reply, openai.types.chat.ChatCompletion), reply
            last = reply.id
    assert last is not None
    gateway.log_record(last)  # every record is in the ledger
    quiet, busy = _spend(gateway, "moved/quiet"), _spend(gateway, "moved/busy")
    assert quiet < busy

    # a request under the budget may cost up to about $0.11: the limit admits one on a quiet
    # subtree, none on the busy one
    status, _, budget = gateway.post_json("/v1/manage/budget", {"name": "moving", "scope": {"tag": "moved/quiet"},
                                                                "monthly_limit": "0.15"})
    assert status == 201, budget
    assert Decimal(budget["monthly_spend"]) == quiet

    moved = _put(gateway, budget["id"], {"scope": {"tag": "moved/busy"}})
    assert Decimal(moved["monthly_spend"]) == busy  # was the quiet subtree's
    refused = _chat(gateway, key, "moved/busy")
    assert isinstance(refused, openai.APIStatusError) and refused.status_code == 402, refused
    assert _spend(gateway, "moved/busy") == busy

    back = _put(gateway, budget["id"], {"scope": {"tag": "moved/quiet"}})
    assert Decimal(back["monthly_spend"]) == quiet  # not the busy subtree's, nor their sum
