"""API keys and users in the database. Secrets never reach it: only SHA-256 digests.

Keys are 256-bit random secrets (`tg-` + 43 url-safe characters), so a fast hash is the right
one: there is nothing to brute-force. The first `PREFIX_LEN` characters are kept in clear as
`key_prefix`: they identify a key in listings and find its record, whose digest is then
compared in constant time.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Engine, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from tallygate.core.timebuckets import month_floor
from tallygate.store.schema import api_keys, requests, usage_rollups, users

PREFIX_LEN = 12
DEFAULT_PERMISSIONS = {"completions": "write", "manage": "none"}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return "tg-" + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One row of `api_keys` (the secret itself is never stored: only its SHA-256 `key_hash`)."""

    id: str
    name: str
    key_prefix: str
    key_hash: str
    labels: dict[str, str]
    permissions: dict[str, str]
    monthly_limit_pico: int | None
    policy: str | None
    created_by: str | None
    created_at: int
    updated_at: int
    revoked_at: int | None
    limit_period: str = "month"  # the window of monthly_limit_pico (core/windows.py)


@dataclass(frozen=True, slots=True)
class User:
    """A person behind management keys."""

    id: str
    name: str
    created_at: int


KEY_FIELDS = tuple(f.name for f in fields(KeyRecord))


def _key(row: Mapping[Any, Any]) -> KeyRecord:
    return KeyRecord(**{f: row[f] for f in KEY_FIELDS})


def _user(row: Mapping[Any, Any]) -> User:
    return User(row["id"], row["name"], row["created_at"])


class KeyStore:
    """Synchronous key and user queries; the gateway calls them from worker threads."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def ensure_user(self, name: str) -> User:
        """The user called `name`, created on first use (by whichever process gets there first)."""
        with self._engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.name == name)).mappings().first()
        if row is not None:
            return _user(row)
        try:
            return self.create_user(name)
        except ValueError:  # another worker created it between the read and the insert
            with self._engine.connect() as conn:
                return _user(conn.execute(select(users).where(users.c.name == name)).mappings().one())

    def create(self, *, name: str, labels: dict[str, str] | None = None,
               permissions: dict[str, str] | None = None, monthly_limit_pico: int | None = None,
               policy: str | None = None, created_by: str | None = None,
               limit_period: str = "month") -> tuple[KeyRecord, str]:
        """Store a new key; returns its record and the secret (which is not stored)."""
        secret = new_secret()
        ts = now_ms()
        record = KeyRecord(
            id=str(uuid.uuid4()), name=name, key_prefix=secret[:PREFIX_LEN], key_hash=hash_secret(secret),
            labels=dict(labels or {}), permissions={**DEFAULT_PERMISSIONS, **(permissions or {})},
            monthly_limit_pico=monthly_limit_pico, policy=policy, created_by=created_by,
            created_at=ts, updated_at=ts, revoked_at=None, limit_period=limit_period)
        with self._engine.begin() as conn:
            conn.execute(api_keys.insert().values(**{f: getattr(record, f) for f in KEY_FIELDS}))
        return record, secret

    def by_prefix(self, prefix: str) -> list[KeyRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(api_keys).where(api_keys.c.key_prefix == prefix)).mappings()
            return [_key(r) for r in rows]

    def changed_since(self, ms: int) -> list[KeyRecord]:
        """Keys created, edited or revoked at or after `ms` (epoch milliseconds)."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(api_keys).where(api_keys.c.updated_at >= ms)).mappings()
            return [_key(r) for r in rows]

    def all(self) -> list[KeyRecord]:
        with self._engine.connect() as conn:
            return [_key(r) for r in conn.execute(select(api_keys).order_by(api_keys.c.created_at)).mappings()]

    def get(self, key_id: str) -> KeyRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
            return _key(row) if row else None

    def by_ids(self, ids: set[str]) -> dict[str, KeyRecord]:
        """The keys of `ids` that exist, in one query."""
        if not ids:
            return {}
        with self._engine.connect() as conn:
            rows = conn.execute(select(api_keys).where(api_keys.c.id.in_(ids))).mappings()
            return {r["id"]: _key(r) for r in rows}

    def page(self, labels: dict[str, str], limit: int, after: tuple[int, str] | None) -> list[KeyRecord]:
        """Keys in creation order whose labels include `labels`, after the (created_at, id) cursor."""
        c = api_keys.c
        where = [c.labels[name].as_string() == value for name, value in labels.items()]
        if after is not None:
            where.append(or_(c.created_at > after[0], and_(c.created_at == after[0], c.id > after[1])))
        query = select(api_keys).where(*where).order_by(c.created_at, c.id).limit(limit)
        with self._engine.connect() as conn:
            return [_key(r) for r in conn.execute(query).mappings()]

    def update(self, key_id: str, fields: dict[str, Any]) -> KeyRecord | None:
        """Replace the given columns of a key; returns the updated record (None if no such key)."""
        with self._engine.begin() as conn:
            result = conn.execute(update(api_keys).where(api_keys.c.id == key_id)
                                  .values(**fields, updated_at=now_ms()))
            if result.rowcount == 0:
                return None
            return _key(conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().one())

    def users_by_id(self, ids: set[str]) -> dict[str, User]:
        if not ids:
            return {}
        with self._engine.connect() as conn:
            rows = conn.execute(select(users).where(users.c.id.in_(ids))).mappings()
            return {r["id"]: _user(r) for r in rows}

    def create_user(self, name: str) -> User:
        """A new user; `ValueError` if the name is taken."""
        with self._engine.begin() as conn:
            if conn.execute(select(users.c.id).where(users.c.name == name)).first() is not None:
                raise ValueError(f"a user named {name!r} already exists")
            user = User(str(uuid.uuid4()), name, now_ms())
            try:
                conn.execute(users.insert().values(id=user.id, name=user.name, created_at=user.created_at))
            except IntegrityError:
                raise ValueError(f"a user named {name!r} already exists") from None
            return user

    def limit_periods(self) -> dict[str, str]:
        """The keys whose limit counts over another period than the month: id -> period."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(api_keys.c.id, api_keys.c.limit_period)
                                .where(api_keys.c.limit_period != "month"))
            return {key_id: period for key_id, period in rows}

    def spend_since(self, since_ms: int, until_ms: int | None = None) -> dict[str, int]:
        """Picodollars recorded per key since `since_ms` (a UTC month's start), and before
        `until_ms` (a later UTC month's start) when given.

        From a month's start the month roll-up has the answer in a few hundred rows (the raw
        ledger would be read record by record: minutes of start-up on tens of millions)."""
        if month_floor(since_ms) == since_ms:
            t = usage_rollups["month"]
            query = (select(t.c.key_id, func.sum(t.c.cost_pico))
                     .where(t.c.bucket >= since_ms, t.c.key_id != "",
                            *(() if until_ms is None else (t.c.bucket < until_ms,))).group_by(t.c.key_id))
        else:
            query = (select(requests.c.key_id, func.sum(requests.c.cost_pico))
                     .where(requests.c.created_at >= since_ms, requests.c.key_id.is_not(None))
                     .group_by(requests.c.key_id))
        with self._engine.connect() as conn:
            return {key_id: int(total or 0) for key_id, total in conn.execute(query)}

    def revoke(self, key_id: str) -> bool:
        ts = now_ms()
        with self._engine.begin() as conn:
            result = conn.execute(update(api_keys)
                                  .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                                  .values(revoked_at=ts, updated_at=ts))
            return result.rowcount > 0
