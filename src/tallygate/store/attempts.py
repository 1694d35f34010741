"""The `attempts` column, compact: most requests have one attempt that repeats the record.

Stored as a JSON array of arrays `[provider, model, status, latency_ms, error, target]`, where
null provider / model / status mean the record's provider, served model and status, and a
target of 0 means the record's requested model. A one-attempt request that went as planned is
`[[null,null,null,612.3,null,0]]` (about 30 bytes instead of 110). Rows written before this
format hold a list of objects (`Attempt.to_dict()`); both are read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from tallygate.core.record import Attempt


def encode(attempts: Sequence[Attempt], provider: str | None, served: str | None, status: int,
           requested: str | None) -> str:
    if not attempts:
        return "[]"
    return orjson.dumps([[None if a.provider == provider else a.provider, None if a.model == served else a.model,
                          None if a.status == status else a.status, round(a.latency_ms, 3), a.error,
                          0 if a.target == requested and a.target is not None else a.target]
                         for a in attempts]).decode()


def decode(stored: Any, provider: str | None, served: str | None, status: int,
           requested: str | None) -> tuple[Attempt, ...]:
    if isinstance(stored, str | bytes):
        stored = orjson.loads(stored)
    out = []
    for a in stored or ():
        if isinstance(a, dict):  # the older format
            out.append(Attempt(provider=a["provider"], model=a["model"], status=a["status"],
                               latency_ms=a["latency_ms"], error=a.get("error"), target=a.get("target")))
            continue
        p, m, s, latency, error, target = a
        out.append(Attempt(provider=str(provider if p is None else p), model=str(served if m is None else m),
                           status=status if s is None else s, latency_ms=latency, error=error,
                           target=requested if target == 0 else target))
    return tuple(out)
