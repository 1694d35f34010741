"""Bad input gets an OpenAI-shaped error naming the problem, keeps its ledger record, and the
gateway keeps serving."""

from __future__ import annotations

import json

import openai
import pytest

from tests.gateway import Gateway

HELLO = [{"role": "user", "content": "hi"}]


def _error(body: bytes) -> dict:
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


def _assert_recorded(gateway: Gateway, headers: dict[str, str], status: int) -> dict:
    record = gateway.log_record(headers["x-request-id"])
    assert record["status"] == status
    assert record["error"]["message"]
    return record


def test_malformed_json(gateway: Gateway, api_key: str) -> None:
    status, headers, body = gateway.request("POST", "/v1/chat/completions", b'{"model": "gpt-4o-mini",',
                                            api_key, {"Content-Type": "application/json"})
    assert status == 400
    assert "not valid JSON" in _error(body)["message"]
    _assert_recorded(gateway, headers, 400)


def test_body_that_is_not_an_object(gateway: Gateway, api_key: str) -> None:
    status, _, body = gateway.request("POST", "/v1/chat/completions", b"[1, 2]", api_key,
                                      {"Content-Type": "application/json"})
    assert status == 400 and "JSON object" in _error(body)["message"]


def test_wrong_content_type(gateway: Gateway, api_key: str) -> None:
    status, headers, body = gateway.request("POST", "/v1/chat/completions", b"model=gpt-4o-mini", api_key,
                                            {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and "Content-Type" in _error(body)["message"]
    _assert_recorded(gateway, headers, 400)


def test_body_over_the_size_limit_is_413(gateway: Gateway, api_key: str) -> None:
    big = json.dumps({"model": "gpt-4o-mini",
                      "messages": [{"role": "user", "content": "x" * (4 * 1024 * 1024 + 10)}]})
    status, headers, body = gateway.request("POST", "/v1/chat/completions", big.encode(), api_key,
                                            {"Content-Type": "application/json"})
    assert status == 413 and _error(body)["code"] == "payload_too_large"
    _assert_recorded(gateway, headers, 413)


def test_unknown_model_is_404_naming_it(client: openai.OpenAI, gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    err = exc.value.body
    assert err["param"] == "model" and "no-such-model" in err["message"]
    record = gateway.log_record(exc.value.response.headers["x-request-id"])
    assert record["requested_model"] == "no-such-model" and record["status"] == 404


def test_missing_messages_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="gpt-4o-mini", messages=[])
    assert exc.value.body["param"] == "messages"


@pytest.mark.parametrize("tags, named", [
    ("production", "request_tags must be an array"),
    ([1], "request_tags[0] must be a string"),
    ([""], "request_tags[0] is empty"),
    (["team//x"], "request_tags[0] 'team//x' has an empty segment"),
    (["/team"], "request_tags[0] '/team' has an empty segment"),
    (["team/"], "request_tags[0] 'team/' has an empty segment"),
    (["ok", "bad\tx"], "request_tags[1] 'bad\\tx' contains a control"),
    (["a\x85b"], "contains a control"),
    (["right\u202eto-left"], "invisible formatting character"),
    (["zero\u200bwidth"], "invisible formatting character"),
    (["t" * 300], "longer than 256 characters"),
    (["/".join("abcdefghi")], "more than 8 levels"),
    ([f"t{i}" for i in range(33)], "at most 32 are allowed"),
    (["team / x"], "leading or trailing whitespace"),
])
def test_each_kind_of_bad_tag_is_named(client: openai.OpenAI, gateway: Gateway, tags: object,
                                       named: str) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO,
                                       extra_body={"request_tags": tags})
    assert named in exc.value.body["message"]
    assert exc.value.body["param"] == "request_tags"
    record = gateway.log_record(exc.value.response.headers["x-request-id"])
    assert record["status"] == 400 and record["tags"] == []


def test_bad_tag_in_header_is_named(gateway: Gateway, api_key: str) -> None:
    status, _, body = gateway.post_json("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO},
                                        key=api_key, headers={"X-Request-Tags": "ok,team//x"})
    assert status == 400 and "X-Request-Tags item 1" in body["error"]["message"]


def test_raw_utf8_in_tags_header_is_refused_not_mangled(gateway: Gateway, api_key: str) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
    conn.putrequest("POST", "/v1/chat/completions")
    for name, value in (("Authorization", f"Bearer {api_key}"), ("Content-Type", "application/json"),
                        ("Content-Length", str(len(body)))):
        conn.putheader(name, value)
    conn.putheader("X-Request-Tags", "café".encode())
    conn.endheaders(body)
    resp = conn.getresponse()
    assert resp.status == 400 and b"percent-encode" in resp.read()
    conn.close()


def test_duplicate_tags_are_collapsed_not_refused(client: openai.OpenAI, gateway: Gateway) -> None:
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO,
                                                extra_body={"request_tags": ["a/b", "a/b", "c"]})
    assert gateway.log_record(completion.id)["tags"] == ["a/b", "c"]


