"""`tallygate serve --workers 2` (budgets in Redis): `/metrics` counts every worker's requests
whichever worker answers the scrape, and each threshold alert is delivered once."""

from __future__ import annotations

import time
from pathlib import Path

import openai

from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway
from tests.observe.receiver import Receiver
from tests.observe.test_metrics import _value, scrape
from tests.redis import RedisServer

BIG = [{"role": "user", "content": "x" * 400}]  # $0.401 on `priced-bytes` (a token a byte)


def test_two_workers_sum_their_metrics_and_fire_each_alert_once(upstream: FakeUpstream, rds: RedisServer,
                                                                 tmp_path: Path) -> None:
    from tests.conftest import standard_config

    with Receiver("w") as receiver:
        config = standard_config(upstream)
        config["alerts"] = {"evaluate_every_s": 0.05, "webhooks": [{"url": receiver.url, "secret": "w",
                                                                    "allow_private": True, "kinds": ["threshold"]}]}
        gw = Gateway(tmp_path, config, args=("--workers", "2", "--redis", rds.url)).start()
        try:
            status, _, rec = gw.post_json("/v1/manage/apikey", {"name": "w", "monthly_limit": "1.00"})
            assert status == 201
            n = 0
            with openai.OpenAI(base_url=gw.base_url, api_key=rec["key"], max_retries=0) as client:
                for _ in range(2):  # $0.802 of $1.00 in Redis, whichever worker serves
                    client.chat.completions.create(model="priced-bytes", messages=BIG, max_tokens=1)
                    n += 1
                for _ in range(30):
                    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
                    n += 1
            deadline = time.monotonic() + 5
            while True:
                totals = {_value(scrape(gw)["tallygate_requests"], "tallygate_requests_total") for _ in range(6)}
                if totals == {float(n)} or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert totals == {float(n)}  # six scrapes, whichever worker answered: every request once
            events = receiver.wait_for(lambda ev: len(ev) >= 2)
            receiver.wait_for(lambda ev: False, timeout=0.5)
        finally:
            gw.stop()
        thresholds = sorted(e["threshold"] for e in receiver.events() if e["subject"]["id"] == rec["id"])
    assert thresholds == [50, 80], events
