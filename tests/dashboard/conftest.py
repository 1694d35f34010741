"""A gateway with a little traffic (labelled keys, tags, several models) and Debian's Chromium.

Without Chromium or the built dashboard the browser tests skip, except under CI=true, where
they fail: `make test` installs Chromium and builds the dashboard first.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tallygate.dashboard import built
from tests.conftest import standard_config
from tests.dashboard.browser import chromium_path, launch
from tests.fakes.upstream import FakeUpstream
from tests.gateway import ADMIN_KEY, Gateway

GENERATOR = Path(__file__).resolve().parents[2] / "bench" / "gen_ledger.py"
TRAFFIC = [  # (key, model, tags) sent through the gateway
    ("growth", "gpt-4o-mini", ["team/growth/autocomplete", "US/California/SF"]),
    ("growth", "gpt-4o-mini", ["team/growth/autocomplete"]),
    ("growth", "claude", ["team/growth/emails", "US/NYC"]),
    ("growth", "local-llama", ["team/growth/recs"]),
    ("search", "gpt-4o-mini", ["team/search/ranking", "US/California/LA"]),
    ("search", "claude", ["team/search/answers"]),
    ("search", "priced", ["team/search/answers", "production"]),
    ("search", "local-llama", []),
    ("search", "fail-429", ["team/search/ranking"]),
]


def _history(gw: Gateway, workdir: Path) -> None:
    """Last month's history from the project's ledger generator, so pages (and screenshots) have depth."""
    today = dt.datetime.now(dt.UTC)
    last_month = (today.replace(day=1) - dt.timedelta(days=1)).strftime("%Y-%m")
    out = subprocess.run([sys.executable, str(GENERATOR), "--db", gw.db_url, "--records", "20000", "--keys", "24",
                          "--month", last_month, "--templates", "5000"], capture_output=True, text=True,
                         timeout=120, cwd=workdir)
    assert out.returncode == 0, out.stderr


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (CI=true: the browser tests must run; `make test` provides it)")
    pytest.skip(what)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Module-scoped: Playwright's sync API runs an event loop in this thread until it is closed."""
    if chromium_path() is None:
        _missing("Debian's chromium is not installed (apt-get install chromium)")
    if not built():
        _missing("the dashboard is not built (make dashboard)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright for Python is not installed")
    with sync_playwright() as pw:
        b = launch(pw)
        yield b
        b.close()


@pytest.fixture(scope="module")
def dash(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway with traffic from two labelled keys; `dash.keys` holds their secrets by role."""
    import openai

    workdir = tmp_path_factory.mktemp("dash")
    gw = Gateway(workdir, standard_config(upstream))
    _history(gw, workdir)
    gw.start()
    secrets = {}
    for team, extra in (("growth", {"customer_id": "cus_1"}), ("search", {"customer_id": "cus_2"})):
        status, _, body = gw.post_json("/v1/manage/apikey", {"name": f"{team}-prod", "monthly_limit": "50",
                                                             "labels": {"team": team, "env": "prod", **extra}})
        assert status == 201, body
        secrets[team] = body["key"]
    for role, manage, completions in (("reader", "read", "none"), ("completions", "none", "write")):
        status, _, body = gw.post_json("/v1/manage/apikey", {"name": f"{role}-key", "permissions": {
            "manage": manage, "completions": completions}})
        assert status == 201, body
        secrets[role] = body["key"]
    last = None
    for team, model, tags in TRAFFIC:
        with openai.OpenAI(base_url=gw.base_url, api_key=secrets[team], max_retries=0, timeout=10) as c:
            try:
                last = c.chat.completions.with_raw_response.create(
                    model=model, messages=[{"role": "user", "content": f"hello from {team}"}],
                    extra_body={"request_tags": tags}).headers["x-request-id"]
            except openai.APIStatusError as err:
                last = err.response.headers.get("x-request-id")
    gw.log_record(last)
    gw.keys = secrets  # type: ignore[attr-defined]
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def tight(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway with ten tagged requests, for questions the API refuses."""
    import openai

    gw = Gateway(tmp_path_factory.mktemp("tight"), standard_config(upstream)).start()
    key = gw.create_key("tight", team="tight")
    with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=10) as c:
        for i in range(10):
            last = c.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                extra_body={"request_tags": [f"team/t{i % 3}"]}).headers["x-request-id"]
    gw.log_record(last)
    yield gw
    gw.stop()


__all__ = ["ADMIN_KEY"]
