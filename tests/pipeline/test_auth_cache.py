"""The in-memory key cache: a stale read never brings back an older copy of a key."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from tallygate.errors import AuthenticationFailed
from tallygate.pipeline.auth import Authenticator
from tallygate.store.db import migrate, open_engine
from tallygate.store.keys import KeyStore


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
