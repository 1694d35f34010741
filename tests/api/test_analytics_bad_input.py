"""Bad analytics questions are 400s (404s) that name the problem, never 500s or silent widening."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.gateway import Gateway

BAD = [
    ("/v1/analytics/usage?group_by=colour", "group_by", "unknown dimension 'colour'"),
    ("/v1/analytics/usage?group_by=label.", "group_by", "unknown dimension"),
    ("/v1/analytics/usage?group_by=tag_level.0", "group_by", "unknown dimension"),
    ("/v1/analytics/usage?group_by=tag_level.9", "group_by", "unknown dimension"),
    ("/v1/analytics/usage?group_by=time.week", "group_by", "unknown dimension"),
    ("/v1/analytics/usage?group_by=model,model", "group_by", "twice"),
    ("/v1/analytics/usage?group_by=tag,tag_level.2", "group_by", "one of tag"),
    ("/v1/analytics/usage?group_by=time.day,time.hour", "group_by", "one time dimension"),
    ("/v1/analytics/usage?group_by=tag_level.1&tag=a/b", "group_by", "above the tag filter"),
    ("/v1/analytics/usage?from=yesterday", "from", "ISO 8601"),
    ("/v1/analytics/usage?to=2026-02-30", "to", "ISO 8601"),
    ("/v1/analytics/usage?from=2026-02-01&to=2026-01-01", "from", "from is after to"),
    ("/v1/analytics/usage?labels=later", "labels", "'recorded' or 'current'"),
    ("/v1/analytics/usage?tag=" + quote("a//b"), "tag", "empty segment"),
    ("/v1/analytics/usage?groupby=model", "groupby", "unknown query parameter"),
    ("/v1/analytics/usage?label.=x", "label.", "label.<name>"),
    ("/v1/analytics/usage?limit=0", "limit", ""),
    ("/v1/analytics/tags/tree?root=" + quote("/x"), "root", "empty segment"),
    ("/v1/analytics/tags/tree?depth=-1", "depth", ""),
    ("/v1/analytics/tags/tree?tag=x", "tag", "unknown query parameter"),
    ("/v1/logs?servedmodel=gpt-4o", "servedmodel", "unknown query parameter"),  # not silently all records
    ("/v1/logs?labels.team=x", "labels.team", "unknown query parameter"),
    ("/v1/analytics/export", "month", ""),
    ("/v1/analytics/export?month=2026-13", "month", "not a month"),
    ("/v1/analytics/export?month=26-11", "month", "YYYY-MM"),
    ("/v1/analytics/export?month=2026-11&markup=-0.1", "markup", "between 0 and 10"),
    ("/v1/analytics/export?month=2026-11&markup=twenty", "markup", "decimal rate"),
    ("/v1/analytics/export?month=2026-11&markup=0.1234567", "markup", "6 decimal places"),
    ("/v1/analytics/export?month=2026-11&markup=NaN", "markup", "between 0 and 10"),
    ("/v1/analytics/export?month=2026-11&format=xml", "format", "'json' or 'csv'"),
    ("/v1/analytics/export?month=2026-11&group_by=tag", "group_by", "do not overlap"),
    ("/v1/analytics/export?month=2026-11&group_by=time.day", "group_by", "one month"),
]


@pytest.mark.parametrize(("path", "param", "words"), BAD)
def test_bad_analytics_input_is_a_400_naming_the_parameter(gateway: Gateway, path: str, param: str,
                                                           words: str) -> None:
    status, body = gateway.get(path)
    assert status == 400, body
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == param
    assert words in body["error"]["message"]


def test_analytics_needs_a_key_that_may_read_management_data(gateway: Gateway, api_key: str) -> None:
    assert gateway.get("/v1/analytics/usage", key=api_key)[0] == 403  # a completions-only key
    assert gateway.get("/v1/analytics/tags/tree", key=None)[0] == 401
    status, body = gateway.get("/v1/analytics/usage?group_by=tag&key=nope&model=nope")
    assert status == 200 and body["data"] == [] and body["totals"]["requests"] == 0
