"""The dashboard in headless Chromium: sign-in, every page, figures against the API, keys, CSRF.

Each page's screenshot is written to docs/screenshots/ (the README shows them).
"""

from __future__ import annotations

import csv
import io
import json
import urllib.parse
from decimal import Decimal
from pathlib import Path

import pytest

from tests.gateway import ADMIN_KEY, Gateway

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
RANGE = "range=custom&from=2020-01-01&to=2040-01-01"
API_RANGE = "from=2020-01-01T00:00:00Z&to=2040-01-01T00:00:00Z"
PAGES = {
    "overview": "/dashboard/overview?range=last-month",
    "oncall": "/dashboard/oncall?hours=3",
    "explore": f"/dashboard/explore?{RANGE}&group=label.team&group2=model",
    "tree": f"/dashboard/tree?{RANGE}",
    "keys": "/dashboard/keys",
    "logs": f"/dashboard/logs?{RANGE}",
    "invoices": "/dashboard/invoices?markup=0.2",
}


class Session:
    """A browser context signed in with one key, recording console errors and page errors."""

    def __init__(self, browser, gw: Gateway, key: str | None) -> None:  # type: ignore[no-untyped-def]
        self.gw = gw
        self.context = browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
        self.context.set_default_timeout(30_000)  # a wait, not a speed check (bench_dashboard.py times pages)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(gw.url + "/dashboard/")
        self.page.wait_for_selector("#signin-key")
        if key is not None:
            self.page.fill("#signin-key", key)
            self.page.click("button[type=submit]")
            self.page.wait_for_selector("nav.sidebar")

    def open(self, path: str) -> None:
        self.page.goto(self.gw.url + path)
        self.rendered()

    def rendered(self) -> None:
        self.page.wait_for_selector("body[data-rendered]:not([data-rendered=signin])", state="attached")
        self.page.wait_for_selector(".loading", state="detached")

    def fetch(self, method: str, path: str, headers: dict | None = None, body: object = None) -> dict:
        """fetch() from the page itself (same origin, the session cookie attached by the browser)."""
        return self.page.evaluate(
            """async ([method, path, headers, body]) => {
                 const r = await fetch(path, {method, headers, body: body === null ? undefined : JSON.stringify(body)});
                 return {status: r.status, body: await r.json()};
               }""", [method, path, headers or {}, body])

    def close(self) -> None:
        self.context.close()


def api(gw: Gateway, path: str, key: str = ADMIN_KEY) -> dict:
    status, body = gw.get(path, key=key)
    assert status == 200, body
    return body


def money(text: str) -> str:
    """The dashboard's money text for an API decimal string (exact, grouped, at least 2 decimals)."""
    whole, _, frac = text.partition(".")
    return f"${int(whole):,}.{frac.rstrip('0').ljust(2, '0')}"


@pytest.fixture()
def admin(browser, dash):  # type: ignore[no-untyped-def]
    s = Session(browser, dash, ADMIN_KEY)
    yield s
    s.close()


