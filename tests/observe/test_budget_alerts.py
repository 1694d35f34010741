"""Threshold alerts on budgets (label groups and tag subtrees) through a real gateway: the
webhook receiver gets each threshold of each budget once; a 402 from a budget fires its 100 %."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.gateway import Gateway, InProcessGateway
from tests.observe.receiver import Receiver

BIG = [{"role": "user", "content": "x" * 400}]  # $0.401 on `priced-bytes` (a token a byte)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver("b") as r:
        yield r


@pytest.fixture(scope="module")
def gateway(upstream, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:  # type: ignore[no-untyped-def]
    from tests.conftest import standard_config

    config = standard_config(upstream)
    config["alerts"] = {"evaluate_every_s": 0.05, "webhooks": [{"url": receiver.url, "secret": "b",
                                                                "allow_private": True, "kinds": ["threshold"]}]}
    gw = InProcessGateway(tmp_path_factory.mktemp("gw"), config).start()
    yield gw
    gw.stop()


def _budget(gateway: Gateway, name: str, scope: dict, limit: str) -> dict:
    status, _, rec = gateway.post_json("/v1/manage/budget", {"name": name, "scope": scope, "monthly_limit": limit})
    assert status == 201, rec
    return rec


def test_label_and_tag_budgets_fire_their_thresholds_once(gateway: Gateway, receiver: Receiver) -> None:
    label = _budget(gateway, "growth team", {"label": {"team": "growth-b"}}, "1.00")
    tag = _budget(gateway, "summary widget", {"tag": "feature/widget"}, "2.00")
    key = gateway.create_key("budgeted", team="growth-b")
    with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0) as client:
        for _ in range(2):  # $0.802: the label budget at 80 %, the tag budget at 40 %
            client.chat.completions.create(model="priced-bytes", messages=BIG, max_tokens=1,
                                           extra_body={"request_tags": ["feature/widget/summary"]})
        with pytest.raises(openai.APIStatusError) as err:  # the label budget refuses: no alert (no spend)
            client.chat.completions.create(model="priced-bytes", messages=BIG, max_tokens=1)
        assert err.value.status_code == 402

    def of(events: list[dict], budget: dict) -> list[int]:
        return sorted(e["threshold"] for e in events if e["subject"]["id"] == "budget:" + budget["id"])

    events = receiver.wait_for(lambda ev: len(of(ev, label)) >= 2)
    receiver.wait_for(lambda ev: False, timeout=0.5)
    events = receiver.events()
    assert of(events, label) == [50, 80]  # the refusal at 80.2 % fires no 100 %
    assert of(events, tag) == []  # 40 %: nothing yet
    eighty = next(e for e in events if e["subject"]["id"] == "budget:" + label["id"] and e["threshold"] == 80)
    assert eighty["subject"]["kind"] == "budget"
    _, listed = gateway.get(f"/v1/alerts?subject=budget:{label['id']}&kind=threshold")
    assert len(listed["data"]) == 2
