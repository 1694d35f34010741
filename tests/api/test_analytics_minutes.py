"""`GET /v1/analytics/minutes` through a real gateway: each minute's requests, errors and exact
spend are the ledger's, and a range it cannot answer is a 400 naming the parameter."""

from __future__ import annotations

from decimal import Decimal

import openai

from tests.gateway import Gateway

HELLO = [{"role": "user", "content": "hello minutes"}]


def test_minutes_are_the_ledgers_requests_errors_and_spend(gateway: Gateway, api_key: str) -> None:
    with openai.OpenAI(base_url=gateway.base_url, api_key=api_key, max_retries=0) as client:
        for model in ("priced", "gpt-4o-mini", "priced", "fail-429"):
            try:
                last = client.chat.completions.with_raw_response.create(model=model, messages=HELLO)
                rid = last.headers["x-request-id"]
            except openai.APIStatusError as err:
                rid = err.response.headers["x-request-id"]
    gateway.log_record(rid)
    rows = gateway.ledger_rows()
    start, end = rows[0]["created_at"] - 120_000, rows[-1]["created_at"] + 1
    status, doc = gateway.get(f"/v1/analytics/minutes?from={start}&to={end}")
    assert status == 200, doc
    expected: dict[int, list[int]] = {}
    for r in rows:
        m = expected.setdefault(r["created_at"] - r["created_at"] % 60_000, [0, 0, 0])
        m[0] += 1
        m[1] += r["status"] >= 400
        m[2] += r["cost_pico"]
    got = {m["minute"]: [m["requests"], m["errors"], m["cost"]] for m in doc["data"]}
    assert got == {k: [n, e, format(Decimal(p).scaleb(-12).normalize(), "f")]
                   for k, (n, e, p) in expected.items()}
    assert sum(n for n, _, _ in expected.values()) == len(rows) and any(e for _, e, _ in expected.values())


def test_a_range_the_minutes_cannot_answer_is_a_400_naming_the_parameter(gateway: Gateway) -> None:
    for query, param in (("from=2026-01-01T00:00:00Z&to=2026-01-02T01:00:01Z", "to"),
                         ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
                         ("to=2026-01-01T00:00:00Z", "from"), ("from=yesterday&to=2026-01-01", "from"),
                         ("from=1&to=2&group_by=key", "group_by"), ("from=1&to=2&tz=Mars/Olympus", "tz")):
        status, body = gateway.get(f"/v1/analytics/minutes?{query}")
        assert status == 400, (query, body)
        assert body["error"]["param"] == param, (query, body)