def test_sign_in_keeps_the_key_out_of_the_page_and_sets_a_strict_httponly_cookie(admin: Session) -> None:
    cookies = {c["name"]: c for c in admin.context.cookies()}
    session = cookies["tallygate_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["expires"] > 0
    page = admin.page
    assert page.evaluate("document.cookie") == ""
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    assert ADMIN_KEY not in page.content()
    assert page.query_selector("#signin-key") is None  # the form (and the typed key) is gone
    assert admin.fetch("GET", "/v1/key")["status"] == 200  # the cookie alone authenticates reads


def test_every_page_renders_without_console_errors(admin: Session) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for name, path in PAGES.items():
        admin.open(path)
        assert admin.page.get_attribute("body", "data-rendered") == name
        assert not admin.page.query_selector("main .error"), admin.page.inner_text("main .error")
        if name == "tree":  # show it opened two levels
            admin.page.click("tr[data-tag='team'] button.toggle")
            admin.page.click("tr[data-tag='team/growth'] button.toggle")
            admin.page.wait_for_selector("tr[data-tag='team/growth/autocomplete']")
        if name != "oncall":  # its screenshot is test_oncall_browser's, on a ledger that runs up to now
            admin.page.screenshot(path=str(SHOTS / f"{name}.png"))
    admin.open(PAGES["logs"])
    admin.page.click("a.log-link")
    admin.page.wait_for_selector("#log-detail")
    admin.page.locator("#log-detail h3", has_text="Attempts").scroll_into_view_if_needed()  # the pane scrolls
    admin.page.screenshot(path=str(SHOTS / "log-detail.png"))
    admin.page.set_viewport_size({"width": 1280, "height": 800})  # a laptop screen
    admin.open(PAGES["overview"])
    admin.page.screenshot(path=str(SHOTS / "overview-laptop.png"))
    assert admin.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert admin.errors == []


def test_explore_totals_and_rows_equal_the_api_and_the_csv_is_what_is_shown(admin: Session, dash: Gateway) -> None:
    admin.open(f"/dashboard/explore?{RANGE}")
    admin.page.select_option("#x-group", "label.team")
    admin.page.fill("input[name=tag]", "team")
    admin.page.click("form.filters button[type=submit]")
    admin.rendered()
    state = urllib.parse.parse_qs(urllib.parse.urlparse(admin.page.url).query)
    assert state["group"] == ["label.team"] and state["tag"] == ["team"]  # the view is in the URL
    doc = api(dash, f"/v1/analytics/usage?group_by=label.team&tag=team&{API_RANGE}")
    foot = admin.page.inner_text("table.data tfoot").split("\t")
    assert money(doc["totals"]["cost"]) in foot and f"{doc['totals']['requests']:,}" in foot
    rows = admin.page.query_selector_all("table.data tbody tr")
    assert len(rows) == len(doc["data"])
    for tr, row in zip(rows, doc["data"], strict=True):
        cells = [td.inner_text() for td in tr.query_selector_all("td")]
        assert cells[0] == row["group"]["label.team"] and cells[1] == f"{row['requests']:,}"
        assert cells[2] == money(row["cost"])
    with admin.page.expect_download() as dl:
        admin.page.click("#csv-export")
    lines = list(csv.reader(io.StringIO(Path(dl.value.path()).read_text())))
    assert lines[0][:3] == ["Label: team", "Requests", "Spend (USD)"]
    assert [(r[0], r[2]) for r in lines[1:-1]] == [(r["group"]["label.team"], r["cost"]) for r in doc["data"]]
    assert lines[-1][2] == doc["totals"]["cost"]  # the totals row is the API's (each request once)


def test_explore_marks_overlapping_tag_rows_and_keeps_api_totals(admin: Session, dash: Gateway) -> None:
    admin.open(f"/dashboard/explore?{RANGE}&group=tag_level.1&metric=requests")
    doc = api(dash, f"/v1/analytics/usage?group_by=tag_level.1&{API_RANGE}")
    assert doc["overlapping"]
    assert admin.page.query_selector(".overlap-note")
    assert len(admin.page.query_selector_all("tr.overlap-row")) == len(doc["data"])
    summed = sum(r["requests"] for r in doc["data"])
    foot = admin.page.inner_text("table.data tfoot").split("\t")
    assert f"{doc['totals']['requests']:,}" in foot and summed > doc["totals"]["requests"]


def test_tag_tree_expands_level_by_level_with_the_api_figures(admin: Session, dash: Gateway) -> None:
    admin.open(PAGES["tree"])
    roots = api(dash, f"/v1/analytics/tags/tree?depth=1&{API_RANGE}")["data"]
    shown = [tr.get_attribute("data-tag") for tr in admin.page.query_selector_all("tr[data-tag]")]
    assert shown == [n["tag"] for n in roots]
    admin.page.click("tr[data-tag='team'] button.toggle")
    admin.page.wait_for_selector("tr[data-tag='team/growth']")
    admin.page.click("tr[data-tag='team/growth'] button.toggle")
    admin.page.wait_for_selector("tr[data-tag='team/growth/autocomplete']")
    node = api(dash, f"/v1/analytics/tags/tree?root=team/growth&depth=1&{API_RANGE}")["data"][0]
    for child in node["children"]:
        cells = admin.page.inner_text(f"tr[data-tag='{child['tag']}']").split("\t")
        assert money(child["cost"]) in cells and f"{child['requests']:,}" in cells
    assert admin.page.get_attribute("tr[data-tag='team/growth'] button.toggle", "aria-expanded") == "true"
    admin.page.click("tr[data-tag='team/growth'] a:has-text('Logs')")
    admin.rendered()
    assert "tag=team%2Fgrowth" in admin.page.url or "tag=team/growth" in admin.page.url
    tags = [t.inner_text() for t in admin.page.query_selector_all("td .tags-cell")]
    assert tags and all("team/growth" in t for t in tags)
    assert admin.errors == []


def test_created_key_secret_is_shown_once_works_and_revoking_stops_it(admin: Session, dash: Gateway) -> None:
    admin.open("/dashboard/keys")
    admin.page.click("#create-key")
    admin.page.fill("dialog input[name=name]", "made-in-browser")
    admin.page.fill("dialog textarea[name=labels]", "team=ui\nenv=test")
    admin.page.fill("dialog input[name=monthly_limit]", "12.5")
    admin.page.click("dialog button[type=submit]")
    secret = admin.page.input_value("#new-secret")
    assert secret.startswith("tg-")
    status, body = dash.get("/v1/key", key=secret)
    assert status == 200 and body["labels"] == {"team": "ui", "env": "test"} and body["monthly_limit"] == "12.5"
    admin.page.click("#secret-done")
    admin.rendered()
    admin.page.wait_for_selector("text=made-in-browser")
    assert secret not in admin.page.content()  # never shown again
    admin.page.click("button[aria-label='Revoke made-in-browser']")
    admin.page.click("#confirm-revoke")
    admin.rendered()
    admin.page.wait_for_selector("tr.revoked >> text=made-in-browser")
    status, body = dash.get("/v1/key", key=secret)
    assert status == 401 and body["error"]["code"] == "revoked_api_key"
    assert admin.errors == []


def test_changes_with_the_session_cookie_need_the_csrf_token(admin: Session, dash: Gateway) -> None:
    no_token = admin.fetch("POST", "/v1/manage/apikey", {"Content-Type": "application/json"}, {"name": "csrf"})
    assert no_token["status"] == 403 and no_token["body"]["error"]["code"] == "csrf_failed"
    wrong = admin.fetch("POST", "/v1/manage/apikey", {"Content-Type": "application/json", "X-CSRF-Token": "x"},
                        {"name": "csrf"})
    assert wrong["status"] == 403
    cookie = next(c["value"] for c in admin.context.cookies() if c["name"] == "tallygate_session")
    token = json.loads(dash.request("GET", "/v1/dashboard/session", key=None,
                                    headers={"Cookie": f"tallygate_session={cookie}"})[2])["csrf_token"]
    cross = dash.request("POST", "/v1/manage/apikey", b'{"name": "csrf"}', key=None, headers={
        "Cookie": f"tallygate_session={cookie}", "X-CSRF-Token": token, "Origin": "http://evil.example",
        "Content-Type": "application/json"})
    assert cross[0] == 403
    names = [k["name"] for k in api(dash, "/v1/manage/apikey?limit=500")["data"]]
    assert "csrf" not in names


def test_a_read_only_key_sees_everything_and_cannot_act(browser, dash: Gateway) -> None:  # type: ignore[no-untyped-def]
    reader = Session(browser, dash, dash.keys["reader"])  # type: ignore[attr-defined]
    try:
        reader.open("/dashboard/keys")
        assert reader.page.query_selector("#create-key") is None
        assert "read-only" in reader.page.inner_text("main")
        assert reader.page.query_selector("button[aria-label^='Revoke']") is None
        for path in PAGES.values():
            reader.open(path)
            assert not reader.page.query_selector("main .error")
        assert reader.errors == []
        key_id = api(dash, "/v1/manage/apikey?limit=500")["data"][0]["id"]
        token = reader.page.evaluate("fetch('/v1/dashboard/session').then(r => r.json()).then(d => d.csrf_token)")
        put = reader.fetch("PUT", f"/v1/manage/apikey/{key_id}", {"Content-Type": "application/json",
                                                                  "X-CSRF-Token": token}, {"name": "renamed"})
        assert put["status"] == 403 and put["body"]["error"]["code"] == "insufficient_permissions"
    finally:
        reader.close()


def test_a_completions_only_key_is_refused_with_a_clear_message(browser, dash: Gateway) -> None:  # type: ignore[no-untyped-def]
    s = Session(browser, dash, None)
    try:
        s.page.fill("#signin-key", dash.keys["completions"])  # type: ignore[attr-defined]
        s.page.click("button[type=submit]")
        s.page.wait_for_selector(".signin-error:has-text('no management permission')")
        assert s.context.cookies() == []
        s.page.fill("#signin-key", "tg-not-a-key")
        s.page.click("button[type=submit]")
        s.page.wait_for_selector(".signin-error:has-text('invalid API key')")
    finally:
        s.close()


def test_sign_out_ends_the_session(browser, dash: Gateway) -> None:  # type: ignore[no-untyped-def]
    s = Session(browser, dash, ADMIN_KEY)
    try:
        cookie = next(c["value"] for c in s.context.cookies() if c["name"] == "tallygate_session")
        s.page.click("#sign-out")
        s.page.wait_for_selector("#signin-key")
        assert [c for c in s.context.cookies() if c["name"] == "tallygate_session"] == []
        status, _, _ = dash.request("GET", "/v1/key", key=None, headers={"Cookie": f"tallygate_session={cookie}"})
        assert status == 401
    finally:
        s.close()


def test_log_detail_shows_the_record_as_the_api_has_it(admin: Session, dash: Gateway) -> None:
    admin.open(f"/dashboard/logs?{RANGE}&tag=production")
    admin.page.click("a.log-link")
    admin.page.wait_for_selector("#log-detail")
    rid = urllib.parse.parse_qs(urllib.parse.urlparse(admin.page.url).query)["id"][0]
    rec = api(dash, f"/v1/logs/{rid}")
    text = admin.page.inner_text("#log-detail")
    for expected in (rec["id"], money(rec["cost"]), rec["pricing_source"], "production", "team=search",
                     rec["attempts"][0]["provider"]):
        assert expected in text


def test_invoice_total_and_csv_are_the_export_apis(admin: Session, dash: Gateway) -> None:
    import datetime as dt

    month = dt.datetime.now(dt.UTC).strftime("%Y-%m")
    admin.open(f"/dashboard/invoices?month={month}&group=label.customer_id&markup=0.2")
    doc = api(dash, f"/v1/analytics/export?month={month}&group_by=label.customer_id&markup=0.2")
    assert admin.page.inner_text("#total-due") == money(doc["totals"]["amount_due"])
    assert len(admin.page.query_selector_all("table.data tbody tr")) == len(doc["lines"])
    with admin.page.expect_download() as dl:
        admin.page.click("#invoice-csv")
    _, _, expected = dash.request("GET", f"/v1/analytics/export?month={month}&group_by=label.customer_id"
                                  "&markup=0.2&format=csv")
    assert Path(dl.value.path()).read_bytes() == expected


def test_the_keyboard_alone_signs_in_moves_between_pages_and_closes_dialogs(browser, dash: Gateway) -> None:  # type: ignore[no-untyped-def]
    s = Session(browser, dash, None)
    try:
        page = s.page
        page.wait_for_selector("#signin-key:focus")  # the key field has the focus on arrival
        page.keyboard.type(ADMIN_KEY)
        page.keyboard.press("Enter")
        page.wait_for_selector("nav.sidebar")
        for _ in range(12):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.textContent") .endswith("Keys"):
                break
        page.keyboard.press("Enter")
        s.rendered()
        assert page.get_attribute("body", "data-rendered") == "keys"
        page.focus("#create-key")
        page.keyboard.press("Enter")
        page.wait_for_selector("dialog[open]")
        page.keyboard.press("Escape")
        page.wait_for_selector("dialog", state="detached")
        assert s.errors == []
    finally:
        s.close()


def test_logs_page_through_older_records_by_cursor(admin: Session, dash: Gateway) -> None:
    admin.open(f"/dashboard/logs?{RANGE}")
    first = admin.page.inner_text("table.data tbody tr:first-child")
    newest = api(dash, f"/v1/logs?limit=50&{API_RANGE}")
    assert newest["data"][0]["id"] in (admin.page.get_attribute("a.log-link", "href") or "")
    admin.page.click("#logs-next")
    admin.rendered()
    # A page may end early (a partial page, when its scan budget ran out), so the page boundary
    # is whatever cursor the dashboard was handed: ask the API for the page at that cursor.
    shown = urllib.parse.parse_qs(urllib.parse.urlsplit(admin.page.url).query)
    assert shown["cursor"][0]
    older = api(dash, f"/v1/logs?limit=50&{API_RANGE}&cursor={urllib.parse.quote(shown['cursor'][0])}")
    assert older["data"][0]["id"] in (admin.page.get_attribute("a.log-link", "href") or "")
    assert older["data"][0]["created_at"] <= newest["data"][0]["created_at"]
    assert admin.page.inner_text("table.data tbody tr:first-child") != first


def test_a_slow_question_says_so_instead_of_spinning(admin: Session) -> None:
    held: list = []
    admin.page.route("**/v1/analytics/usage?*", lambda route: held.append(route))  # hold the answers back
    admin.page.goto(admin.gw.url + PAGES["explore"])
    admin.page.wait_for_selector(".loading.slow:has-text('this question is slow')")
    for route in held:
        route.continue_()
    admin.page.unroute("**/v1/analytics/usage?*")
    admin.rendered()
    assert admin.page.query_selector("table.data tbody tr") is not None


def test_a_time_zone_in_the_url_reaches_every_question_and_labels_the_figures(admin: Session, dash: Gateway) -> None:
    asked: list[str] = []
    admin.page.on("request", lambda r: asked.append(r.url) if "/v1/analytics/" in r.url or "/v1/logs" in r.url
                  else None)
    admin.rendered()  # the page signing in landed on has asked all its questions (in UTC) first
    admin.page.wait_for_load_state("networkidle")
    for name, path in PAGES.items():
        if name == "keys":
            continue
        admin.page.wait_for_load_state("networkidle")
        asked.clear()
        admin.open(f"{path}{'&' if '?' in path else '?'}tz=Europe/Berlin")
        assert asked, name
        assert all(urllib.parse.parse_qs(urllib.parse.urlsplit(u).query).get("tz") == ["Europe/Berlin"]
                   for u in asked if "/v1/logs/" not in u), (name, asked)
        assert "europe/berlin" in admin.page.inner_text("main").lower(), name
        assert not admin.page.query_selector("main .error"), admin.page.inner_text("main .error")
    assert admin.errors == []


def test_explore_by_local_day_shows_the_apis_local_days(admin: Session, dash: Gateway) -> None:
    import datetime as dt
    from zoneinfo import ZoneInfo

    asked: list[str] = []
    admin.page.on("request", lambda r: asked.append(r.url) if "/v1/analytics/usage" in r.url else None)
    admin.open("/dashboard/explore?range=last-month&group=time.day&metric=requests&tz=Asia/Kolkata")
    query = urllib.parse.urlsplit(asked[-1]).query
    sent = urllib.parse.parse_qs(query)
    local_now = dt.datetime.now(ZoneInfo("Asia/Kolkata"))
    first = (local_now.replace(day=1) - dt.timedelta(days=1)).replace(day=1)
    assert sent["from"] == [first.strftime("%Y-%m-01T00:00:00")]  # local wall clock, read in tz by the API
    assert sent["to"] == [local_now.strftime("%Y-%m-01T00:00:00")] and sent["tz"] == ["Asia/Kolkata"]
    doc = api(dash, f"/v1/analytics/usage?{query}")
    start = int(dt.datetime(first.year, first.month, 1, tzinfo=ZoneInfo("Asia/Kolkata")).timestamp() * 1000)
    end = int(dt.datetime(local_now.year, local_now.month, 1, tzinfo=ZoneInfo("Asia/Kolkata")).timestamp() * 1000)
    assert doc["plan"]["timezone"] == "Asia/Kolkata" and (doc["from"], doc["to"]) == (start, end)
    ledger = [r for r in dash.ledger_rows() if start <= r["created_at"] < end]
    assert doc["totals"]["requests"] == len(ledger) > 0
    assert "time: day (asia/kolkata)" in admin.page.inner_text("table.data thead").lower()
    rows = admin.page.query_selector_all("table.data tbody tr")
    assert len(rows) == len(doc["data"])
    for tr, row in zip(rows, doc["data"], strict=True):
        cells = [td.inner_text() for td in tr.query_selector_all("td")]
        assert cells[0] == row["group"]["time.day"] and cells[1] == f"{row['requests']:,}"
    assert rows and rows[0].inner_text().startswith(first.strftime("%Y-%m-01"))


def test_a_budget_made_through_the_api_shows_its_spend_against_limit_as_the_api_has_it(admin: Session,
                                                                                        dash: Gateway) -> None:
    status, _, made = dash.post_json("/v1/manage/budget", {"name": "search-monthly", "monthly_limit": "0.75",
                                                           "scope": {"label": {"team": "search"}}})
    assert status == 201, made
    budget = api(dash, f"/v1/manage/budget/{made['id']}")
    assert Decimal(budget["monthly_spend"]) > 0  # this month's traffic of the search key
    spent, limit = budget["monthly_spend"], budget["monthly_limit"]
    expected = f"{money(spent)} of {money(limit)} ({float(spent) / float(limit) * 100:.1f} %)"
    for page in ("/dashboard/keys", "/dashboard/overview"):
        admin.open(page)
        row = admin.page.locator(f"tr:has([data-budget='{made['id']}'])")
        assert row.locator(".meter-text").inner_text() == expected, page
        now = float(row.locator("[role=meter]").get_attribute("aria-valuenow") or "nan")
        assert now == round(min(100.0, float(spent) / float(limit) * 100)), page
        width = row.locator(".meter-fill").get_attribute("style") or ""
        assert f"width:{min(100.0, float(spent) / float(limit) * 100):.1f}%" in width.replace(" ", ""), page
    admin.open("/dashboard/keys")
    assert "label team=search" in admin.page.locator(f"tr:has([data-budget='{made['id']}'])").inner_text()
    assert admin.errors == []


def test_a_refused_question_shows_the_apis_reason_instead_of_spinning(browser, tight: Gateway) -> None:  # type: ignore[no-untyped-def]
    s = Session(browser, tight, ADMIN_KEY)
    try:
        asked: list[str] = []
        s.page.on("request", lambda r: asked.append(r.url) if "/v1/analytics/usage" in r.url else None)
        s.open("/dashboard/explore?range=30d&group=tag&group2=tag_level.1")  # two tag dimensions: not in the grammar
        refusal = s.page.locator("main .refused")
        status, body = tight.get(f"/v1/analytics/usage?{urllib.parse.urlsplit(asked[-1]).query}")
        assert status == 400 and "group_by" in body["error"]["message"]
        assert refusal.inner_text() == f"The API refused this question. {body['error']['message']}"
        assert s.page.query_selector(".loading") is None and s.page.query_selector("canvas") is None
        assert len(s.page.query_selector_all("main [role=alert]")) == 1  # said once, where the figures go
        s.open("/dashboard/explore?range=30d&group=tag")  # the tag roll-ups answer the same range
        assert s.page.query_selector("main .refused") is None and s.page.query_selector("table.data tbody tr")
    finally:
        s.close()
