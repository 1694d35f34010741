"""`--log-format json`: one JSON line per request with its id, key, status, model, cost and
latency; never the key's secret, never the prompt."""

from __future__ import annotations

import json
from pathlib import Path

import openai

from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway

PROMPT = "a prompt nobody may log"


def test_json_log_has_one_line_per_request_without_secrets_or_prompts(upstream: FakeUpstream,
                                                                       tmp_path: Path) -> None:
    from tests.conftest import standard_config

    gw = Gateway(tmp_path, standard_config(upstream), env={"TALLYGATE_LOG_FORMAT": "json"}).start()
    try:
        status, _, rec = gw.post_json("/v1/manage/apikey", {"name": "logged"})
        assert status == 201
        with openai.OpenAI(base_url=gw.base_url, api_key=rec["key"], max_retries=0) as client:
            ok = client.chat.completions.create(model="priced", messages=[{"role": "user", "content": PROMPT}])
            try:
                client.chat.completions.create(model="fail-500", messages=[{"role": "user", "content": PROMPT}])
            except openai.APIStatusError:
                pass
    finally:
        gw.stop()
    text = gw.log()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "request"]
    assert len(requests) == 2
    first = next(r for r in requests if r["request_id"] == ok.id)
    assert first["key_id"] == rec["id"] and first["key_name"] == "logged" and first["status"] == 200
    assert first["model"] == "priced" and first["cost_usd"] != "0" and first["latency_ms"] > 0
    assert first["level"] == "info" and first["time"].endswith("Z")
    assert {r["status"] for r in requests} == {200, 502} and any(r["error_type"] for r in requests)
    assert any(line.get("logger") == "tallygate" and "ledger flushed" in line.get("message", "") for line in lines)
    assert PROMPT not in text and rec["key"] not in text and "Echo" not in text
