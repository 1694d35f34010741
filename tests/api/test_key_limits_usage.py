"""`GET /v1/manage/ratelimit/usage`: the rate limits on each key of a page with what each counts
in its window now, and each key's refusals (402 and 429) in the last hour, as the ledger has them;
the same two queries whatever the number of keys (no query per key)."""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Iterator

import openai
import pytest
from sqlalchemy import event

from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import InProcessGateway

HELLO = [{"role": "user", "content": "hello usage"}]


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    gw = InProcessGateway(tmp_path_factory.mktemp("rl-usage"), standard_config(upstream)).start()
    yield gw
    gw.stop()


def _post(gw: InProcessGateway, path: str, body: dict) -> dict:
    status, _, out = gw.post_json(path, body)
    assert status == 201, out
    return out


def _usage(gw: InProcessGateway, *key_ids: str) -> dict:
    status, body = gw.get("/v1/manage/ratelimit/usage?" + urllib.parse.urlencode([("key", k) for k in key_ids]))
    assert status == 200, body
    return body


def _chat(client: openai.OpenAI, model: str = "gpt-4o-mini", max_tokens: int = 20) -> int:
    try:
        client.chat.completions.create(model=model, messages=HELLO, max_tokens=max_tokens)  # type: ignore[arg-type]
        return 200
    except openai.APIStatusError as err:
        return err.status_code


