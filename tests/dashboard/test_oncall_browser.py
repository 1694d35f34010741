"""The on-call view in headless Chromium against a real gateway whose ledger runs up to now: the
movers are the usage API's figures for the same windows, the minute totals are the ledger's, the
alerts are `/v1/alerts`, and each row drills down into the logs of its slice and window.

Its screenshot is written to docs/screenshots/oncall.png.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from tests.conftest import standard_config
from tests.dashboard.conftest import GENERATOR
from tests.dashboard.test_dashboard_browser import SHOTS, Session, api, money
from tests.fakes.upstream import FakeUpstream
from tests.gateway import ADMIN_KEY, Gateway

BIG = [{"role": "user", "content": "x" * 400}]  # $0.401 on `priced-bytes` (a token a byte)
DIMS = ("tag_level.2", "key", "label.team", "model")
PICO = Decimal("0.000000000001")
HOUR_MS, DAY_MS = 3_600_000, 86_400_000


@pytest.fixture(scope="module")
def live(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway whose generated ledger runs from the month's start up to now, plus live traffic
    that crosses a key's 50 % and 80 % thresholds (two alerts)."""
    import openai

    workdir = tmp_path_factory.mktemp("oncall")
    config = standard_config(upstream)
    config["alerts"] = {"evaluate_every_s": 0.05}
    gw = Gateway(workdir, config)
    now = dt.datetime.now(dt.UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = max((now - start).total_seconds() / 86400, 0.01)
    out = subprocess.run([sys.executable, str(GENERATOR), "--db", gw.db_url, "--records", "20000", "--keys", "24",
                          "--month", now.strftime("%Y-%m"), "--days", f"{days:.5f}", "--templates", "5000"],
                         capture_output=True, text=True, timeout=120, cwd=workdir)
    assert out.returncode == 0, out.stderr
    gw.start()
    status, _, made = gw.post_json("/v1/manage/apikey", {"name": "paged-key", "monthly_limit": "1.00",
                                                         "labels": {"team": "oncall"}})
    assert status == 201, made
    with openai.OpenAI(base_url=gw.base_url, api_key=made["key"], max_retries=0, timeout=10) as c:
        for _ in range(2):
            last = c.chat.completions.with_raw_response.create(
                model="priced-bytes", messages=BIG, max_tokens=1,
                extra_body={"request_tags": ["team/oncall/pager"]}).headers["x-request-id"]
    gw.log_record(last)
    deadline = time.monotonic() + 10
    while len(api(gw, f"/v1/alerts?subject={made['id']}")["data"]) < 2:
        assert time.monotonic() < deadline, "the threshold alerts did not fire"
        time.sleep(0.1)
    gw.paged = made  # type: ignore[attr-defined]
    yield gw
    gw.stop()


@pytest.fixture()
def admin(browser, live: Gateway) -> Iterator[Session]:  # type: ignore[no-untyped-def]
    s = Session(browser, live, ADMIN_KEY)
    yield s
    s.close()


def open_oncall(s: Session, query: str) -> list[tuple[int, int]]:
    """Open the view; the [from, to) windows it asked the figures of, now first. The page asks
    `/v1/analytics/oncall` twice (the label's dimension waits for the key list), the same windows."""
    asked: list[str] = []
    s.page.on("request", lambda r: asked.append(r.url) if "/v1/analytics/oncall" in r.url
              or "/v1/analytics/minutes" in r.url else None)
    s.open(f"/dashboard/oncall?{query}")
    assert len(asked) == 2 and all("/v1/analytics/oncall?" in url for url in asked), asked
    windows = set()
    for url in asked:
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        a, b, days = int(q["from"][0]), int(q["to"][0]), int(q["days"][0])
        windows.add(tuple((a - k * DAY_MS, b - k * DAY_MS) for k in range(days + 1)))
    assert len(windows) == 1
    return list(windows.pop())


def expected_movers(gw: Gateway, dim: str, windows: list[tuple[int, int]], metric: str) -> list[tuple[str, str, str]]:
    """(value, now, usual) of the five largest rises, from the usage API, as the page shows them."""
    docs = [api(gw, f"/v1/analytics/usage?group_by={dim}&from={a}&to={b}&limit=1000") for a, b in windows]
    now, before = docs[0], docs[1:]
    assert all(d["row_count"] == len(d["data"]) for d in docs)  # every value has its baseline here

    def figure(row: dict | None) -> Fraction:
        if row is None:
            return Fraction(0)
        return Fraction(Decimal(row["cost"])) if metric == "cost" else Fraction(row[metric])

    rises = []
    for row in now["data"]:
        value = row["group"][dim]
        if value is None:
            continue
        past = [next((r for r in d["data"] if r["group"][dim] == value), None) for d in before]
        usual = sum((figure(p) for p in past), Fraction(0)) / len(before)
        if metric == "cost":  # the mean of spend is rounded (half up) to the picodollar
            usual = Fraction((Decimal(usual.numerator) / Decimal(usual.denominator)).quantize(PICO, ROUND_HALF_UP))
        if figure(row) > usual:
            rises.append((figure(row) - usual, value, figure(row), usual))
    rises.sort(key=lambda r: (-r[0], str(r[1])))  # ties by value (code point order, as JS compares strings)

    def text(v: Fraction) -> str:  # the exact figure, as the row carries it
        if metric == "cost":
            return format((Decimal(v.numerator) / Decimal(v.denominator)).normalize(), "f")
        return str(int(v)) if v.denominator == 1 else f"{float(v):.1f}"

    return [(str(value), text(n), text(u)) for _, value, n, u in rises[:5]]


@pytest.mark.parametrize("metric", ["requests", "cost"])
def test_movers_are_the_usage_apis_figures_against_the_mean_of_the_previous_days(
        admin: Session, live: Gateway, metric: str) -> None:
    windows = open_oncall(admin, f"hours=6&days=3&metric={metric}")
    assert len(windows) == 4 and all(a % 60_000 == 0 and b - a == 6 * HOUR_MS for a, b in windows)
    assert [windows[0][0] - w[0] for w in windows] == [k * 86_400_000 for k in range(4)]
    for dim in DIMS:
        shown = []
        for tr in admin.page.query_selector_all(f"section[data-dim='{dim}'] tr.mover"):
            shown.append((tr.query_selector("a.mover-link").get_attribute("data-value"), tr.get_attribute("data-now"),
                          tr.get_attribute("data-usual")))
            now = tr.query_selector_all("td")[1].inner_text()
            assert now == (money(shown[-1][1] or "") if metric == "cost" else f"{int(shown[-1][1] or 0):,}")
        assert shown == expected_movers(live, dim, windows, metric), dim
    assert any(admin.page.query_selector_all("tr.mover"))  # the ledger runs up to now: something rose
    assert admin.errors == []


def test_the_last_hours_are_counted_to_the_minute_not_from_the_top_of_the_hour(admin: Session) -> None:
    """At 05:19 the last 3 hours are 02:20 to 05:20 (the current minute included), 3 hours and not
    the 3 h 19 min from 02:00; the same hours the day before likewise."""
    at = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).replace(hour=5, minute=19, second=30, microsecond=0)
    admin.page.clock.set_fixed_time(at)
    windows = open_oncall(admin, "hours=3&days=1&tz=UTC")
    end = int(at.replace(minute=20, second=0).timestamp() * 1000)
    assert windows == [(end - 3 * HOUR_MS, end), (end - 3 * HOUR_MS - DAY_MS, end - DAY_MS)]
    assert "(02:20–05:20 UTC)" in admin.page.locator("header.page-header").inner_text()
    assert admin.errors == []


