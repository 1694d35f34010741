"""HEAD is GET without the body (RFC 9110: a general-purpose server supports both), so uptime
monitors and load balancers that probe with HEAD see the status and headers a GET would get."""

from __future__ import annotations

import pytest

from tests.gateway import Gateway


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/v1/models", "/v1/models/gpt-4o-mini", "/v1/key",
                                  "/v1/manage/apikey", "/v1/analytics/usage"])
def test_head_answers_what_get_answers_without_the_body(gateway: Gateway, path: str) -> None:
    status, headers, body = gateway.request("GET", path)
    head_status, head_headers, head_body = gateway.request("HEAD", path)
    assert (head_status, head_body) == (status, b""), head_headers
    assert head_headers["content-type"] == headers["content-type"]
    assert head_headers.get("content-length") in (None, str(len(body)))

