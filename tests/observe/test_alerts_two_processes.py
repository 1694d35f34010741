"""Two gateway processes over one database (and one Redis, as two processes on one ledger must
share their budgets): each sees the key pass 50 % and 80 % of its limit and computes the same
alerts, and the receiver gets each exactly once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import openai

from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway
from tests.observe.receiver import Receiver
from tests.redis import redis_server

BIG = [{"role": "user", "content": "x" * 400}]  # $0.401 on `priced-bytes` (a token a byte)


def test_threshold_alerts_fire_once_across_two_processes(upstream: FakeUpstream, tmp_path: Path) -> None:
    from tests.conftest import standard_config

    with Receiver("two") as receiver, redis_server() as rds:
        config = standard_config(upstream)
        config["alerts"] = {"evaluate_every_s": 0.05, "webhooks": [{"url": receiver.url, "secret": "two",
                                                                     "allow_private": True}]}
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
        gws = [Gateway(tmp_path / name, config, args=("--redis", rds.url)) for name in ("a", "b")]
        for gw in gws:  # one database for both
            gw.db_path, gw.db_url = gws[0].workdir / "ledger.db", f"sqlite:///{gws[0].workdir / 'ledger.db'}"
        out = gws[0].cli("keys", "create", "--name", "shared", "--limit", "1.00")
        assert out.returncode == 0, out.stderr
        secret = out.stdout.strip().splitlines()[-1]
        for gw in gws:
            gw.start()
        try:
            for gw in gws:  # a request through each: the key's $0.802 of $1.00, both compute 50 and 80
                with openai.OpenAI(base_url=gw.base_url, api_key=secret, max_retries=0) as client:
                    client.chat.completions.create(model="priced-bytes", messages=BIG, max_tokens=1)
            events = receiver.wait_for(lambda ev: len(ev) >= 2)
            receiver.wait_for(lambda ev: False, timeout=1.0)  # a duplicate would arrive by now
        finally:
            for gw in gws:
                gw.stop()
        thresholds = [e for e in receiver.events() if e["kind"] == "threshold"]
    assert sorted(e["threshold"] for e in thresholds) == [50, 80], events
    db = sqlite3.connect(gws[0].db_path)
    try:
        assert db.execute("SELECT count(*) FROM alerts WHERE kind = 'threshold'").fetchone()[0] == 2
    finally:
        db.close()