def test_the_minute_totals_are_the_ledgers_and_the_chart_has_a_point_a_minute(admin: Session, live: Gateway) -> None:
    windows = open_oncall(admin, "hours=3&days=1&metric=requests")
    (a, b), (c, d) = windows
    rows = live.ledger_rows()
    now = [r for r in rows if a <= r["created_at"] < b]
    kpi = admin.page.locator(".kpi", has_text="Requests since")
    assert kpi.locator(".kpi-value").inner_text() == f"{len(now):,}"
    before = sum(1 for r in rows if c <= r["created_at"] < d)
    assert f"usual {before:,}" in kpi.locator(".kpi-sub").inner_text()
    spend = sum(r["cost_pico"] for r in now)
    assert admin.page.locator(".kpi", has_text="Spend since").locator(".kpi-value").inner_text() == \
        money(str(Decimal(spend) * PICO))
    minutes = api(live, f"/v1/analytics/minutes?from={a}&to={b}")
    assert sum(m["requests"] for m in minutes["data"]) == len(now)
    assert all(m["minute"] % 60_000 == 0 and a <= m["minute"] < b for m in minutes["data"])


def test_fired_alerts_are_listed_and_drill_into_the_logs_of_their_key(admin: Session, live: Gateway) -> None:
    open_oncall(admin, "hours=1&days=1")
    fired = api(live, "/v1/alerts?limit=50")["data"]
    rows = admin.page.query_selector_all("tr.alert-row")
    assert [r.query_selector_all("td")[2].inner_text() for r in rows] == [a["summary"] for a in fired]
    paged = live.paged  # type: ignore[attr-defined]
    assert sum("paged-key" in r.inner_text() for r in rows) >= 2
    admin.page.click("tr.alert-row a.alert-logs")
    admin.rendered()
    assert admin.page.get_attribute("body", "data-rendered") == "logs"
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(admin.page.url).query)
    assert query["key"] == [paged["id"]]
    shown = [td.inner_text() for td in admin.page.query_selector_all("table.data tbody tr td:nth-child(3)")]
    assert shown and set(shown) == {"paged-key"}
    assert admin.page.input_value("#f-range") == "custom" and admin.page.get_attribute("#f-from", "type") == \
        "datetime-local"
    assert admin.errors == []


def test_a_mover_drills_down_into_the_logs_of_its_slice_and_window(admin: Session, live: Gateway) -> None:
    windows = open_oncall(admin, "hours=6&days=3&metric=requests")
    link = admin.page.query_selector("section[data-dim='model'] a.mover-link")
    assert link is not None
    model = link.get_attribute("data-value")
    link.click()
    admin.rendered()
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(admin.page.url).query)
    assert query["model"] == [model]
    a, b = windows[0]
    expected = api(live, f"/v1/logs?model={urllib.parse.quote(model or '')}&from={a}&to={b}&limit=50")["data"]
    shown = [urllib.parse.parse_qs(urllib.parse.urlsplit(el.get_attribute("href") or "").query)["id"][0]
             for el in admin.page.query_selector_all("a.log-link")]
    # the logs page shows the newest records of the slice first, one page of them (fewer than 50)
    assert shown and shown == [r["id"] for r in expected][:len(shown)]
    models = {td.inner_text() for td in admin.page.query_selector_all("table.data tbody tr td:nth-child(4)")}
    assert models == {model}


def test_the_oncall_view_at_1440px_fits_and_is_kept_as_a_screenshot(admin: Session) -> None:
    open_oncall(admin, "hours=3&days=3&metric=cost")
    assert admin.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    SHOTS.mkdir(parents=True, exist_ok=True)
    admin.page.screenshot(path=str(SHOTS / "oncall.png"), full_page=True)
    assert Path(SHOTS / "oncall.png").stat().st_size > 10_000
    assert admin.errors == []