@pytest.mark.parametrize("key, message", [
    (None, "missing API key"),
    ("tg-not-a-real-key-at-all-0000000000000000000000", "invalid API key"),
])
def test_missing_or_invalid_key_is_401(gateway: Gateway, key: str | None, message: str) -> None:
    status, _, body = gateway.post_json("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO},
                                        key=key)
    assert status == 401 and message in body["error"]["message"]
    assert body["error"]["type"] == "authentication_error"


def test_revoked_key_stops_working_and_keeps_history(gateway: Gateway) -> None:
    import time

    key = gateway.create_key("short-lived", team="ops")
    with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0) as c:
        done = c.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        key_id = gateway.log_record(done.id)["key"]["id"]
        assert gateway.cli("keys", "revoke", key_id).returncode == 0
        deadline = time.monotonic() + 5
        while True:  # the CLI is another process: the gateway picks the change up within ~1 s
            try:
                c.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
            except openai.AuthenticationError as exc:
                assert "revoked" in exc.body["message"]
                break
            assert time.monotonic() < deadline, "revoked key still accepted after 5 s"
            time.sleep(0.1)
    assert gateway.log_record(done.id)["status"] == 200


def test_gateway_still_serves_after_all_of_that(client: openai.OpenAI) -> None:
    assert client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).choices


@pytest.mark.parametrize("model", [None, 42, ""])
def test_model_that_is_not_a_string_is_400(gateway: Gateway, api_key: str, model: object) -> None:
    status, _, body = gateway.post_json("/v1/chat/completions", {"model": model, "messages": HELLO},
                                        key=api_key)
    assert status == 400 and body["error"]["param"] == "model"


@pytest.mark.parametrize("raw", [b"\xff\xfe{}", b'{"model": "gpt-4o-mini", "messages": ' + b"[" * 5000,
                                 b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": 1e999}]}'])
def test_hostile_bodies_get_400_not_a_crash(gateway: Gateway, api_key: str, raw: bytes) -> None:
    status, _, body = gateway.request("POST", "/v1/chat/completions", raw, api_key,
                                      {"Content-Type": "application/json"})
    assert status == 400 and _error(body)["type"] == "invalid_request_error"


@pytest.mark.parametrize("extra, param", [
    ({"messages": [1]}, "messages[0]"),
    ({"messages": [{"content": "no role"}]}, "messages[0].role"),
    ({"max_tokens": "100"}, "max_tokens"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"n": "2"}, "n"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": 3}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"stream": "yes"}, "stream"),
    ({"stream_options": []}, "stream_options"),
])
def test_wrong_types_for_common_fields_are_400_naming_them(gateway: Gateway, api_key: str, extra: dict,
                                                          param: str) -> None:
    body = {"model": "gpt-4o-mini", "messages": HELLO, **extra}
    status, _, out = gateway.post_json("/v1/chat/completions", body, key=api_key)
    assert status == 400 and out["error"]["param"] == param


@pytest.mark.parametrize("value", [None, 5, [], [None], ["a", 1], [[]]])
def test_bad_embeddings_input_is_400(gateway: Gateway, api_key: str, value: object) -> None:
    status, _, out = gateway.post_json("/v1/embeddings", {"model": "embed", "input": value}, key=api_key)
    assert status == 400 and out["error"]["param"] == "input"
