"""What a new user met on a 1440 px screen, each kept fixed: no table runs past its card or the
window (the Keys page's neither, with the docs' long key names, labels and rate limits), money
axes read distinct ticks, the log detail shows every attempt whole, the overlap note reads once with its mark drawn,
a `range=` the dashboard cannot read is said (never swapped silently), and invoices open on the
latest month that has requests."""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from collections.abc import Iterator

import pytest

from tests.dashboard.test_dashboard_browser import RANGE, Session, api
from tests.gateway import ADMIN_KEY, Gateway

WIDE = {  # the widest view of every page with a table
    "overview": "/dashboard/overview?range=last-month",
    "oncall": "/dashboard/oncall?hours=24&days=7",
    "explore": f"/dashboard/explore?{RANGE}&group=label.team&group2=model&metric=latency_p99",
    "explore-tags": f"/dashboard/explore?{RANGE}&group=tag&group2=model",
    "tree": f"/dashboard/tree?{RANGE}",
    "keys": "/dashboard/keys",
    "logs": f"/dashboard/logs?{RANGE}",
    "invoices": "/dashboard/invoices?group=label.customer_id&markup=0.2",
}

# Every table's right edge within its card and the window, and nothing scrolled out of sight in a
# table's own scroller: the list of offenders (empty when the page fits).
OVERFLOWING = """() => [...document.querySelectorAll("main table")].flatMap((t) => {
  const r = t.getBoundingClientRect(), card = t.closest(".card").getBoundingClientRect();
  const wrap = t.closest(".table-wrap");
  const hidden = wrap ? wrap.scrollWidth - wrap.clientWidth : 0;
  return r.right > card.right + 1 || r.right > window.innerWidth || hidden > 1
    ? [`${t.closest(".card").querySelector("h2")?.textContent}: right ${r.right}, card ${card.right}, `
       + `hidden ${hidden}`] : [];
})"""


@pytest.fixture()
def admin(browser, dash: Gateway) -> Iterator[Session]:  # type: ignore[no-untyped-def]
    s = Session(browser, dash, ADMIN_KEY)
    yield s
    s.close()


def test_no_table_runs_past_its_card_or_the_window_at_1440px(admin: Session, dash: Gateway) -> None:
    for name, path in WIDE.items():
        admin.open(path)
        assert admin.page.query_selector("main table"), name
        assert admin.page.evaluate(OVERFLOWING) == [], name
    admin.open(WIDE["logs"])
    admin.page.click("a.log-link")  # the record's detail beside the list
    admin.page.wait_for_selector("#log-detail")
    assert admin.page.evaluate(OVERFLOWING) == []
    assert admin.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_the_log_detail_shows_every_attempt_whole(admin: Session, dash: Gateway) -> None:
    failed = api(dash, f"/v1/logs?status=429&{RANGE.replace('range=custom&', '')}")["data"][0]
    admin.open(f"/dashboard/logs?{RANGE}&status=429&id={failed['id']}")
    admin.page.wait_for_selector("#log-detail")
    items = admin.page.query_selector_all("#log-detail li.attempt")
    assert len(items) == len(failed["attempts"]) > 0
    for li, attempt in zip(items, failed["attempts"], strict=True):
        text = li.inner_text()
        assert attempt["provider"] in text and attempt["model"] in text and str(attempt["status"]) in text
        assert attempt["error"] and attempt["error"] in text  # the whole error, not cut
    fits = """() => { const pane = document.querySelector(".detail-pane"), box = pane.getBoundingClientRect();
      return pane.scrollWidth <= pane.clientWidth && [...pane.querySelectorAll("li.attempt *")]
        .every((el) => el.getBoundingClientRect().right <= box.right + 1); }"""
    assert admin.page.evaluate(fits)


def test_the_overlap_note_says_it_once_with_a_drawn_mark(admin: Session) -> None:
    admin.open(f"/dashboard/explore?{RANGE}&group=tag_level.1")
    note = admin.page.inner_text(".overlap-note")
    assert note.startswith("Rows overlap: a request with several tags")
    assert note.lower().count("rows overlap") == 1 and ".." not in note and note.endswith(".")
    assert "⧉" not in admin.page.inner_text("main")  # no glyph a font may lack
    mark = admin.page.evaluate("""() => {
      const s = getComputedStyle(document.querySelector(".overlap-note .overlap-mark"));
      return [s.borderTopWidth, s.width]; }""")
    assert mark[0] != "0px" and mark[1] != "0px"


