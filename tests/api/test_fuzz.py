"""Fuzzing (hypothesis) the proxy body, the tags and every query parameter of the logs, analytics
and key-listing routes, on SQLite and on PostgreSQL: never a 5xx, never an unhandled exception."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import standard_config
from tests.gateway import Gateway
from tests.postgres import postgres_server

FUZZ = settings(max_examples=120, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Any character, NUL and controls included; lone surrogates only where JSON can carry them.
# Random text mixed with the values that broke gateways before (Unicode digits, NUL, far years).
interesting = st.sampled_from(["", "\x00", "a\x00b", "²", "٣", "１２", "9999-12-31", "0001-01-01T00:00:00+23:59",
                               "-1", "%", "/", "a//b", "é", "\u202e", "9" * 20, "NaN", "inf", "1e400", " x "])
text = st.one_of(interesting, st.text(max_size=30))
json_text = st.text(st.characters(exclude_categories=()), max_size=30)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64) | st.floats(allow_nan=False)
    | json_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_text, inner, max_size=4), max_leaves=25)
tag = st.one_of(st.sampled_from(["team/a", "US/CA/SF", "a//b", "/x", "x/", " y", "é/ü"]), json_text)
message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant"]) | json_text,
                                 "content": json_value})
chat_body = st.fixed_dictionaries(
    {"model": st.sampled_from(["gpt-4o-mini", "claude", "local-llama", "policy/none", "fail-400"]) | json_text,
     "messages": st.lists(message, max_size=3) | json_value},
    optional={"request_tags": st.lists(tag, max_size=6) | json_value, "max_tokens": json_value,
              "max_completion_tokens": json_value, "n": json_value, "temperature": json_value,
              "stream": st.booleans() | json_value, "stream_options": json_value, "tools": json_value,
              "top_p": json_value})
embed_body = st.fixed_dictionaries({"model": st.sampled_from(["embed", "gpt-4o-mini"]) | json_text,
                                    "input": json_value}, optional={"request_tags": st.lists(tag, max_size=4)})
header_tags = st.none() | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)

time_value = st.one_of(st.sampled_from(["2026-01-01", "2026-01-01T00:00:00Z", "0001-01-01T00:00:00+23:59",
                                        "9999-12-31", "1700000000000", "²", "٣", "１２", "-1", "1e9", "",
                                        "2026-01-01T00:00:00+99:00", "999999999999999", "\x00"]),
                       st.integers(min_value=-(10**16), max_value=10**16).map(str))
dims = st.sampled_from(["key", "model", "served_model", "provider", "status", "tag", "tag_level.1",
                        "tag_level.9", "tag_level.²", "time.hour", "time.day", "time.month", "label.team",
                        "label.", "label.é", "nope"])
group_by = st.one_of(st.lists(dims, max_size=5).map(",".join), text)
valid_labels = st.lists(st.tuples(st.sampled_from(["label.team", "label.env"]), st.sampled_from(["fuzz", "a"])),
                        max_size=2)
hostile_label = st.tuples(st.one_of(st.sampled_from(["team", "env", "", "é"]), text).map(lambda k: "label." + k), text)
stray = st.tuples(text, text)


def _query(valid: dict[str, st.SearchStrategy], hostile: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """Valid values for any subset of the route's parameters and labels, then one parameter
    fuzzed (so that the fuzzed value gets past the checks of the others): a known one, a label
    filter, or a stray name."""
    named = st.sampled_from(sorted(hostile)).flatmap(lambda name: st.tuples(st.just(name), hostile[name]))
    return st.tuples(st.fixed_dictionaries({}, optional=valid), valid_labels,
                     st.one_of(named, named, named, hostile_label, stray))


TIMES = st.sampled_from(["2026-01-01", "2026-01-01T00:00:00Z", "1700000000000"])
LOGS_OK = {"tag": st.just("team/a"), "limit": st.just("10"), "from": TIMES, "model": st.just("gpt-4o-mini")}
LOGS = {"tag": tag, "key": text, "model": text, "status": st.integers().map(str) | text, "from": time_value,
        "to": time_value, "limit": st.integers(-5, 10**6).map(str) | text, "cursor": text}
USAGE_OK = {"group_by": st.sampled_from(["key", "tag_level.1,time.day", "label.team"]), "from": TIMES,
            "labels": st.just("current"), "limit": st.just("100")}
USAGE = {"group_by": group_by, "tag": tag, "key": text, "model": text, "from": time_value, "to": time_value,
         "labels": st.sampled_from(["recorded", "current", "x"]) | text, "limit": st.integers(-5, 10**7).map(str)}
MINUTES_OK = {"from": st.just("2026-01-01T00:00:00Z"), "to": st.just("2026-01-01T06:00:00Z")}
MINUTES = {"from": time_value, "to": time_value, "tz": text}
TREE_OK = {"depth": st.just("2"), "from": TIMES}
TREE = {"root": tag, "depth": st.integers(-3, 20).map(str) | text, "from": time_value, "to": time_value}
EXPORT_OK = {"month": st.just("2026-01"), "group_by": st.just("key"), "markup": st.just("0.2")}
EXPORT = {"month": st.sampled_from(["2026-01", "9999-12", "1969-12", "2026-13", "٢٠٢٦-٠١"]) | text,
          "group_by": group_by, "markup": st.sampled_from(["0.2", "-1", "1e400", "NaN", "0.1234567"]) | text,
          "format": st.sampled_from(["json", "csv"]) | text, "labels": text}
KEYS_OK = {"limit": st.just("5")}
KEYS = {"limit": st.integers(-5, 10**6).map(str) | text, "cursor": text}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gw(request, upstream, tmp_path_factory) -> Iterator[Gateway]:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        g = Gateway(tmp_path_factory.mktemp("fuzz"), standard_config(upstream)).start()
        yield g
        g.stop()
    else:
        with postgres_server() as url:
            g = Gateway(tmp_path_factory.mktemp("fuzz-pg"), standard_config(upstream), env={"TALLYGATE_DB_URL": url})
            g.db_url = url
            g.start()
            yield g
            g.stop()
    log = g.log()
    for sign in ("Traceback", "failed unexpectedly", "Exception in ASGI", "refused ledger record"):
        assert sign not in log, log[log.find(sign) - 2000:log.find(sign) + 3000]


@pytest.fixture(scope="module")
def limited_key(gw: Gateway) -> str:
    status, _, rec = gw.post_json("/v1/manage/apikey", {"name": "fuzz", "monthly_limit": "1000",
                                                        "labels": {"team": "fuzz"}})
    assert status == 201
    return rec["key"]


def _send(gw: Gateway, path: str, payload: object, key: str, tags: str | None) -> None:
    headers = {"Content-Type": "application/json"}
    if tags is not None:
        headers["X-Request-Tags"] = tags
    status, _, body = gw.request("POST", path, json.dumps(payload).encode(), key, headers)
    assert status < 500 or body and json.loads(body)["error"]["type"] == "upstream_error", (status, body[:500])


@FUZZ
@given(body=chat_body, tags=header_tags)
def test_fuzzed_chat_bodies_and_tags_never_get_a_5xx(gw: Gateway, limited_key: str, body: dict,
                                                     tags: str | None) -> None:
    _send(gw, "/v1/chat/completions", body, limited_key, tags)


@FUZZ
@given(body=embed_body, tags=header_tags)
def test_fuzzed_embedding_bodies_never_get_a_5xx(gw: Gateway, limited_key: str, body: dict, tags: str | None) -> None:
    _send(gw, "/v1/embeddings", body, limited_key, tags)


@pytest.mark.parametrize("path, valid, hostile", [
    ("/v1/logs", LOGS_OK, LOGS), ("/v1/analytics/usage", USAGE_OK, USAGE), ("/v1/analytics/tags/tree", TREE_OK, TREE),
    ("/v1/analytics/export", EXPORT_OK, EXPORT), ("/v1/manage/apikey", KEYS_OK, KEYS),
    ("/v1/analytics/minutes", MINUTES_OK, MINUTES),
], ids=["logs", "usage", "tree", "export", "keys", "minutes"])
def test_fuzzed_query_parameters_never_get_a_5xx(gw: Gateway, path: str, valid: dict, hostile: dict) -> None:
    @FUZZ
    @given(query=_query(valid, hostile))
    def run(query: tuple) -> None:  # type: ignore[type-arg]
        params, labels, (name, value) = query
        qs = urlencode([*{**params, name: value}.items(), *labels])
        status, _, body = gw.request("GET", f"{path}?{qs}")
        assert status < 500, (path, qs, body[:500])
        if status >= 400:
            assert set(json.loads(body)["error"]) == {"message", "type", "param", "code"}

    run()


@FUZZ
@given(key_id=text, request_id=text)
def test_fuzzed_ids_in_paths_never_get_a_5xx(gw: Gateway, key_id: str, request_id: str) -> None:
    for path in (f"/v1/manage/apikey/{quote(key_id, safe='')}", f"/v1/logs/{quote(request_id, safe='')}"):
        status, _, body = gw.request("GET", path)
        assert status < 500, (path, body[:300])
