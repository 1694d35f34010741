"""Small random ledgers and random questions for the exactness tests of the analytics engines."""

from __future__ import annotations

import random
from typing import Any

from sqlalchemy import Engine

from tallygate.analytics.query import Query, parse_group_by
from tallygate.core.record import LedgerRecord
from tallygate.errors import InvalidRequest
from tallygate.store.feedback import FeedbackStore
from tallygate.store.ingest import BatchIngest
from tests.records import make_record

DAY = 86_400_000
HOUR = 3_600_000
T0 = 1_793_491_200_000  # 2026-11-01T00:00Z
SPAN = 3 * DAY
# every zone kind: UTC, whole hours with DST, half and quarter hours, a 30-minute DST shift, +12:45
ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe", "Pacific/Chatham",
         "Europe/Berlin"]
TAGS = ["US", "US/CA", "US/CA/SF", "US/NYC", "EU/FR/paris", "prod", "team/a/x/v1", "team/b"]
LABELS = [{"team": "a"}, {"team": "b"}, {"team": "a", "env": "prod"}, {"env": "dev"}, {}]
STATUS = [200, 200, 200, 200, 429, 500, 502]
CODES = {200: None, 429: "upstream_rate_limited", 500: "internal_error", 502: "upstream_server_error"}
DIMS = ["key", "model", "served_model", "provider", "status", "label.team", "label.env", "tag", "tag_level.1",
        "tag_level.2", "tag_level.3"]


def random_records(rng: random.Random, n: int, start: int = T0, span: int = SPAN) -> list[LedgerRecord]:
    out = []
    for i in range(n):
        status = rng.choice(STATUS)
        model = rng.choice(["m1", "m2", None])
        ttft = rng.randrange(10**3, 10**6) if rng.random() < 0.4 else None
        out.append(make_record(
            id=f"r{i:06d}", created_at=start + rng.randrange(span), key_id=rng.choice(["k1", "k2", "k3", None]),
            labels=rng.choice(LABELS), tags=tuple(rng.sample(TAGS, rng.randrange(0, 4))), requested_model=model,
            served_model=None if model is None else model + "-served", provider=rng.choice(["p1", "p2", None]),
            status=status, error_type=None if status == 200 else "server_error", error_code=CODES[status],
            stream=ttft is not None, input_tokens=rng.randrange(0, 5000), output_tokens=rng.randrange(0, 900),
            cached_tokens=rng.randrange(0, 50), reasoning_tokens=rng.randrange(0, 9),
            cost_pico=rng.randrange(0, 10**13) if rng.random() < 0.99 else 2 * 10**16,  # $20,000
            latency_us=rng.randrange(10, 10**8), ttft_us=ttft))
    return out


def fill(engine: Engine, records: list[LedgerRecord], rng: random.Random, feedback: int = 40) -> None:
    ingest = BatchIngest(engine)
    ordered = sorted(records, key=lambda r: r.created_at)
    for i in range(0, len(ordered), 500):
        ingest.write(ordered[i:i + 500])
    scores = FeedbackStore(engine)
    for r in rng.sample(ordered, min(feedback, len(ordered))):
        scores.put(r.id, rng.randrange(0, 1001), None)


def random_question(rng: random.Random, start: int = T0, span: int = SPAN) -> Query | None:
    """Random dimensions, filters, a range to the millisecond and a zone; None when the grammar refuses."""
    dims = rng.sample(DIMS, rng.randrange(0, 3))
    if rng.random() < 0.6:
        dims.append("time." + rng.choice(["hour", "day", "month"]))
    filters: dict[str, Any] = {}
    for name, values in (("tag", ["US", "US/CA", "prod", "team", "nothing"]), ("key_id", ["k1", "k2"]),
                         ("model", ["m1", "m2"]), ("status", [200, 500, 429]),
                         ("error_code", ["internal_error", "upstream_rate_limited"]), ("provider", ["p1", "p2"]),
                         ("served_model", ["m1-served"])):
        if rng.random() < 0.15:
            filters[name] = rng.choice(values)
    if rng.random() < 0.25:
        filters["labels"] = dict([rng.choice([("team", "a"), ("team", "b"), ("env", "prod")])])
    lo = start + rng.randrange(-HOUR, span)
    hi = lo + rng.randrange(1, span)
    bounds = rng.choice([(lo, hi), (None, hi), (lo, None), (None, None)])
    try:
        return Query(parse_group_by(",".join(dims)), from_ms=bounds[0], to_ms=bounds[1], tz=rng.choice(ZONES),
                     current_labels=rng.random() < 0.15, **filters)
    except InvalidRequest:
        return None


def comparable(doc: dict[str, Any]) -> tuple[Any, ...]:
    """Everything of a usage answer but its plan and percentiles (whose error bound is checked apart)."""
    def strip(m: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in m.items() if k not in ("latency_ms", "ttft_ms", "group", "key_name")}
    rows = sorted((tuple((k, str(v)) for k, v in r["group"].items()), tuple(sorted(strip(r).items())))
                  for r in doc["data"])
    return rows, tuple(sorted(strip(doc["totals"]).items())), doc["row_count"], doc["overlapping"]
