"""Time the columnar copy's first copy of a ledger: records copied, then the tag roll-up of every
whole day (`settle`), each with its rate. The ledger is only read; the copy is a new DuckDB file.

    .venv/bin/python bench/bench_first_copy.py --db sqlite:////tmp/tg/ledger.db --columnar /tmp/tg/first.duckdb
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

from tallygate.analytics.columnar import DuckDBColumnar
from tallygate.analytics.reader import AnalyticsStore
from tallygate.store.db import open_engine


def _cpu() -> float:
    """This process's CPU seconds so far (all its threads, DuckDB's included): on a shared machine
    a steadier measure than the wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="the ledger's URL (only read)")
    ap.add_argument("--columnar", required=True, help="a DuckDB file to create (replaced if it exists)")
    args = ap.parse_args()
    for suffix in ("", ".wal"):
        Path(args.columnar + suffix).unlink(missing_ok=True)
    engine, columnar = open_engine(args.db), DuckDBColumnar(args.columnar)
    t, cpu = time.perf_counter(), _cpu()
    copied = AnalyticsStore(engine, columnar=columnar).sync()  # rolls up days for ~5 s at its end
    copy_s, copy_cpu = time.perf_counter() - t, _cpu() - cpu
    t = time.perf_counter()
    rolled = columnar.settle(columnar.get_meta("watermark") or 0, budget_s=None)
    settle_s = time.perf_counter() - t
    columnar.close()
    engine.dispose()
    print(json.dumps({"records": copied, "copy_s": round(copy_s, 1), "records_per_s": round(copied / copy_s),
                      "cpu_s": round(copy_cpu, 1), "records_per_cpu_s": round(copied / copy_cpu),
                      "more_days_rolled": rolled, "settle_s": round(settle_s, 1),
                      "duckdb_bytes": os.path.getsize(args.columnar), "load": os.getloadavg()}))


if __name__ == "__main__":
    main()
