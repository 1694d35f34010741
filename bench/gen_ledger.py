#!/usr/bin/env python3
"""Fill a ledger with realistic records through the gateway's own writer (`LedgerWriter`).

    .venv/bin/python bench/gen_ledger.py                         # 10M records, November 2026
    .venv/bin/python bench/gen_ledger.py --records 200000 --db postgresql+psycopg://...
    .venv/bin/python bench/gen_ledger.py --records 400000 --rate 20000   # paced: does it keep up?
    nice .venv/bin/python bench/gen_ledger.py --bulk --fresh --db sqlite:////tmp/tga/10m/ledger.db  # fast fill

Hundreds of labelled keys (team, env, feature, tier, customer_id), a few thousand tags up to 4
levels deep (team/feature/variant, geo, customer/project, experiment arms, workflow steps, flat
tags), several models and providers, streams with a time to first token, errors and refusals,
costs priced per model in picodollars. Records are spread evenly over one UTC month in time
order (ids are time-ordered like the gateway's). Half-way through the month a tenth of the keys
are relabelled (team changes), so `labels=current` differs from the labels as recorded.

`--templates` distinct records are drawn up front and cycled, each use with its own id and
time, so producing a record costs about a microsecond of the writer's CPU (the producer shares
the interpreter lock with the writer thread, as the proxy does in the gateway).

Records go through `LedgerWriter.record()` and its batched flusher exactly as in the gateway;
unpaced, the generator waits while more than `--max-pending` records are buffered. It prints
one JSON line: records, wall seconds, records/s, the writer's busy time, flushes, database size.
The database file (SQLite: several GB at 10M records) belongs under /tmp, not in the repository.

`--bulk` fills a ledger for the query benchmarks, not to measure ingest: the same records go
through the same batch writer (`store/ingest.py`: raw rows, tag rows and every roll-up in one
transaction) but in large batches on the generator's own thread, with SQLite's journal in memory
and without fsync (a crash loses the file; regenerate it). The answers are those of a ledger
filled through the gateway; the writer figures are not comparable with a paced run's.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import sys
import time
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Engine, event

from tallygate.core.record import Attempt, LedgerRecord, replace
from tallygate.pipeline.pricing import Rate
from tallygate.store.db import migrate, open_engine
from tallygate.store.ingest import BatchIngest
from tallygate.store.keys import KeyStore
from tallygate.store.ledger import LedgerWriter

TEAMS = {
    "growth": ["onboarding", "autocomplete", "recs", "emails"],
    "search": ["query-rewrite", "ranking", "answers", "snippets", "spell"],
    "support": ["triage", "reply-draft", "summaries"],
    "platform": ["routing", "evals", "docs-bot"],
    "data": ["sql-gen", "etl-tagging", "catalog"],
    "mobile": ["voice", "smart-reply", "captions", "translate"],
    "payments": ["fraud-notes", "disputes"],
    "trust": ["moderation", "appeals", "spam"],
    "infra": ["incident-notes", "runbooks"],
    "research": ["agents", "long-context", "distill", "eval-harness"],
    "sales": ["lead-scoring", "outreach", "call-notes"],
    "ads": ["copy", "targeting", "creative-review", "bidding"],
}
ENVS = [("prod", 0.6), ("staging", 0.25), ("dev", 0.15)]
TIERS = ["free", "paid", "enterprise"]
# model -> (provider, served model, endpoint, median latency ms, $/Mtok input, output, cached)
MODELS = {
    "gpt-4o-mini": ("openai", "gpt-4o-mini", "chat", 600, "0.15", "0.6", "0.075"),
    "gpt-4o": ("openai", "gpt-4o", "chat", 1400, "2.5", "10", "1.25"),
    "claude-3.5-haiku": ("anthropic", "claude-3-5-haiku-latest", "chat", 800, "0.8", "4", "0.08"),
    "claude-sonnet-4": ("anthropic", "claude-sonnet-4-20250514", "chat", 2500, "3", "15", "0.3"),
    "local-llama": ("local", "llama-3.1-8b", "chat", 300, "0.05", "0.1", "0.05"),
    "embed-small": ("openai", "text-embedding-3-small", "embeddings", 120, "0.02", "0", "0.02"),
}
RATES = {m: Rate.from_mtok("bench", *(Decimal(p) for p in spec[4:])) for m, spec in MODELS.items()}
STATUSES = [(200, 0.96), (429, 0.012), (400, 0.008), (502, 0.008), (504, 0.004), (402, 0.003),
            (500, 0.005)]
ERROR_TYPES = {400: "invalid_request_error", 402: "budget_exceeded", 429: "rate_limit_error",
               500: "server_error", 502: "upstream_error", 504: "timeout_error"}
ERROR_CODES = {400: None, 402: "budget_exceeded", 429: "upstream_rate_limited", 500: "internal_error",
               502: "upstream_server_error", 504: "upstream_timeout"}


def _zipf_weights(n: int, s: float = 1.1) -> list[float]:
    return [1 / (i + 1) ** s for i in range(n)]


def build_tags(rng: random.Random) -> dict[str, list[str]]:
    """Tag pools by family; every leaf is 1 to 4 segments deep."""
    states = ["California", "NewYork", "Texas", "Washington", "Florida", "Illinois", "Oregon",
              "Georgia", "Ohio", "Virginia"]
    countries = ["FR", "DE", "ES", "IT", "NL", "SE", "PL", "IE"]
    geo = [f"US/{s}/city-{c}" for s in states for c in range(8)]
    geo += [f"EU/{c}/city-{i}" for c in countries for i in range(6)]
    geo += [f"APAC/{c}/city-{i}" for c in ("JP", "SG", "AU", "IN", "KR") for i in range(5)]
    customers = [f"cus_{i:04d}" for i in range(120)]
    return {
        "geo": geo,
        "customer": [f"customer/{c}/project-{p}" for c in customers for p in range(10)],
        "exp": [f"exp/exp-{e:02d}/{arm}" for e in range(60) for arm in ("control", "a", "b")],
        "workflow": [f"workflow/wf-{w:02d}/step-{s}/sub-{t}" for w in range(40) for s in range(5)
                     for t in range(4)],
        "flat": ["production", "staging", "batch", "interactive", "eval", "backfill", "canary", "shadow",
                 "retry", "cron", "webhook", "internal", "external", "beta", "ga", "holdout", "priority",
                 "bulk", "nightly", "adhoc"],
        "customers": customers,
    }


class Keys:
    """Hundreds of keys, each with labels, a primary and sometimes a secondary model."""

    def __init__(self, rng: random.Random, n: int, customers: list[str]) -> None:
        self.keys: list[dict] = []
        features = [(t, f) for t, fs in TEAMS.items() for f in fs]
        models = list(MODELS)
        for i in range(n):
            team, feature = features[i % len(features)]
            env = rng.choices([e for e, _ in ENVS], [w for _, w in ENVS])[0]
            labels = {"team": team, "env": env, "feature": feature, "tier": rng.choice(TIERS)}
            if rng.random() < 0.5:
                labels["customer_id"] = rng.choices(customers, _zipf_weights(len(customers)))[0]
            primary = models[min(int(rng.expovariate(0.8)), len(models) - 1)]
            secondary = rng.choice(models) if rng.random() < 0.3 else None
            variants = [f"team/{team}/{feature}/v{j}" for j in range(rng.randint(2, 12))]
            self.keys.append({"name": f"{team}-{feature}-{env}-{i:03d}", "labels": labels,
                              "primary": primary, "secondary": secondary, "variants": variants})
        self.weights = _zipf_weights(n, 0.9)
        rng.shuffle(self.weights)


class RecordFactory:
    """Builds ledger records (dicts of `requests` columns) quickly from pre-drawn pools."""

    def __init__(self, rng: random.Random, keys: Keys, tags: dict[str, list[str]], stored: list[dict]) -> None:
        self.rng = rng
        self.keys = keys
        self.stored = stored
        self.tags = tags
        self.geo_w = _zipf_weights(len(tags["geo"]))
        self.customer_w = _zipf_weights(len(tags["customer"]), 0.8)
        self.pool = 1 << 16
        self.key_pool = rng.choices(range(len(keys.keys)), keys.weights, k=self.pool)
        self.status_pool = rng.choices([s for s, _ in STATUSES], [w for _, w in STATUSES], k=self.pool)
        self.geo_pool = rng.choices(tags["geo"], self.geo_w, k=self.pool)
        self.cust_pool = rng.choices(tags["customer"], self.customer_w, k=self.pool)
        self.lognorm = [rng.lognormvariate(0, 0.6) for _ in range(self.pool)]
        self.labels_now = [k["labels"] for k in keys.keys]
        self.i = 0

    def relabel(self, fraction: float) -> list[int]:
        """Move `fraction` of the keys to another team; later records carry the new labels."""
        moved = self.rng.sample(range(len(self.keys.keys)), int(len(self.keys.keys) * fraction))
        for k in moved:
            labels = dict(self.labels_now[k])
            labels["team"] = self.rng.choice([t for t in TEAMS if t != labels["team"]])
            self.labels_now[k] = labels
        return moved

    def templates(self, n: int) -> list[LedgerRecord]:
        """`n` distinct records to cycle through (ids and times are set per use)."""
        return [self.make(0) for _ in range(n)]

    def make(self, created_at: int) -> LedgerRecord:
        rng, p, i = self.rng, self.pool, self.i
        self.i = i + 1
        r = rng.random()
        k = self.key_pool[(i * 7919) % p]
        key, stored = self.keys.keys[k], self.stored[k]
        model = key["secondary"] if key["secondary"] and r < 0.25 else key["primary"]
        provider, served, endpoint, median_ms, *_ = MODELS[model]
        status = self.status_pool[(i * 104729) % p]
        ln = self.lognorm[(i * 31337) % p]
        stream = endpoint == "chat" and r > 0.6
        tags = [key["variants"][int(r * 1000) % len(key["variants"])]]
        if r < 0.6:
            tags.append(self.geo_pool[(i * 13) % p])
        if "customer_id" in key["labels"] and r > 0.25:
            tags.append(self.cust_pool[(i * 17) % p])
        if (i % 7) == 0:
            tags.append(self.tags["exp"][(i // 7) % len(self.tags["exp"])])
        if (i % 5) == 1:
            tags.append(self.tags["workflow"][(i * 3) % len(self.tags["workflow"])])
        if (i % 2) == 0:
            tags.append(self.tags["flat"][(i // 2) % 20 if r < 0.5 else 0])
        if status == 200:
            latency_ms = median_ms * ln
            inp = int(800 * ln * (0.4 if endpoint == "embeddings" else 1)) + 5
            out = 0 if endpoint == "embeddings" else int(250 / ln) + 1
            cached = inp // 2 if r < 0.3 else 0
            reasoning = out // 3 if model == "gpt-4o" and r < 0.2 else 0
            rate = RATES[model]
            cost = (inp - cached) * rate.input + cached * rate.cached + out * rate.output
        else:
            latency_ms = {429: 80, 400: 2, 402: 1, 504: 30000}.get(status, median_ms) * ln
            inp = out = cached = reasoning = cost = 0
        ttft = int(latency_ms * 1000 * (0.1 + 0.3 * r)) if stream and status == 200 else None
        refused = status in (400, 402)
        return LedgerRecord(
            id=f"req_{created_at:011x}{rng.getrandbits(56):014x}", created_at=created_at, key_id=stored.id,
            key_name=key["name"], labels=self.labels_now[k], tags=tuple(tags), endpoint=endpoint,
            requested_model=model, served_model=None if refused else served,
            provider=None if refused else provider, status=status, error_type=ERROR_TYPES.get(status),
            error_message=None if status == 200 else f"bench error {status}", stream=stream, partial=False,
            input_tokens=inp, output_tokens=out, cached_tokens=cached, cache_write_tokens=0,
            reasoning_tokens=reasoning, cost_pico=cost, pricing_source="bench",
            latency_us=int(latency_ms * 1000), ttft_us=ttft,
            attempts=() if refused else (Attempt(provider=provider, model=served, status=status,
                                                 latency_ms=latency_ms, target=model,
                                                 error=None if status == 200 else "UpstreamHTTPError"),),
            error_code=ERROR_CODES.get(status))


def month_bounds(month: str) -> tuple[int, int]:
    start = dt.datetime.strptime(month, "%Y-%m").replace(tzinfo=dt.UTC)
    end = (start + dt.timedelta(days=32)).replace(day=1)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def db_size(url: str) -> int | None:
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url.removeprefix("sqlite:///"))
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def _bulk_pragmas(engine: Engine) -> None:
    """SQLite without fsync and with a large page cache: a throw-away benchmark file."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _fast(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=OFF")
        cur.execute("PRAGMA cache_size=-1048576")  # 1 GiB: the tag and roll-up B-trees stay in memory
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.close()


