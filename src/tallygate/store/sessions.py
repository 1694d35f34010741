"""Dashboard session rows: one per signed-in browser, keyed by the digest of its token."""

from __future__ import annotations

from sqlalchemy import Engine, delete, insert, select

from tallygate.store.schema import dashboard_sessions as t

Row = tuple[str, str, str, int]  # key prefix, key digest, CSRF token, expires at (epoch ms)


class SessionRows:
    """Synchronous reads and writes of `dashboard_sessions` (run them from a worker thread)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def insert(self, token_digest: str, row: Row, now_ms: int) -> None:
        """Store a new session, and drop the ones that have expired."""
        with self._engine.begin() as conn:
            conn.execute(delete(t).where(t.c.expires_at <= now_ms))
            conn.execute(insert(t).values(token_digest=token_digest, key_prefix=row[0], key_digest=row[1],
                                          csrf_token=row[2], expires_at=row[3]))

    def find(self, token_digest: str, now_ms: int) -> Row | None:
        """The live session of this digest (None when unknown, signed out or expired)."""
        with self._engine.connect() as conn:
            found = conn.execute(select(t.c.key_prefix, t.c.key_digest, t.c.csrf_token, t.c.expires_at)
                                 .where(t.c.token_digest == token_digest, t.c.expires_at > now_ms)).first()
        return None if found is None else (found[0], found[1], found[2], int(found[3]))

    def remove(self, token_digest: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(t).where(t.c.token_digest == token_digest))
