"""`POST /v1/feedback`: one score per request (the last one counts), on the log record and in
usage analytics, so quality can be grouped like cost."""

from __future__ import annotations

import openai

from tests.gateway import Gateway, InProcessGateway

HELLO = [{"role": "user", "content": "rate me"}]


def complete(gateway: Gateway, key: str, tags: list[str]) -> str:
    with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0) as client:
        return client.chat.completions.create(model="gpt-4o-mini", messages=HELLO,
                                              extra_body={"request_tags": tags}).id


def feedback(gateway: Gateway, body: dict, key: str | None = None) -> tuple[int, dict]:
    status, _, out = gateway.post_json("/v1/feedback", body, **({"key": key} if key else {}))
    return status, out


def test_latest_score_replaces_the_earlier_one_everywhere(gateway: Gateway) -> None:
    key = gateway.create_key("fb", team="quality")
    first = complete(gateway, key, ["fb/search/answers", "fb/search/rank"])
    # Sent at once: the record may still be in the writer's buffer; the handler waits for it.
    status, out = feedback(gateway, {"request_id": first, "score": 1, "comment": "great"}, key)
    assert status == 200, out
    assert out == {"object": "feedback", "request_id": first, "score": 1.0, "comment": "great",
                   "created_at": out["created_at"], "updated_at": out["updated_at"], "replaced": False}
    status, out = feedback(gateway, {"request_id": first, "score": 0.25}, key)
    assert status == 200 and out["replaced"] is True and out["score"] == 0.25 and out["comment"] is None
    second = complete(gateway, key, ["fb/search/answers"])
    assert feedback(gateway, {"request_id": second, "score": "0.5"}, key)[0] == 200  # a decimal string too

    record = gateway.log_record(first)
    assert record["feedback"]["score"] == 0.25 and record["feedback"]["comment"] is None
    assert gateway.log_record(complete(gateway, key, ["fb/none"]))["feedback"] is None

    status, body = gateway.get("/v1/analytics/usage?group_by=tag&tag=fb/search")
    per_tag = {r["group"]["tag"]: r["feedback"] for r in body["data"]}
    assert per_tag["fb/search/answers"] == {"count": 2, "mean_score": 0.375}
    assert per_tag["fb/search/rank"] == {"count": 1, "mean_score": 0.25}
    assert body["totals"]["feedback"] == {"count": 2, "mean_score": 0.375}  # the first counted once
    status, body = gateway.get("/v1/analytics/usage?group_by=label.team&label.team=quality")
    assert body["data"][0]["feedback"] == {"count": 2, "mean_score": 0.375}
    status, body = gateway.get("/v1/analytics/tags/tree?root=fb/search")
    assert body["data"][0]["feedback"] == {"count": 2, "mean_score": 0.375}


def test_feedback_needs_a_known_request_of_ones_own_and_a_score_in_range(gateway: Gateway) -> None:
    mine = gateway.create_key("fb-mine")
    other = gateway.create_key("fb-other")
    rid = complete(gateway, mine, ["fb2"])
    status, out = feedback(gateway, {"request_id": "req_nope", "score": 1})
    assert status == 404 and out["error"]["param"] == "request_id"
    status, out = feedback(gateway, {"request_id": rid, "score": 1}, other)  # not its request
    assert status == 404
    assert feedback(gateway, {"request_id": rid, "score": 0}, mine)[0] == 200
    assert feedback(gateway, {"request_id": rid, "score": 0.5})[0] == 200  # the admin may rate any
    for bad, param in (({"request_id": rid, "score": 1.5}, "score"), ({"request_id": rid, "score": -0.1}, "score"),
                       ({"request_id": rid, "score": 0.3333}, "score"), ({"request_id": rid}, "score"),
                       ({"request_id": rid, "score": "good"}, "score"),
                       ({"request_id": rid, "score": 1, "extra": 1}, "extra"), ({"score": 1}, "request_id")):
        status, out = feedback(gateway, bad, mine)
        assert status == 400 and out["error"]["param"] == param, (bad, out)
    status, out = gateway.post_json("/v1/feedback", {"request_id": rid, "score": 1}, key=None)[::2]
    assert status == 401


def test_feedback_waits_for_a_record_still_in_the_write_buffer(upstream, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import standard_config

    gw = InProcessGateway(tmp_path, standard_config(upstream), env={"TALLYGATE_LEDGER_FLUSH_MS": "600000"}).start()
    try:
        key = gw.create_key("buffered")
        rid = complete(gw, key, ["buf"])
        assert gw.get(f"/v1/logs/{rid}")[0] == 404  # not written yet: the flush interval is 10 minutes
        status, out = feedback(gw, {"request_id": rid, "score": 0.75}, key)
        assert status == 200, out
        assert gw.log_record(rid)["feedback"]["score"] == 0.75
    finally:
        gw.stop()
