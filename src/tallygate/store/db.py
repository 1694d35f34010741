"""Opening the database: engine set-up per dialect and migrations to the current schema."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text

_MIGRATIONS = Path(__file__).parent / "migrations"


def open_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and relaxed fsync (safe with WAL)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA cache_size=-65536")  # 64 MiB: the B-tree pages a batch of upserts touches
            cur.close()

        return engine
    # PostgreSQL: no JIT. Its compilation cost is paid on every analytics sum whose plan costs more than
    # jit_above_cost (an hour roll-up over a ragged range at 10M records: 420 ms of JIT for 30 ms of work);
    # the gateway's statements are all short. A URL that sets its own `options` keeps them.
    connect_args = {} if "options=" in url else {"options": "-c jit=off"}
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def schema_behind(engine: Engine) -> str | None:
    """None when the database answers and is migrated to head, else what is wrong (blocking)."""
    heads = set(ScriptDirectory.from_config(_alembic_config()).get_heads())
    with engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    if current != heads:
        return f"database schema at revision {','.join(sorted(current)) or 'none'}, expected {','.join(sorted(heads))}"
    return None


_MIGRATION_LOCK = 0x7A11_6A7E  # the PostgreSQL advisory lock every migrating process takes


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent). Gateways starting together on one
    PostgreSQL database take turns: the first migrates, the others then find the schema at head."""
    cfg = _alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": _MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")

