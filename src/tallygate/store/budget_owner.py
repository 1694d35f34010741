"""Who may enforce a ledger's budgets: one serving process alone, or every process through Redis.

Without Redis a gateway keeps its budget state in memory (`pipeline/budget.MemoryBudget`): a
second `tallygate serve` on the same ledger would enforce every limit on its own, and a key
could spend its limit once in each. So a process serving without Redis claims the ledger
exclusively, and one serving with Redis claims it shared: a process that cannot claim it refuses
to start. The claim is a lock held as long as the process runs: on a SQLite ledger an OS file lock
on `<file>.budgets` beside it, on PostgreSQL a session advisory lock (every machine sees it).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable

from sqlalchemy import create_engine, make_url, text

_LOCK = 0x7A11_B0D6  # the PostgreSQL advisory lock of budget ownership


class LedgerClaimed(Exception):  # noqa: N818 - a refusal to start, not a bug
    """Another process enforces this ledger's budgets in a way this one cannot share."""


def claim(db_url: str, shared: bool) -> Callable[[], None]:
    """Claim the budgets of the ledger at `db_url`, shared (Redis) or alone; returns the release.
    Raises `LedgerClaimed` when another process holds a claim this one cannot share."""
    url = make_url(db_url)
    why = ("another gateway process serves this ledger without --redis, enforcing its budgets alone"
           if shared else "another gateway process serves this ledger")
    hint = (": with two processes on one ledger each would enforce every limit on its own and a key could "
            "spend its limit in each; run them all with --redis (TALLYGATE_REDIS_URL), or one alone")
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            return lambda: None
        fd = os.open(url.database + ".budgets", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LedgerClaimed(why + hint) from None
        return lambda: os.close(fd)
    if url.get_backend_name() != "postgresql":
        return lambda: None
    engine = create_engine(url, pool_size=1, max_overflow=0)
    conn = engine.connect()
    held = conn.execute(text("SELECT pg_try_advisory_lock_shared(:k)" if shared else "SELECT pg_try_advisory_lock(:k)"),
                        {"k": _LOCK}).scalar()
    conn.commit()  # a session lock outlives the transaction
    if not held:
        conn.close()
        engine.dispose()
        raise LedgerClaimed(why + hint)

    def release() -> None:
        conn.close()
        engine.dispose()
    return release
