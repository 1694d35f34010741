"""Dashboard sessions: a management key exchanged for a random session token and a CSRF token.

The key's secret is never kept: a session holds the key's prefix and SHA-256 digest, so every
request made with the session is checked against the key as it is now (a revoked key ends its
sessions at once). Sessions are rows in the database, stored by the SHA-256 of their token, so
every process on that database (`serve --workers`, replicas behind a load balancer) knows them,
and a sign-out or an expiry holds in all of them at once: each request reads its session's row
(one primary-key lookup; nothing is cached). A session ends `ttl_s` after sign-in (not extended
by use); a restart keeps it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from tallygate.store.sessions import SessionRows

SESSION_TTL_S = 8 * 3600


@dataclass(frozen=True, slots=True)
class Session:
    """One signed-in browser: which key, its CSRF token, and when it ends (epoch ms)."""

    key_prefix: str
    key_digest: str
    csrf_token: str
    expires_at: int

    def csrf_ok(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf_token.encode())


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    """Opens, finds and closes sessions by their (secret) token."""

    def __init__(self, rows: SessionRows, ttl_s: int = SESSION_TTL_S, clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self._rows = rows
        self._clock = clock

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def open(self, key_prefix: str, key_digest: str) -> tuple[str, Session]:
        """A new session for this key: (the token for the cookie, the session)."""
        token = secrets.token_urlsafe(32)
        now = self._now_ms()
        session = Session(key_prefix, key_digest, secrets.token_urlsafe(32), now + self.ttl_s * 1000)
        row = (session.key_prefix, session.key_digest, session.csrf_token, session.expires_at)
        await asyncio.to_thread(self._rows.insert, _digest(token), row, now)
        return token, session

    async def get(self, token: str) -> Session | None:
        """The live session of this token, or None (unknown, signed out or expired)."""
        if not token or len(token) > 256:
            return None
        row = await asyncio.to_thread(self._rows.find, _digest(token), self._now_ms())
        return None if row is None else Session(*row)

    async def close(self, token: str) -> None:
        await asyncio.to_thread(self._rows.remove, _digest(token))
