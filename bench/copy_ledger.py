#!/usr/bin/env python3
"""Copy a ledger filled by bench/gen_ledger.py from SQLite into an empty PostgreSQL database.

    .venv/bin/python bench/copy_ledger.py --to postgresql+psycopg://postgres@127.0.0.1:PORT/bench

The PostgreSQL schema is made by the migrations; every table's rows are then streamed with
`COPY ... FROM STDIN` in primary-key order, sequences are moved past the copied ids, and the
database is `VACUUM ANALYZE`d. Much faster
than generating the same records through the writer again (10M records in minutes), and the two
databases then hold the same ledger, so the analytics benchmark compares like with like.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time

import psycopg

from tallygate.store.db import migrate, open_engine

SKIPPED = {"alembic_version"}  # written by the migrations themselves


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="source", default="/tmp/tallygate-bench/ledger.db", help="the SQLite file")
    ap.add_argument("--to", required=True, help="PostgreSQL URL (postgresql+psycopg://...) of an empty database")
    args = ap.parse_args()
    engine = open_engine(args.to)
    migrate(engine)
    engine.dispose()
    src = sqlite3.connect(f"file:{args.source}?mode=ro", uri=True)
    tables = [name for (name,) in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
              if name not in SKIPPED and not name.startswith("sqlite_")]
    counts: dict[str, int] = {}
    t0 = time.perf_counter()
    with psycopg.connect(args.to.replace("postgresql+psycopg://", "postgresql://")) as dst:
        for table in tables:
            cols = [row[1] for row in src.execute(f"PRAGMA table_info({table})")]
            key = [row[1] for row in sorted(src.execute(f"PRAGMA table_info({table})"), key=lambda r: r[5]) if row[5]]
            order = f" ORDER BY {', '.join(key)}" if key else ""
            bools = {row[1] for row in src.execute(f"PRAGMA table_info({table})") if row[2] == "BOOLEAN"}
            at = [i for i, c in enumerate(cols) if c in bools]
            n = 0
            with dst.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
                for row in src.execute(f"SELECT {', '.join(cols)} FROM {table}{order}"):
                    if at:
                        row = list(row)
                        for i in at:
                            row[i] = None if row[i] is None else bool(row[i])
                    copy.write_row(row)
                    n += 1
            dst.commit()
            counts[table] = n
            print(f"  {table}: {n:,} rows ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        serials = dst.execute("SELECT table_name, column_name FROM information_schema.columns "
                              "WHERE column_default LIKE 'nextval(%%'").fetchall()
        for table, col in serials:  # the copied ids are in use: sequences continue after them
            dst.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{col}'), "
                        f"COALESCE((SELECT max({col}) FROM {table}), 0) + 1, false)")
        dst.commit()
        dst.autocommit = True
        dst.execute("VACUUM ANALYZE")
    print(json.dumps({"to": args.to.rsplit("@", 1)[-1], "rows": counts, "seconds": round(time.perf_counter() - t0)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
