"""Dashboard sessions: a management key exchanged for a random session token and a CSRF token.

The key's secret is never kept: a session holds the key's prefix and SHA-256 digest, so every
request made with the session is checked against the key as it is now (a revoked key ends its
sessions at once). Tokens are stored by their digest. Sessions live in this process's memory
and expire after `ttl_s` (not extended by use); a restart signs everyone out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

SESSION_TTL_S = 8 * 3600
MAX_SESSIONS = 10_000


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

    def __init__(self, ttl_s: int = SESSION_TTL_S, clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._by_digest: dict[str, Session] = {}

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def open(self, key_prefix: str, key_digest: str) -> tuple[str, Session]:
        """A new session for this key: (the token for the cookie, the session)."""
        if len(self._by_digest) >= MAX_SESSIONS:
            self._sweep()
        if len(self._by_digest) >= MAX_SESSIONS:  # still full: the oldest gives way
            del self._by_digest[min(self._by_digest, key=lambda d: self._by_digest[d].expires_at)]
        token = secrets.token_urlsafe(32)
        session = Session(key_prefix, key_digest, secrets.token_urlsafe(32), self._now_ms() + self.ttl_s * 1000)
        self._by_digest[_digest(token)] = session
        return token, session

    def get(self, token: str) -> Session | None:
        """The live session of this token, or None (unknown, signed out or expired)."""
        digest = _digest(token)
        session = self._by_digest.get(digest)
        if session is not None and session.expires_at <= self._now_ms():
            del self._by_digest[digest]
            return None
        return session

    def close(self, token: str) -> None:
        self._by_digest.pop(_digest(token), None)

    def _sweep(self) -> None:
        now = self._now_ms()
        for digest in [d for d, s in self._by_digest.items() if s.expires_at <= now]:
            del self._by_digest[digest]
