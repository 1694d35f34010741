"""Bearer authentication against hashed keys, served from memory.

Every key record is loaded at start-up and kept fresh by polling for keys changed since the
last poll (`refresh_s`), so a key created or revoked by the CLI or another replica takes
effect within that interval, and one revoked through this process at once. A prefix not in
memory is looked up in the database off the event loop; misses are remembered briefly so
random keys cannot turn into a database load. While the database is unreachable, cached keys
keep working and any other key gets 503 `auth_unavailable`.

Wrong keys are counted per client address (`pipeline/throttle.py`). An address past its
allowance is checked against memory only: a key held as valid is served as always, anything
else gets 429 `too_many_failed_attempts` with `retry-after`, without a database lookup. So
guessing slows to the refill rate for that address alone, and no one can lock a real key out.

One lookup of a prefix runs at a time: the checks that arrive while it runs (a key created on
another replica, used by many requests at once on this one) wait for its answer, and only a
wrong key among them is counted, so a burst of a new valid key is served, never throttled.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time

from tallygate.core.periodic import Periodic
from tallygate.errors import AuthenticationFailed, AuthUnavailable, TooManyFailedAttempts
from tallygate.pipeline.throttle import FailureThrottle
from tallygate.store.keys import PREFIX_LEN, KeyRecord, KeyStore, hash_secret, now_ms
from tallygate.types import Principal

log = logging.getLogger("tallygate.auth")
ADMIN_PERMISSIONS = {"completions": "write", "manage": "write"}
_MISS_TTL_S = 2.0
_DOWN_TTL_S = 1.0  # after a failed lookup, uncached keys get 503 at once for this long
# A prefix any key could have (printable ASCII): other text (NUL, controls, non-ASCII) is
# refused without a lookup, so it can neither reach the database nor make other keys wait.
_KEY_PREFIX = re.compile(f"[!-~]{{1,{PREFIX_LEN}}}")


def _principal(row: KeyRecord) -> Principal:
    return Principal(key_id=row.id, name=row.name, labels=dict(row.labels or {}),
                     permissions=dict(row.permissions or {}), user_id=row.created_by,
                     policy=row.policy, monthly_limit=row.monthly_limit_pico, limit_period=row.limit_period)


class Authenticator:
    """Turns an `Authorization` header into a `Principal`, or raises `AuthenticationFailed`."""

    def __init__(self, keys: KeyStore, admin_key: str | None, admin_user_id: str | None = None,
                 refresh_s: float = 1.0, throttle: FailureThrottle | None = None) -> None:
        """`admin_user_id` is the user behind `admin_key`; `start()` finds (or makes) the user
        `admin` when it is not given."""
        self._keys = keys
        self.throttle = throttle or FailureThrottle()
        self._admin_hash = hash_secret(admin_key) if admin_key else None
        self._admin = Principal(key_id=None, name="admin", permissions=ADMIN_PERMISSIONS,
                                user_id=admin_user_id)
        self._by_prefix: dict[str, list[tuple[str, Principal | None]]] = {}
        self._versions: dict[str, tuple[int, bool]] = {}  # key hash -> (updated_at, revoked) held
        self._revoked: set[str] = set()  # ids of the keys held as revoked
        self._misses: dict[str, float] = {}
        self._lookups: dict[str, asyncio.Future[list[tuple[str, Principal | None]]]] = {}  # prefix -> under way
        self._down_until = 0.0
        self._seen_ms = 0
        self._refresher = Periodic(refresh_s, self._refresh, log, "refreshing API keys failed")

    def load(self) -> None:
        """Read every key (blocking; call at start-up)."""
        self._seen_ms = now_ms()
        for row in self._keys.all():
            self.remember(row)

    def remember(self, row: KeyRecord) -> None:
        """Put a key record into memory, replacing an older copy (revoked keys stay, as revoked).

        A copy older than the one held is ignored: a poll that read the key just before it was
        changed (or revoked) through this process must not bring the old record back."""
        held = self._versions.get(row.key_hash)
        if held is not None and (held[0] > row.updated_at or (held[1] and not row.revoked_at)):
            return
        self._versions[row.key_hash] = (row.updated_at, row.revoked_at is not None)
        if row.revoked_at is not None:
            self._revoked.add(row.id)
        entries = [e for e in self._by_prefix.get(row.key_prefix, []) if e[0] != row.key_hash]
        entries.append((row.key_hash, None if row.revoked_at else _principal(row)))
        self._by_prefix[row.key_prefix] = entries
        self._misses.pop(row.key_prefix, None)

    def current(self, principal: Principal) -> Principal:
        """The latest copy held of `principal`'s key (`principal` itself when none is)."""
        if principal.key_id is not None:
            for entries in self._by_prefix.values():
                for _, held in entries:
                    if held is not None and held.key_id == principal.key_id:
                        return held
        return principal

    def recheck(self, principal: Principal) -> Principal:
        """`current`, for a request authenticated before this process read its key again (another
        process changed keys): AuthenticationFailed when the key was revoked meanwhile."""
        if principal.key_id is not None and principal.key_id in self._revoked:
            raise AuthenticationFailed("this API key has been revoked", code="revoked_api_key")
        return self.current(principal)

    async def refresh(self) -> None:
        """Take in the keys changed lately, now (as the periodic refresh does)."""
        await self._refresh()

    async def start(self) -> None:
        """Load every key, then keep them fresh in the background."""
        if self._admin.user_id is None:
            self._admin.user_id = (await asyncio.to_thread(self._keys.ensure_user, "admin")).id
        await asyncio.to_thread(self.load)
        self._refresher.start()

    async def stop(self) -> None:
        await self._refresher.stop()

    async def _refresh(self) -> None:
        """Take in the keys changed since the last refresh."""
        since = self._seen_ms - 5_000  # overlap: clocks of other writers may lag a little
        self._seen_ms = now_ms()
        for row in await asyncio.to_thread(self._keys.changed_since, since):
            self.remember(row)

    async def authenticate(self, authorization: str | None, client: str | None = None) -> Principal:
        """The key in an `Authorization` header; `client` is the caller's address (for the
        throttle of wrong keys; None: not throttled)."""
        if not authorization:
            raise AuthenticationFailed("missing API key: send 'Authorization: Bearer <key>'")
        scheme, _, secret = authorization.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise AuthenticationFailed("malformed Authorization header: expected 'Bearer <key>'")
        try:
            digest = hash_secret(secret)
        except UnicodeEncodeError:  # a lone surrogate: no key has one
            raise AuthenticationFailed("invalid API key") from None
        return await self.verify_digest(secret[:PREFIX_LEN], digest, client)

    async def verify_digest(self, prefix: str, digest: str, client: str | None = None) -> Principal:
        """The key whose secret has this prefix and SHA-256 digest (a dashboard session keeps only these)."""
        if client is None:
            return await self._verify(prefix, digest)
        principal = self._held(prefix, digest)
        if principal is not None:
            return principal  # a valid key is never throttled
        if prefix in self._lookups:  # its answer decides, at no further cost: count only a wrong key
            try:
                return await self._verify(prefix, digest)
            except AuthenticationFailed:
                self.throttle.failed(client)
                raise
        wait = self.throttle.wait_s(client)
        if wait:
            raise TooManyFailedAttempts(wait)
        self.throttle.failed(client)  # charged before the lookup: concurrent guesses cannot overshoot
        try:
            principal = await self._verify(prefix, digest)
        except AuthenticationFailed:
            raise
        except BaseException:
            self.throttle.refund(client)  # not a wrong key: the database could not say
            raise
        self.throttle.refund(client)  # valid after all (created elsewhere, not yet in memory)
        return principal

    def _held(self, prefix: str, digest: str) -> Principal | None:
        """The valid key with this digest if memory holds it (no database lookup)."""
        if self._admin_hash is not None and hmac.compare_digest(digest, self._admin_hash):
            return self._admin
        for stored, principal in self._by_prefix.get(prefix, ()):
            if hmac.compare_digest(digest, stored):
                return principal
        return None

    async def _verify(self, prefix: str, digest: str) -> Principal:
        if self._admin_hash is not None and hmac.compare_digest(digest, self._admin_hash):
            return self._admin
        entries = self._by_prefix.get(prefix)
        if entries is None:
            if not _KEY_PREFIX.fullmatch(prefix):  # never a key's: not worth a database lookup
                raise AuthenticationFailed("invalid API key")
            entries = await self._fetch(prefix)
        for stored, principal in entries:
            if hmac.compare_digest(digest, stored):
                if principal is None:
                    raise AuthenticationFailed("this API key has been revoked", code="revoked_api_key")
                return principal
        raise AuthenticationFailed("invalid API key")

    async def _fetch(self, prefix: str) -> list[tuple[str, Principal | None]]:
        """The keys with this prefix, from the lookup under way for it or a new one."""
        pending = self._lookups.get(prefix)
        if pending is None:
            pending = asyncio.ensure_future(self._lookup(prefix))
            self._lookups[prefix] = pending
            pending.add_done_callback(lambda done: self._looked_up(prefix, done))
        return await asyncio.shield(pending)  # a waiter going away does not cancel the others' lookup

    def _looked_up(self, prefix: str, done: asyncio.Future[list[tuple[str, Principal | None]]]) -> None:
        if self._lookups.get(prefix) is done:
            del self._lookups[prefix]
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have gone

    async def _lookup(self, prefix: str) -> list[tuple[str, Principal | None]]:
        missed = self._misses.get(prefix)
        if missed is not None and time.monotonic() - missed < _MISS_TTL_S:
            return []
        unavailable = AuthUnavailable("cannot check this API key now (the key database is "
                                      "unreachable); retry shortly")
        if time.monotonic() < self._down_until:
            raise unavailable  # the database failed a moment ago: do not queue more threads on it
        try:
            rows = await asyncio.to_thread(self._keys.by_prefix, prefix)
        except Exception as exc:
            if self._down_until == 0.0:
                log.warning("looking up an API key failed (%s); cached keys keep working",
                            type(exc).__name__)
            self._down_until = time.monotonic() + _DOWN_TTL_S
            raise unavailable from None
        self._down_until = 0.0
        if not rows:
            if len(self._misses) > 10_000:
                self._misses.clear()
            self._misses[prefix] = time.monotonic()
            return []
        for row in rows:
            self.remember(row)
        return self._by_prefix.get(prefix, [])
