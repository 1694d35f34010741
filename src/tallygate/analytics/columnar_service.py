"""Where the columnar copy lives, and the service that keeps it up to date in the background.

`TALLYGATE_ANALYTICS_COLUMNAR` names a DuckDB file, ':memory:' (rebuilt at each start), or 'off'
(questions the roll-ups do not hold are then read from the raw ledger: exact but slow). The
default is `<ledger file>.analytics.duckdb` next to a SQLite ledger, else
`./tallygate-analytics.duckdb`. A DuckDB file has one writing process: with `--workers N` each
worker takes the first free of `<file>`, `<file>.1`, ... (a copy each).

Over a ledger that holds records, the copy is opened and brought up to date in a background thread
from start-up (about 12,000 records/s on SQLite; docs/capacity.md, *The first copy*): until
that first copy is made, questions are answered from the roll-ups and the raw ledger (exact, slower
on a big range), never by waiting for it. Over an empty ledger it is opened lazily: `duckdb` is
imported and the file opened by the first question that needs the columnar engine, so a gateway
that only proxies never pays for it. The periodic sync has nothing to do until it is open.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import make_url

from tallygate.analytics.reader import AnalyticsStore
from tallygate.core.periodic import Periodic
from tallygate.settings import Settings

if TYPE_CHECKING:
    from tallygate.analytics.columnar import DuckDBColumnar

log = logging.getLogger("tallygate.analytics")
MAX_COPIES = 64


def columnar_path(settings: Settings) -> str | None:
    """The configured columnar copy's path (None: off)."""
    if settings.analytics_columnar:
        return None if settings.analytics_columnar == "off" else settings.analytics_columnar
    url = make_url(settings.db_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            return ":memory:"
        return url.database + ".analytics.duckdb"
    return "tallygate-analytics.duckdb"


def columnar_engine(settings: Settings) -> DuckDBColumnar | None:
    """The process's DuckDB copy: the configured file, or the first free numbered one beside it
    (imports duckdb: call it when a question needs the copy)."""
    path = columnar_path(settings)
    if path is None:
        return None
    import duckdb

    from tallygate.analytics.columnar import DuckDBColumnar

    if path == ":memory:":
        return DuckDBColumnar(path)
    for n in range(MAX_COPIES):
        candidate = path if n == 0 else f"{path}.{n}"
        try:
            Path(candidate).parent.mkdir(parents=True, exist_ok=True)
            return DuckDBColumnar(candidate)
        except duckdb.IOException:  # held by another worker process
            continue
    log.warning("no free columnar copy among %s .. .%d: analytics read the raw ledger", path, MAX_COPIES - 1)
    return None


class ColumnarSync:
    """A service: copies the settled ledger into the columnar engine every `every_s` seconds, once
    a question has opened it (before that, and with the engine off, each tick does nothing)."""

    def __init__(self, store: AnalyticsStore, every_s: float = 5.0) -> None:
        self._store = store
        self._job = Periodic(every_s, self._sync, log, "columnar copy failed; retrying at the next interval")

    async def start(self) -> None:
        if self._store.columnar_configured:
            if await asyncio.to_thread(self._store.has_records):
                self._store.warm()  # the first copy, in the background: no question waits for it
            self._job.start()

    async def stop(self) -> None:
        await self._job.stop()
        await asyncio.to_thread(self._store.stop)  # the background copy ends before the process does

    async def _sync(self) -> None:
        if self._store.columnar is None:  # not opened yet: no question has needed it
            return
        copied = await asyncio.to_thread(self._store.sync, wait=False)  # not while the first copy is made
        if copied:
            log.info("columnar copy: %d records copied", copied)
