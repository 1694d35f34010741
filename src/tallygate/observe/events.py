"""Alert events: their JSON shape, stable ids, the Stripe-style signature and the Slack text.

Every event has `id` (stable: the same alert computed by two processes has the same id, which is
how the database keeps it once), `kind`, `created_at` (ISO 8601, UTC), `created_at_ms`, `subject`
(`kind`, `id`, `name`), a readable `summary` and the figures of its kind, money as decimal USD
strings.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import orjson

SIGNATURE_HEADER = "Tallygate-Signature"
Event = dict[str, Any]


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat().replace("+00:00", "Z")


def group_hash(text: str) -> str:
    """A short stable digest for ids built from client-chosen text (tags, label values)."""
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def event(alert_id: str, kind: str, now_ms: int, subject: Mapping[str, str], summary: str,
          **figures: Any) -> Event:
    return {"id": alert_id, "kind": kind, "created_at": iso(now_ms), "created_at_ms": now_ms,
            "subject": dict(subject), "summary": summary, **figures}


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The `Tallygate-Signature` header value: `t=<unix seconds>,v1=<hex HMAC-SHA256>` of
    `"<t>.<raw body>"`, as Stripe signs its webhooks."""
    mac = hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, body: bytes, header: str, now_s: float, tolerance_s: int = 300) -> bool:
    """What a receiver does (the README shows the same lines): recompute, compare in constant
    time, refuse a timestamp older than `tolerance_s` (a replay)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    t = parts.get("t", "")
    if not t.isdigit() or abs(now_s - int(t)) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


def body_for(ev: Mapping[str, Any], fmt: str) -> bytes:
    """The request body for a webhook of `format` json (the event) or slack (text and fields)."""
    if fmt == "slack":
        fields = [{"type": "mrkdwn", "text": f"*{k}*: {v}"} for k, v in ev.items()
                  if k not in ("summary", "subject", "created_at_ms") and not isinstance(v, (dict, list))]
        return orjson.dumps({"text": f"[tallygate] {ev['summary']}",
                             "blocks": [{"type": "section", "text": {"type": "mrkdwn",
                                                                     "text": f"*{ev['kind']}*: {ev['summary']}"}},
                                        {"type": "section", "fields": fields[:10]}]})
    return orjson.dumps(ev)
