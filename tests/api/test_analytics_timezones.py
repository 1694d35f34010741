"""A reporting time zone: local days, hours and months over real HTTP, equal to the raw ledger's
answer and to a count made here with `zoneinfo`, across Berlin's October daylight-saving change
and at the 30- and 45-minute offsets of Kolkata and Kathmandu; invoices of a local month."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import pytest

from tallygate.analytics.columnar import DuckDBColumnar
from tallygate.analytics.query import Query, parse_group_by, parse_month, parse_time
from tallygate.analytics.reader import AnalyticsStore
from tallygate.analytics.service import Analytics
from tallygate.core.money import usd_text
from tallygate.core.record import LedgerRecord
from tallygate.store.db import migrate, open_engine
from tallygate.store.ingest import BatchIngest
from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway, InProcessGateway
from tests.records import make_record

BERLIN, KOLKATA, KATHMANDU = "Europe/Berlin", "Asia/Kolkata", "Asia/Kathmandu"
HOUR = 3_600_000


def utc_ms(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp() * 1000)  # type: ignore[misc]


START, END = utc_ms(2026, 10, 20), utc_ms(2026, 11, 6)
# Instants on (and a millisecond before) local midnights: Berlin before and after its clocks go
# back on 2026-10-25, Kolkata and Kathmandu at the turn of the month.
EDGES = [utc_ms(2026, 10, 24, 22), utc_ms(2026, 10, 25, 23), utc_ms(2026, 10, 31, 23), utc_ms(2026, 10, 31, 18, 30),
         utc_ms(2026, 10, 31, 18, 15), utc_ms(2026, 10, 25, 0), utc_ms(2026, 10, 25, 1)]


def records() -> list[LedgerRecord]:
    rng = random.Random(14)
    times = [rng.randrange(START, END) for _ in range(2500)] + [t + d for t in EDGES for d in (-1, 0, 1)]
    pool = ["US", "US/CA", "EU/DE/Berlin", "prod"]
    return [make_record(id=f"tz{i:05d}", created_at=t, key_id=rng.choice(["k1", "k2"]),
                        tags=rng.sample(pool, rng.randrange(3)), labels=rng.choice([{"team": "a"}, {"team": "b"}, {}]),
                        requested_model=rng.choice(["m1", "m2"]),
                        status=rng.choice([200, 200, 500]), cost_pico=rng.randrange(1, 10**9),
                        latency_us=rng.randrange(10**3, 10**7))
            for i, t in enumerate(times)]


@pytest.fixture(scope="module")
def ledger() -> list[LedgerRecord]:
    return records()


@pytest.fixture(scope="module")
def berlin_gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory,
                   ledger: list[LedgerRecord]):  # type: ignore[no-untyped-def]
    """A gateway whose config reports in Europe/Berlin, over a ledger written before it started."""
    workdir = tmp_path_factory.mktemp("tz")
    engine = open_engine(f"sqlite:///{workdir}/ledger.db")
    migrate(engine)
    ingest = BatchIngest(engine)
    for i in range(0, len(ledger), 400):
        ingest.write(ledger[i:i + 400])
    engine.dispose()
    gw = InProcessGateway(workdir, {**standard_config(upstream), "reporting": {"timezone": BERLIN}}).start()
    gw.wait_columnar()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def raw(berlin_gateway: Gateway):  # type: ignore[no-untyped-def]
    engine = open_engine(berlin_gateway.db_url)
    yield Analytics(AnalyticsStore(engine, raw_only=True), BERLIN)
    engine.dispose()


def http(gw: Gateway, path: str, **params: Any) -> dict:
    status, body = gw.get(f"{path}?{urlencode({k: v for k, v in params.items() if v is not None})}")
    assert status == 200, body
    return body


def figures(doc: dict) -> tuple:
    return ([(tuple(r["group"].items()), r["requests"], r["errors"], r["cost"], r["output_tokens"])
             for r in doc["data"]], doc["totals"]["requests"], doc["totals"]["cost"])


def raw_usage(raw: Analytics, tz: str, group_by: str, frm: str | None, to: str | None, **filters: Any) -> dict:
    return raw.usage(Query(parse_group_by(group_by), from_ms=parse_time(frm, "from", tz),
                           to_ms=parse_time(to, "to", tz), tz=tz, **filters))


QUESTIONS = [("time.day", "2026-10-21", "2026-11-04"), ("time.hour", "2026-10-24T20:00", "2026-10-26T03:00"),
             ("time.month,label.team", "2026-10-01", "2026-12-01"),
             ("time.day,tag_level.1", "2026-10-22", "2026-11-02"), ("time.day,model", None, None),
             ("time.hour,tag", "2026-10-31T20:00", "2026-11-01T04:00"),
             ("time.day,status", "2026-10-24T13:17:05", "2026-10-27T08:59:59.123"),
             ("label.team", "2026-10-25", "2026-11-01")]


@pytest.mark.parametrize("tz", [BERLIN, KOLKATA, KATHMANDU, "UTC"])
def test_local_time_buckets_over_http_equal_the_raw_ledger(berlin_gateway: Gateway, raw: Analytics, tz: str) -> None:
    for group_by, frm, to in QUESTIONS:
        doc = http(berlin_gateway, "/v1/analytics/usage", group_by=group_by, tz=tz, **{"from": frm, "to": to})
        assert doc["plan"]["timezone"] == doc["timezone"] == tz
        want = raw_usage(raw, tz, group_by, frm, to)
        assert want["plan"]["percentiles"] == "exact"
        assert figures(doc) == figures(want), (tz, group_by)
    # a tag crossed with a label, which no roll-up holds, is answered by the columnar engine: the same
    doc = http(berlin_gateway, "/v1/analytics/usage", group_by="time.day,tag_level.1,label.team", tz=tz,
               **{"from": "2026-10-24", "to": "2026-10-27"})
    assert doc["plan"]["source"] == "columnar"
    assert figures(doc) == figures(raw_usage(raw, tz, "time.day,tag_level.1,label.team", "2026-10-24", "2026-10-27"))
    tree = http(berlin_gateway, "/v1/analytics/tags/tree", tz=tz, **{"from": "2026-10-25", "to": "2026-11-01"})
    want_tree = raw.tree(None, None, Query(from_ms=parse_time("2026-10-25", "from", tz),
                                           to_ms=parse_time("2026-11-01", "to", tz), tz=tz))
    strip = lambda nodes: [(n["tag"], n["requests"], n["cost"], strip(n["children"])) for n in nodes]  # noqa: E731
    assert tree["plan"]["timezone"] == tz and strip(tree["data"]) == strip(want_tree["data"])


def local_sums(ledger: list[LedgerRecord], tz: str, fmt: str) -> dict[str, tuple[int, str]]:
    """Requests and cost per local bucket label, counted here record by record."""
    n: Counter[str] = Counter()
    cost: Counter[str] = Counter()
    for r in ledger:
        label = dt.datetime.fromtimestamp(r.created_at / 1000, ZoneInfo(tz)).strftime(fmt)
        n[label] += 1
        cost[label] += r.cost_pico
    return {k: (n[k], usd_text(cost[k])) for k in n}


@pytest.mark.parametrize("tz", [BERLIN, KOLKATA, KATHMANDU])
def test_local_days_and_months_are_the_local_calendar_and_use_the_rollups(berlin_gateway: Gateway,
                                                                        ledger: list[LedgerRecord], tz: str) -> None:
    days = http(berlin_gateway, "/v1/analytics/usage", group_by="time.day", tz=tz)  # the whole ledger
    got = {r["group"]["time.day"]: (r["requests"], r["cost"]) for r in days["data"]}
    assert got == local_sums(ledger, tz, "%Y-%m-%d")
    # the roll-ups' UTC hours in every zone; with 30- and 45-minute offsets, the half hours around each
    # local midnight from the columnar copy (`AnalyticsStore._columnar_ends`)
    assert days["plan"]["source"] == "dims"
    engine = open_engine(berlin_gateway.db_url)
    rolled = Analytics(AnalyticsStore(engine), BERLIN)  # without it: the roll-ups
    by_rollups = rolled.usage(Query(parse_group_by("time.day"), tz=tz))
    engine.dispose()
    assert {r["group"]["time.day"]: (r["requests"], r["cost"]) for r in by_rollups["data"]} == got
    segments = by_rollups["plan"]["segments"]
    assert {s["level"] for s in segments} >= {"hour"}  # local days from the UTC hour roll-ups
    raw_edges = [s for s in segments if s["level"] == "raw"]
    if tz == BERLIN:  # whole-hour offsets: the local days are whole UTC hours
        assert all(s["from"] % HOUR == 0 and s["to"] % HOUR == 0 for s in segments if s["level"] != "raw")
        assert "day" not in {s["level"] for s in segments}
    else:  # the UTC hour that holds each local midnight is read from the raw ledger
        assert len(raw_edges) >= 15 and all(s["to"] - s["from"] <= HOUR for s in raw_edges[1:-1])
    months = http(berlin_gateway, "/v1/analytics/usage", group_by="time.month", tz=tz)
    assert {r["group"]["time.month"]: (r["requests"], r["cost"]) for r in months["data"]} \
        == local_sums(ledger, tz, "%Y-%m")
    engine = open_engine(berlin_gateway.db_url)
    months = Analytics(AnalyticsStore(engine), BERLIN).usage(Query(parse_group_by("time.month"), tz=tz))
    engine.dispose()
    assert "day" in {s["level"] for s in months["plan"]["segments"]}  # the days inside a local month


def test_berlin_hours_across_the_clock_change_are_25_and_labelled_with_their_offset(berlin_gateway: Gateway,
                                                                                   ledger: list[LedgerRecord]) -> None:
    doc = http(berlin_gateway, "/v1/analytics/usage", group_by="time.hour",  # the config's zone
               **{"from": "2026-10-25", "to": "2026-10-26"})
    assert doc["plan"]["timezone"] == BERLIN
    assert doc["from"] == utc_ms(2026, 10, 24, 22) and doc["to"] == utc_ms(2026, 10, 25, 23)
    labels = [r["group"]["time.hour"] for r in doc["data"]]
    assert "2026-10-25T02:00:00+02:00" in labels and "2026-10-25T02:00:00+01:00" in labels
    assert len(set(labels)) == len(labels) <= 25
    inside = [r for r in ledger if doc["from"] <= r.created_at < doc["to"]]
    assert doc["totals"]["requests"] == len(inside)
    assert doc["totals"]["cost"] == usd_text(sum(r.cost_pico for r in inside))


@pytest.mark.parametrize("tz", [KOLKATA, BERLIN])
def test_an_invoice_month_is_the_local_month(berlin_gateway: Gateway, raw: Analytics, ledger: list[LedgerRecord],
                                             tz: str) -> None:
    doc = http(berlin_gateway, "/v1/analytics/export", month="2026-10", group_by="label.team", markup="0.2", tz=tz)
    start, end = parse_month("2026-10", tz=tz)
    assert doc["timezone"] == doc["plan"]["timezone"] == tz and (doc["from"], doc["to"]) == (start, end)
    assert start == (utc_ms(2026, 9, 30, 18, 30) if tz == KOLKATA else utc_ms(2026, 9, 30, 22))
    inside = [r for r in ledger if start <= r.created_at < end]
    assert doc["totals"]["requests"] == len(inside)
    assert Decimal(doc["totals"]["cost"]) == Decimal(usd_text(sum(r.cost_pico for r in inside)))
    want = raw.export("2026-10", start, end, parse_group_by("label.team"), Decimal("0.2"), tz=tz)
    assert doc["lines"] == want["lines"] and doc["totals"] == want["totals"]
    if tz == KOLKATA:  # the half hours at both ends come from the records (the columnar copy, or the raw
        # ledger before it is made), the rest from roll-ups
        segments = doc["plan"]["segments"]
        raws = [s for s in segments if s["level"] in ("raw", "columnar")]
        assert len(raws) == 2 and all(s["to"] - s["from"] == 1_800_000 for s in raws)
        assert {start, end} <= {p for s in raws for p in (s["from"], s["to"])}
        assert "day" in {s["level"] for s in segments}
    status, _, body = berlin_gateway.request("GET", f"/v1/analytics/export?month=2026-10&format=csv&tz={tz}")
    assert status == 200 and body.decode().splitlines()[-1].split(",")[1] == str(len(inside))


def test_an_unknown_time_zone_is_a_400_naming_tz(berlin_gateway: Gateway) -> None:
    for path in ("/v1/analytics/usage", "/v1/analytics/tags/tree", "/v1/analytics/export?month=2026-10"):
        for bad in ("Mars/Olympus", "../../etc/passwd", "Europe", "+05:30"):
            sep = "&" if "?" in path else "?"
            status, body = berlin_gateway.get(f"{path}{sep}{urlencode({'tz': bad})}")
            assert status == 400, (path, bad, body)
            assert body["error"]["param"] == "tz" and "IANA" in body["error"]["message"]


def test_utc_stays_the_default_without_a_reporting_zone(gateway: Gateway) -> None:
    doc = http(gateway, "/v1/analytics/usage", group_by="time.day")
    assert doc["plan"]["timezone"] == "UTC"


def test_the_cli_export_and_report_take_the_zone_too(berlin_gateway: Gateway) -> None:
    import json

    out = berlin_gateway.cli("export", "--month", "2026-10", "--tz", KOLKATA, "--format", "json",
                             "--group-by", "label.team")
    assert out.returncode == 0, out.stderr
    doc = http(berlin_gateway, "/v1/analytics/export", month="2026-10", group_by="label.team", tz=KOLKATA)
    assert json.loads(out.stdout)["totals"] == doc["totals"] and json.loads(out.stdout)["timezone"] == KOLKATA
    out = berlin_gateway.cli("report", "--group-by", "time.day", "--from", "2026-10-25", "--to", "2026-10-26",
                             "--tz", BERLIN, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["totals"] == http(berlin_gateway, "/v1/analytics/usage", group_by="time.day",
                                                    **{"from": "2026-10-25", "to": "2026-10-26"})["totals"]
    bad = berlin_gateway.cli("report", "--tz", "Nowhere/Land")
    assert bad.returncode != 0 and "tz" in bad.stderr


def test_local_hours_off_the_utc_hour_are_answered_at_any_size(berlin_gateway: Gateway) -> None:
    engine = open_engine(berlin_gateway.db_url)
    try:
        store = AnalyticsStore(engine, columnar=DuckDBColumnar())
        store.sync()  # the copy made (else the roll-ups and raw ledger answer while it is made)
        analytics = Analytics(store, BERLIN)
        whole = {"from_ms": START, "to_ms": END}
        hours = analytics.usage(Query(parse_group_by("time.hour"), tz=KOLKATA, **whole))  # each straddles 2 UTC hours
        assert hours["plan"]["source"] == "columnar"
        assert hours["totals"] == analytics.usage(Query(tz=KOLKATA, **whole))["totals"]
        assert all(r["group"]["time.hour"].endswith(":00:00+05:30") for r in hours["data"])
        assert analytics.usage(Query(parse_group_by("time.hour"), tz=BERLIN, **whole))["totals"]["requests"] > 2500
        days = analytics.usage(Query(parse_group_by("time.day"), tz=KOLKATA, from_ms=utc_ms(2026, 10, 21, 18, 30),
                                     to_ms=utc_ms(2026, 10, 23, 18, 30)))
        assert [r["group"]["time.day"] for r in days["data"]] == ["2026-10-22", "2026-10-23"]
    finally:
        engine.dispose()
