"""The columnar copy's rows as DuckDB works them out from a chunk of ledger rows: each record's
distinct tags, its tags and tag prefixes by depth (as sets: no question depends on their order),
its latency buckets and its NULLs (apart from ''), as a direct computation in Python gives them."""

from __future__ import annotations

import json

from tallygate.analytics.columnar import DuckDBColumnar
from tallygate.analytics.mirror import COLUMNS
from tallygate.core.histogram import bucket
from tallygate.core.tagpath import MAX_DEPTH

TAG_LISTS = [[], ["US"], ["US/CA/SF", "US", "US/CA/SF"], ["a/b/c/d/e/f/g/h", "a/b", "x/y"],
             ["é/ü/日本", "é"], ["team/a/x/v1", "team/b", "team/a"], None]


def _by_depth(tags: list[str]) -> list[list[str]]:
    own: list[list[str]] = [[] for _ in range(MAX_DEPTH)]
    prefixes: list[set[str]] = [set() for _ in range(MAX_DEPTH)]
    for tag in tags:
        parts = tag.split("/")
        own[len(parts) - 1].append(tag)
        for d in range(1, len(parts) + 1):
            prefixes[d - 1].add("/".join(parts[:d]))
    return [sorted(t) for t in own] + [sorted(p) for p in prefixes]


def _row(i: int, tags: list[str] | None) -> tuple:  # type: ignore[type-arg]
    values = {"id": f"r{i}", "created_at": 1_000 + i, "key_id": None if i % 2 else "", "label_set": None,
              "tags": None if tags is None else json.dumps(tags), "requested_model": "m", "served_model": None,
              "provider": "p", "status": 200 + i, "error_code": "" if i % 3 else None, "input_tokens": i,
              "output_tokens": 2 * i, "cached_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0,
              "cost_pico": 10**15 + i, "latency_us": 17 * 10**i, "ttft_us": None if i % 2 else 3 * 10**i}
    return tuple(values[c] for c in COLUMNS)


def test_a_chunk_is_copied_with_its_tag_levels_buckets_and_nulls() -> None:
    copy = DuckDBColumnar()
    rows = [_row(i, tags) for i, tags in enumerate(TAG_LISTS)]
    copy.replace_range(0, 10**6, rows)
    levels = [f"list_sort({k}{d})" for k in "tp" for d in range(1, MAX_DEPTH + 1)]
    got = copy._db.execute(f"SELECT id, list_sort(tags), key_id, error_code, served_model, cost_pico, lat_b, ttft_b, "
                           f"{', '.join(levels)} FROM records ORDER BY created_at").fetchall()
    assert len(got) == len(rows)
    for row, tags, have in zip(rows, TAG_LISTS, got, strict=True):
        distinct = sorted(set(tags or []))
        i = int(row[0][1:])
        assert have[:8] == (row[0], distinct, row[2], row[9], None, 10**15 + i, bucket(17 * 10**i),
                            None if i % 2 else bucket(3 * 10**i))
        assert [list(x) for x in have[8:]] == _by_depth(distinct)
    copy.close()
