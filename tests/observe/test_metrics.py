"""Prometheus `/metrics`: parses with the Prometheus text parser, counts what happened, and its
series stay bounded when clients invent model names and tags."""

from __future__ import annotations

import random
import string
import time
import urllib.request
from collections.abc import Iterator

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway import Gateway, InProcessGateway

HELLO = [{"role": "user", "content": "hello metrics"}]


@pytest.fixture(scope="module")
def gateway(upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:  # type: ignore[no-untyped-def]
    from tests.conftest import standard_config

    config = standard_config(upstream)
    config["metrics"] = {"key_labels": ["team"]}
    gw = InProcessGateway(tmp_path_factory.mktemp("gw"), config).start()
    yield gw
    gw.stop()


def scrape(gateway: Gateway) -> dict[str, list]:
    with urllib.request.urlopen(gateway.url + "/metrics", timeout=10) as resp:
        assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def scrape_until(gateway: Gateway, done, timeout: float = 5.0) -> dict[str, list]:  # type: ignore[no-untyped-def]
    """A scrape that shows `done` (the last request reaches the observers just after its answer)."""
    deadline = time.monotonic() + timeout
    while True:
        m = scrape(gateway)
        if done(m) or time.monotonic() > deadline:
            return m
        time.sleep(0.02)


def _value(samples: list, name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_count_requests_tokens_cost_latency_and_budget(gateway: Gateway) -> None:
    status, _, rec = gateway.post_json("/v1/manage/apikey", {"name": "metered", "monthly_limit": "5",
                                                             "labels": {"team": "growth"}})
    assert status == 201
    with openai.OpenAI(base_url=gateway.base_url, api_key=rec["key"], max_retries=0) as client:
        for _ in range(3):
            client.chat.completions.create(model="priced", messages=HELLO)
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="fail-500", messages=HELLO)
    m = scrape_until(gateway, lambda m: _value(m["tallygate_requests"], "tallygate_requests_total",
                                               model="fail-500") == 1)
    requests = m["tallygate_requests"]
    assert _value(requests, "tallygate_requests_total", model="priced", status="2xx", team="growth") == 3
    assert _value(requests, "tallygate_requests_total", model="fail-500", status="5xx", provider="openai") == 1
    assert _value(m["tallygate_tokens"], "tallygate_tokens_total", model="priced", type="input") > 0
    assert _value(m["tallygate_cost_usd"], "tallygate_cost_usd_total", model="priced") > 0
    assert _value(m["tallygate_request_duration_seconds"], "tallygate_request_duration_seconds_count",
                  model="priced") == 3
    assert _value(m["tallygate_upstream_attempts"], "tallygate_upstream_attempts_total", status="5xx") >= 1
    remaining = _value(m["tallygate_budget_remaining_usd"], "tallygate_budget_remaining_usd", scope="metered")
    assert 0 < remaining < 5
    assert "tallygate_ledger_backlog" in m and "tallygate_ledger_write_seconds" in m


def _series(m: dict[str, list]) -> int:
    return sum(len(samples) for samples in m.values())


def test_invented_models_and_tags_do_not_create_series(gateway: Gateway, api_key: str) -> None:
    rng = random.Random(7)

    def word() -> str:
        return "".join(rng.choices(string.ascii_lowercase, k=12))

    with openai.OpenAI(base_url=gateway.base_url, api_key=api_key, max_retries=0) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, extra_body={"request_tags": ["a/b"]})
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model=word(), messages=HELLO)
        before = scrape_until(gateway, lambda m: _value(m["tallygate_requests"], "tallygate_requests_total",
                                                        model="other") >= 1)
        for _ in range(500):
            with pytest.raises(openai.APIStatusError):
                client.chat.completions.create(model=word(), messages=HELLO)
            client.chat.completions.create(model="gpt-4o-mini", messages=HELLO,
                                           extra_body={"request_tags": [f"{word()}/{word()}"]})
    after = scrape_until(gateway, lambda m: _value(m["tallygate_requests"], "tallygate_requests_total",
                                                   model="other") >= 501)
    assert _series(after) == _series(before)
    assert _value(after["tallygate_requests"], "tallygate_requests_total", model="other") >= 501
    labels = {v for samples in after.values() for s in samples for v in s.labels.values()}
    assert not any("/" in v or len(v) == 12 for v in labels - {"gpt-4o-mini", "text-embedding-3-small"})


def test_multiprocess_mode_sums_the_files_of_the_workers(upstream, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With PROMETHEUS_MULTIPROC_DIR the values live in per-process files, summed at scrape time;
    files left by an earlier run are cleared at start."""
    from tests.conftest import standard_config

    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale")  # an earlier run's file
    gw = Gateway(tmp_path, standard_config(upstream), env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}).start()
    try:
        key = gw.create_key("mp", team="growth")
        with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0) as client:
            for _ in range(4):
                client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        m = scrape_until(gw, lambda m: _value(m["tallygate_requests"], "tallygate_requests_total",
                                              model="gpt-4o-mini") == 4)
        assert _value(m["tallygate_requests"], "tallygate_requests_total", model="gpt-4o-mini") == 4
        assert any(p.name.startswith("counter_") and p.name != "counter_999999.db" for p in metrics_dir.iterdir())
        assert not (metrics_dir / "counter_999999.db").exists()
    finally:
        gw.stop()


def test_wrong_metrics_tokens_are_throttled_per_address_and_the_right_one_is_not(upstream, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import standard_config

    config = standard_config(upstream)
    config["metrics"] = {"bearer_token": "scrape-secret"}
    gw = InProcessGateway(tmp_path, config).start()
    try:
        statuses = [gw.request("GET", "/metrics", key=f"wrong-{i}")[0] for i in range(12)]
        assert statuses == [401] * 10 + [429] * 2
        status, headers, _ = gw.request("GET", "/metrics", key="wrong")
        assert status == 429 and int(headers["retry-after"]) >= 1
        assert gw.request("GET", "/metrics", key="scrape-secret")[0] == 200
    finally:
        gw.stop()