def test_usage_counts_each_limits_window_and_the_ledgers_refusals(gateway: InProcessGateway) -> None:
    own = _post(gateway, "/v1/manage/apikey", {"name": "u-own", "labels": {"squad": "u1"}, "monthly_limit": "0.05"})
    mate = _post(gateway, "/v1/manage/apikey", {"name": "u-mate", "labels": {"squad": "u1"}})
    alone = _post(gateway, "/v1/manage/apikey", {"name": "u-alone"})
    key_limit = _post(gateway, "/v1/manage/ratelimit", {"name": "u-own-rpm", "scope": {"key": own["id"]},
                                                        "requests_per_minute": 3, "tokens_per_minute": 100_000})
    group = _post(gateway, "/v1/manage/ratelimit", {"name": "u-squad", "scope": {"label": {"squad": "u1"}},
                                                    "requests_per_minute": 50, "max_concurrent": 4})
    _post(gateway, "/v1/manage/ratelimit", {"name": "u-model", "scope": {"model": "claude"}, "requests_per_minute": 9})
    with openai.OpenAI(base_url=gateway.base_url, api_key=own["key"], max_retries=0) as client:
        statuses = [_chat(client) for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    with openai.OpenAI(base_url=gateway.base_url, api_key=mate["key"], max_retries=0) as client:
        assert _chat(client) == 200 and _chat(client, "priced", 10) == 200
    # A 402: a key whose own limit cannot cover the worst case of a priced request.
    poor = _post(gateway, "/v1/manage/apikey", {"name": "u-poor", "labels": {"squad": "u1"}, "monthly_limit": "0.001"})
    with openai.OpenAI(base_url=gateway.base_url, api_key=poor["key"], max_retries=0) as client:
        assert _chat(client, "priced", 1000) == 402

    deadline = time.monotonic() + 5
    while True:  # the ledger writer is batched
        doc = _usage(gateway, own["id"], mate["id"], alone["id"], poor["id"], "no-such-key")
        refused = {k["id"]: k["refusals_last_hour"] for k in doc["keys"]}
        if refused[own["id"]]["rate_limit_exceeded"] == 2 and refused[poor["id"]]["budget_exceeded"] == 1:
            break
        assert time.monotonic() < deadline, doc
        time.sleep(0.05)
    assert doc["object"] == "ratelimit.usage" and doc["counted_by"] == "process" and doc["window_s"] == 60
    assert [k["id"] for k in doc["keys"]] == [own["id"], mate["id"], alone["id"], poor["id"]]  # unknown left out
    bound = {k["id"]: k["rate_limits"] for k in doc["keys"]}
    assert bound == {own["id"]: [key_limit["id"], group["id"]], mate["id"]: [group["id"]], alone["id"]: [],
                     poor["id"]: [group["id"]]}  # the model limit binds requests, not keys: not listed
    assert refused[own["id"]] == {"budget_exceeded": 0, "rate_limit_exceeded": 2}
    assert refused[mate["id"]] == {"budget_exceeded": 0, "rate_limit_exceeded": 0}
    assert refused[poor["id"]] == {"budget_exceeded": 1, "rate_limit_exceeded": 0}
    limits = {x["id"]: x for x in doc["limits"]}
    assert set(limits) == {key_limit["id"], group["id"]}
    assert limits[key_limit["id"]]["usage"]["requests"] == 3  # the refused two count against nothing
    assert 0 < limits[key_limit["id"]]["usage"]["tokens"] < 3 * 100  # settled to the few tokens used
    # the group: own's three and mate's two; the 402 was admitted by the rate limits, then taken out
    usage = limits[group["id"]]["usage"]
    assert (usage["requests"], usage["tokens"], usage["in_flight"]) == (5, 0, 0)
    assert limits[group["id"]]["max_concurrent"] == 4 and limits[group["id"]]["requests_per_minute"] == 50


def test_a_slot_in_flight_shows_while_the_request_runs(gateway: InProcessGateway) -> None:
    key = _post(gateway, "/v1/manage/apikey", {"name": "u-slow"})
    limit = _post(gateway, "/v1/manage/ratelimit", {"name": "u-slow", "scope": {"key": key["id"]}, "max_concurrent": 2})
    done = threading.Event()

    def slow() -> None:
        with openai.OpenAI(base_url=gateway.base_url, api_key=key["key"], max_retries=0, timeout=10) as client:
            _chat(client, "priced-slow", 10)
        done.set()

    thread = threading.Thread(target=slow)
    thread.start()
    seen = []
    while not done.is_set():
        seen.append(_usage(gateway, key["id"])["limits"][0]["usage"]["in_flight"])
        time.sleep(0.02)
    thread.join()
    assert 1 in seen, seen  # while the 0.4 s request ran
    assert _usage(gateway, key["id"])["limits"][0]["usage"]["in_flight"] == 0
    assert limit["max_concurrent"] == 2


def test_the_queries_do_not_grow_with_the_number_of_keys(gateway: InProcessGateway) -> None:
    """Two statements (the keys, their refusals) for one key or three hundred: no query per key."""
    ids = []
    for i in range(300):
        key = _post(gateway, "/v1/manage/apikey", {"name": f"u-many-{i}", "labels": {"squad": "many"}})
        ids.append(key["id"])
        if i % 3 == 0:
            _post(gateway, "/v1/manage/ratelimit", {"name": f"u-many-{i}", "scope": {"key": key["id"]},
                                                    "requests_per_minute": 100})
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    def fewest(*key_ids: str) -> tuple[int, dict]:
        """The statements of one call, the fewest of three: the gateway's refreshers (keys,
        budgets, rate limits, each second) and its ledger writer share the engine."""
        counts = []
        for _ in range(3):
            statements.clear()
            doc = _usage(gateway, *key_ids)
            counts.append(len(statements))
        return min(counts), doc

    engine = gateway.app.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        n_one, one = fewest(ids[0])
        n_many, many = fewest(*ids)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(one["keys"]) == 1 and len(many["keys"]) == 300 and len(many["limits"]) == 100
    assert n_many == n_one == 2, (n_one, n_many)


def test_the_key_list_is_required_and_bounded(gateway: InProcessGateway) -> None:
    status, body = gateway.get("/v1/manage/ratelimit/usage")
    assert status == 400 and body["error"]["param"] == "key"
    status, body = gateway.get("/v1/manage/ratelimit/usage?" + "&".join(f"key=k{i}" for i in range(501)))
    assert status == 400 and body["error"]["param"] == "key"