def bulk_write(args: argparse.Namespace, ingest: BatchIngest, pools: list[list[LedgerRecord]], start_ms: int,
               step: float, rng: random.Random) -> tuple[float, int]:
    """Every record through `BatchIngest.write` in batches of `--bulk-batch`, on this thread:
    (seconds inside the writer, batches)."""
    busy, flushes = 0.0, 0
    getrandbits = rng.getrandbits
    t0 = last_report = time.perf_counter()
    for n in range(0, args.records, args.bulk_batch):
        pool = pools[0 if n < args.records // 2 else 1]
        batch = []
        for j in range(n, min(n + args.bulk_batch, args.records)):
            ms = start_ms + int(j * step)
            batch.append(replace(pool[j % len(pool)], id=f"req_{ms:011x}{getrandbits(56):014x}", created_at=ms))
        t = time.perf_counter()
        ingest.write(batch)
        busy += time.perf_counter() - t
        flushes += 1
        if t - last_report > 30:
            last_report = t
            done = n + len(batch)
            print(f"  {done:>10,} records  {done / (t - t0):8.0f}/s (bulk)", file=sys.stderr, flush=True)
    return busy, flushes


async def fill(args: argparse.Namespace) -> dict:
    rng = random.Random(args.seed)
    engine = open_engine(args.db)
    if args.bulk:
        _bulk_pragmas(engine)
    migrate(engine)
    tags = build_tags(rng)
    keys = Keys(rng, args.keys, tags["customers"])
    store = KeyStore(engine)
    stored = [store.create(name=k["name"], labels=k["labels"])[0] for k in keys.keys]
    factory = RecordFactory(rng, keys, tags, stored)
    start_ms, end_ms = month_bounds(args.month)
    if args.days:
        end_ms = min(end_ms, start_ms + int(args.days * 86_400_000))
    step = (end_ms - start_ms) / args.records
    if args.bulk:
        size = min(args.templates, args.records)
        pools = [factory.templates(size)]
        moved = factory.relabel(0.1)  # the second half of the month carries the new labels
        pools.append(factory.templates(size))
        t0 = time.perf_counter()
        busy_s, flushes = bulk_write(args, BatchIngest(engine), pools, start_ms, step, rng)
        wall = time.perf_counter() - t0
        for k in moved:
            store.update(stored[k].id, {"labels": factory.labels_now[k]})
        engine.dispose()
        return {"records": args.records, "db": args.db, "month": args.month, "days": args.days or None,
                "keys": args.keys, "bulk": True, "wall_s": round(wall, 2), "records_per_s": round(args.records / wall),
                "writer_busy_s": round(busy_s, 2), "flushes": flushes, "mean_batch": round(args.records / flushes),
                "relabelled_keys": len(moved), "db_bytes": db_size(args.db)}
    writer = LedgerWriter(engine, flush_ms=args.flush_ms, batch=args.batch, max_batch=args.max_batch)
    busy = [0.0, 0]
    inner = writer._write

    def timed_write(batch: list[LedgerRecord]) -> None:  # the writer's own thread: measure its busy time
        t = time.perf_counter()
        inner(batch)
        busy[0] += time.perf_counter() - t
        busy[1] += 1

    writer._write = timed_write  # type: ignore[method-assign]
    await writer.start()
    size = min(args.templates, args.records)
    pools = [factory.templates(size)]
    moved = factory.relabel(0.1)  # the second half of the month carries the new labels
    pools.append(factory.templates(size))
    pool = pools[0]
    getrandbits = rng.getrandbits
    t0 = time.perf_counter()
    last_report = t0
    max_pending = 0
    chunk = 500
    for n in range(0, args.records, chunk):
        if n >= args.records // 2:
            pool = pools[1]
        for j in range(n, min(n + chunk, args.records)):
            ms = start_ms + int(j * step)
            writer.record(replace(pool[j % len(pool)], id=f"req_{ms:011x}{getrandbits(56):014x}", created_at=ms))
        if args.rate:
            ahead = (n + chunk) / args.rate - (time.perf_counter() - t0)
            await asyncio.sleep(max(ahead, 0))
        else:
            await asyncio.sleep(0)
            while writer.pending > args.max_pending:
                await asyncio.sleep(0.002)
        max_pending = max(max_pending, writer.pending)
        now = time.perf_counter()
        if now - last_report > 30:
            last_report = now
            print(f"  {n + chunk:>10,} records  {(n + chunk) / (now - t0):8.0f}/s  pending {writer.pending}",
                  file=sys.stderr, flush=True)
    await writer.stop()
    wall = time.perf_counter() - t0
    for k in moved:
        store.update(stored[k].id, {"labels": factory.labels_now[k]})
    engine.dispose()
    return {"records": args.records, "db": args.db, "month": args.month, "days": args.days or None, "keys": args.keys,
            "paced_rate": args.rate, "wall_s": round(wall, 2), "records_per_s": round(args.records / wall),
            "writer_busy_s": round(busy[0], 2),
            "writer_records_per_busy_s": round(args.records / busy[0]) if busy[0] else None,
            "flushes": busy[1], "mean_batch": round(args.records / max(busy[1], 1)),
            "max_pending": max_pending, "relabelled_keys": len(moved), "db_bytes": db_size(args.db)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default="sqlite:////tmp/tallygate-bench/ledger.db",
                    help="database URL (default: %(default)s)")
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--month", default="2026-11", help="UTC month the records fall in (YYYY-MM)")
    ap.add_argument("--days", type=float, default=0, help="spread the records over the month's first N days "
                    "(default: the whole month); e.g. --records 400000 --days 1.2 has the density of 10M a month")
    ap.add_argument("--keys", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rate", type=float, default=0, help="pace the producer at N records/s (0: as fast as "
                                                          "the writer takes them)")
    ap.add_argument("--flush-ms", type=int, default=50, help="the writer's flush interval (gateway default)")
    ap.add_argument("--batch", type=int, default=1000, help="records that wake the writer early (default)")
    ap.add_argument("--max-batch", type=int, default=None, help="most records one transaction takes "
                    "when the writer is behind (default: the gateway's, 25x --batch)")
    ap.add_argument("--max-pending", type=int, default=50_000, help="unpaced: buffered records that make "
                                                                    "the producer wait")
    ap.add_argument("--templates", type=int, default=200_000, help="distinct records drawn up front and "
                    "cycled (each use gets its own id and time), so the producer costs little of the "
                    "writer's CPU")
    ap.add_argument("--fresh", action="store_true", help="delete the SQLite file first")
    ap.add_argument("--bulk", action="store_true", help="fill fast for the query benchmarks: the same batch "
                    "writer in --bulk-batch batches on this thread, SQLite without fsync (not an ingest figure)")
    ap.add_argument("--bulk-batch", type=int, default=20_000, help="records per transaction with --bulk")
    args = ap.parse_args()
    if args.records <= 0 or args.records > 50_000_000:
        ap.error("--records must be between 1 and 50,000,000")
    if args.fresh and args.db.startswith("sqlite:///"):
        path = Path(args.db.removeprefix("sqlite:///"))
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            p.unlink(missing_ok=True)
    if args.db.startswith("sqlite:///"):
        Path(args.db.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(fill(args))
    print(json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
