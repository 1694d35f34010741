"""The in-memory key cache: a stale read never brings back an older copy of a key."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from tallygate.errors import AuthenticationFailed
from tallygate.pipeline.auth import Authenticator
from tallygate.store.db import migrate, open_engine
from tallygate.store.keys import PREFIX_LEN, KeyRecord, KeyStore


def test_a_poll_that_read_a_key_before_its_revocation_cannot_revive_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(f"sqlite:///{tmp_path}/k.db")
    migrate(engine)
    keys = KeyStore(engine)
    record, secret = keys.create(name="k")
    auth = Authenticator(keys, None)
    auth.remember(record)
    stale = keys.get(record.id)  # what a poll read a moment before the revocation
    assert stale is not None and keys.revoke(record.id)
    revoked = keys.get(record.id)
    assert revoked is not None
    auth.remember(revoked)  # the revocation, through this process
    auth.remember(stale)  # the poll's answer arrives afterwards
    auth.remember(dataclasses.replace(stale, updated_at=revoked.updated_at + 1))  # even if it looks newer
    with pytest.raises(AuthenticationFailed, match="revoked"):
        asyncio.run(auth.authenticate(f"Bearer {secret}"))
    engine.dispose()


def test_checks_of_a_key_not_yet_held_share_one_lookup_and_only_wrong_keys_count(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(f"sqlite:///{tmp_path}/k.db")
    migrate(engine)
    lookups: list[str] = []

    class CountingKeys(KeyStore):
        def by_prefix(self, prefix: str) -> list[KeyRecord]:
            lookups.append(prefix)
            return super().by_prefix(prefix)

    keys = CountingKeys(engine)
    _, secret = keys.create(name="made elsewhere")  # in the database, not in this process's memory
    wrong = secret[:-4] + ("aaaa" if not secret.endswith("aaaa") else "bbbb")  # same prefix, wrong key
    auth = Authenticator(keys, None)

    async def burst() -> list[object]:
        checks = [auth.authenticate(f"Bearer {secret}", "10.0.0.1") for _ in range(30)]
        checks += [auth.authenticate(f"Bearer {wrong}", "10.0.0.1") for _ in range(3)]
        return await asyncio.gather(*checks, return_exceptions=True)

    answers = asyncio.run(burst())
    assert lookups == [secret[:PREFIX_LEN]]  # one database lookup for the 33 checks
    assert all(getattr(a, "name", None) == "made elsewhere" for a in answers[:30]), answers[:30]
    assert all(isinstance(a, AuthenticationFailed) for a in answers[30:]), answers[30:]
    left = auth.throttle.wait_s("10.0.0.1")
    assert left == 0.0  # 3 wrong keys of a burst of 10 allowed: not throttled
    for _ in range(7):
        with pytest.raises(AuthenticationFailed):
            asyncio.run(auth.authenticate(f"Bearer {wrong}", "10.0.0.1"))
    assert auth.throttle.wait_s("10.0.0.1") > 0  # the 3 joined wrong keys were counted
    engine.dispose()
