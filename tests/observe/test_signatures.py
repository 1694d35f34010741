"""Webhook signatures: the documented verification accepts ours and rejects tampering and replays."""

from __future__ import annotations

import hashlib
import hmac
import time

from tallygate.observe.events import body_for, sign, verify

EVENT = {"id": "threshold:k:2026-12:50", "kind": "threshold", "summary": "x", "subject": {"id": "k"},
         "threshold": 50, "limit": "10", "spend": "5"}


def readme_verify(secret: str, body: bytes, header: str, tolerance: int = 300) -> bool:
    """The ten lines the README shows a receiver, verbatim."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    timestamp, signature = parts.get("t", ""), parts.get("v1", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance:
        return False  # missing, or too old: a replay
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def test_signature_verifies_and_tampered_body_or_secret_or_old_timestamp_is_rejected() -> None:
    body = body_for(EVENT, "json")
    now = int(time.time())
    header = sign("s3cret", body, now)
    assert header.startswith(f"t={now},v1=")
    assert readme_verify("s3cret", body, header) and verify("s3cret", body, header, time.time())
    tampered = body.replace(b'"spend":"5"', b'"spend":"0"')
    assert tampered != body
    assert not readme_verify("s3cret", tampered, header)
    assert not readme_verify("other", body, header)
    old = sign("s3cret", body, now - 3600)
    assert not readme_verify("s3cret", body, old) and not verify("s3cret", body, old, time.time())


def test_slack_format_carries_the_summary_as_text() -> None:
    import json

    doc = json.loads(body_for(EVENT, "slack"))
    assert doc["text"] == "[tallygate] x"
    assert any("threshold" in f["text"] for f in doc["blocks"][1]["fields"])