def test_a_range_the_dashboard_cannot_read_is_said_and_a_span_it_can_is_kept(admin: Session) -> None:
    asked: list[str] = []
    admin.page.on("request", lambda r: asked.append(r.url) if "/v1/logs?" in r.url else None)
    admin.open("/dashboard/logs?range=foo")
    error = admin.page.inner_text(".range-error")
    assert "range=foo" in error and "Last 7 days instead" in error
    assert admin.page.input_value("#f-range") == "7d"
    admin.open("/dashboard/explore?range=custom&from=garbage")
    assert "from=garbage" in admin.page.inner_text(".range-error")
    asked.clear()
    admin.open("/dashboard/logs?range=3h")  # not in the picker, and kept
    assert admin.page.query_selector(".range-error") is None
    assert admin.page.input_value("#f-range") == "3h"
    sent = urllib.parse.parse_qs(urllib.parse.urlsplit(asked[-1]).query)
    span = dt.datetime.fromisoformat(sent["to"][0]) - dt.datetime.fromisoformat(sent["from"][0])
    assert span == dt.timedelta(hours=3)
    assert admin.errors == []


def test_invoices_open_on_the_latest_month_with_requests(admin: Session, browser, tight: Gateway) -> None:  # type: ignore[no-untyped-def]
    now = dt.datetime.now(dt.UTC)
    last = (now.replace(day=1) - dt.timedelta(days=1)).strftime("%Y-%m")
    admin.open("/dashboard/invoices")  # last month has the generated history: the latest whole month
    assert admin.page.input_value("input[name=month]") == last
    assert admin.page.query_selector_all("table.data tbody tr")
    fresh = Session(browser, tight, ADMIN_KEY)  # requests this month only: not an empty last month
    try:
        fresh.open("/dashboard/invoices")
        assert fresh.page.input_value("input[name=month]") == now.strftime("%Y-%m")
        assert fresh.page.query_selector_all("table.data tbody tr")
        assert "No requests that month" not in fresh.page.inner_text("main")
    finally:
        fresh.close()


def test_the_keys_page_fits_1440px_with_the_docs_keys_labels_and_rate_limits(admin: Session, dash: Gateway) -> None:
    """docs/keys.md's key (four labels) under its two label rate limits: every column, and each
    key's Edit and Revoke, on screen without scrolling the table sideways."""
    status, _, body = dash.post_json("/v1/manage/apikey", {"name": "growth-autocomplete-prod", "labels": {
        "team": "growth", "env": "prod", "feature": "autocomplete", "tier": "paid"}})
    assert status == 201, body
    for limit in ({"name": "growth-pace", "requests_per_minute": 600, "tokens_per_minute": 200_000,
                   "max_concurrent": 20},
                  {"name": "no-bursts", "requests_per_second": 5}):
        status, _, body = dash.post_json("/v1/manage/ratelimit", {**limit, "scope": {"label": {"team": "growth"}}})
        assert status == 201, body
    admin.open("/dashboard/keys")
    admin.page.wait_for_selector("[data-ratelimit]")
    assert admin.page.evaluate(OVERFLOWING) == []
    assert admin.page.evaluate("""() => [...document.querySelectorAll("main button[aria-label^=Revoke]")]
      .every((b) => b.getBoundingClientRect().right <= window.innerWidth)""")


LONG_TAG = "customer/acme-corporation-international/region/eu-west-1/department/research-and-development"


def test_long_names_labels_and_tags_wrap_inside_their_cards(admin: Session, dash: Gateway) -> None:
    """A 70-character key name, a customer id label and a 90-character tag: each page shows them
    whole (wrapped), no table pushed past its card."""
    import openai

    status, _, body = dash.post_json("/v1/manage/apikey", {
        "name": "customer-portal-recommendations-batch-nightly-eu-west-1-production", "monthly_limit": "10",
        "labels": {"team": "recommendations-and-personalisation",
                   "customer_id": "cus_9f8e7d6c5b4a39281706f5e4d3c2b1a0", "env": "production"}})
    assert status == 201, body
    with openai.OpenAI(base_url=dash.base_url, api_key=body["key"], max_retries=0, timeout=10) as client:
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                               extra_body={"request_tags": [LONG_TAG]})
    dash.log_record(reply.id)
    for path in ("/dashboard/keys", "/dashboard/overview", "/dashboard/explore?group=tag",
                 "/dashboard/explore?group=key"):
        admin.open(path)
        assert admin.page.evaluate(OVERFLOWING) == [], path
    admin.open("/dashboard/explore?group=tag")
    assert LONG_TAG in admin.page.inner_text("main table")


def test_money_axes_read_distinct_ticks(browser, tight: Gateway) -> None:  # type: ignore[no-untyped-def]
    """Spend of fractions of a cent: the axis says $0.0045 and $0.004, not $0.005 twice."""
    s = Session(browser, tight, ADMIN_KEY)
    try:
        for path in ("/dashboard/overview", "/dashboard/explore?group=model&metric=cost"):
            s.open(path)
            ticks = json.loads(s.page.get_attribute("main canvas", "data-y-ticks") or "[]")
            assert len(ticks) > 2 and len(set(ticks)) == len(ticks), (path, ticks)
            assert all(t.startswith("$") for t in ticks), ticks
    finally:
        s.close()
