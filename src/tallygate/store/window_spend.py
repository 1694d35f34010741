"""The ledger's spend of budgets and keys in a window other than the UTC month, by slot.

A day, a week (starting at local midnight, which in a zone such as Asia/Kolkata is not on a UTC
hour) and a rolling window's slots do not fall on the roll-ups' UTC buckets, so these totals are
read from the raw records by their `created_at` (the instant every engine counts a cost at):
a key's through the (key_id, created_at) index, a tag subtree's through `request_tags`'
(tag, created_at) key, each request once however many of its tags are in the subtree, a label
group's through the created_at index. They are read at start-up, when a budget is created or
changes period, and when Redis lost its counters; a month keeps its roll-up reads, and a local
month that is not the UTC one reads here only the hours between its bounds and the UTC month
boundaries nearest them (`between`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, and_, func, or_, select

from tallygate.core.windows import MONTH, Window
from tallygate.store.budgets import BudgetRecord, labels_match
from tallygate.store.schema import label_sets, request_tags, requests


def _step(w: Window) -> tuple[int, int]:
    """(first slot's start, slot length): the slots of `w` cut [start, until) evenly."""
    bounds = w.slot_bounds()
    return bounds[-1][1], bounds[0][2] - bounds[0][1]


def _by_slot(conn: Connection, w: Window, scope: str, where: Any) -> dict[str, int]:
    """'<slot>:s:<scope>' -> picodollars of the requests matching `where` in each slot of `w`."""
    base, step = _step(w)
    top = w.until if w.end is None else w.end
    names = {(s_start - base) // step: slot for slot, s_start, _ in w.slot_bounds()}
    index = (requests.c.created_at - base) // step  # integer division: created_at >= base
    query = (select(index, func.sum(requests.c.cost_pico))
             .where(requests.c.created_at >= base, requests.c.created_at < top, where).group_by(index))
    out: dict[str, int] = {}
    for i, total in conn.execute(query):
        slot = names.get(int(i))
        if slot is not None and total:
            out[f"{slot}:s:{scope}"] = out.get(f"{slot}:s:{scope}", 0) + int(total)
    return out


def window_spend(engine: Engine, w: Window, budgets: list[BudgetRecord], key_ids: list[str]) -> dict[str, int]:
    """The ledger's spend in each slot of `w` of every budget ('budget:<id>') and key (by id),
    keyed as the engines' counters: '<slot>:s:<scope>'. Slots with no spend are left out."""
    out: dict[str, int] = {}
    with engine.connect() as conn:
        for key_id in key_ids:
            out.update(_by_slot(conn, w, key_id, requests.c.key_id == key_id))
        sets: list[tuple[str, dict[str, Any]]] | None = None
        for b in budgets:
            kind, value = b.kind, b.scope[b.kind]
            if kind == "key":
                where: Any = requests.c.key_id == value
            elif kind == "tag":
                base, _ = _step(w)
                top = w.until if w.end is None else w.end
                tagged = (select(request_tags.c.request_id)
                          .where(or_(request_tags.c.tag == value,
                                     and_(request_tags.c.tag > value + "/", request_tags.c.tag < value + "0")),
                                 request_tags.c.created_at >= base, request_tags.c.created_at < top))
                where = requests.c.id.in_(tagged)
            else:
                if sets is None:
                    sets = [(r.id, r.labels or {}) for r in conn.execute(select(label_sets))]
                ids = [sid for sid, labels in sets if labels_match(value, labels)]
                if not ids:
                    continue
                where = requests.c.label_set.in_(ids)
            out.update(_by_slot(conn, w, "budget:" + b.id, where))
    return out


def between(engine: Engine, lo: int, hi: int, budgets: list[BudgetRecord], key_ids: list[str] | None) -> dict[str, int]:
    """The ledger's spend between `lo` and `hi` of every budget ('budget:<id>') and key (by id;
    every key when `key_ids` is None), by scope id. Scopes with no spend are left out."""
    if hi <= lo:
        return {}
    slot = "x"
    w = Window(MONTH, lo, hi, (slot,), lo, hi)
    out = {k.removeprefix(f"{slot}:s:"): v for k, v in window_spend(engine, w, budgets, key_ids or []).items()}
    if key_ids is None:
        query = (select(requests.c.key_id, func.sum(requests.c.cost_pico))
                 .where(requests.c.created_at >= lo, requests.c.created_at < hi, requests.c.key_id.is_not(None))
                 .group_by(requests.c.key_id))
        with engine.connect() as conn:
            out.update({key_id: int(total) for key_id, total in conn.execute(query) if total})
    return out


def request_costs(engine: Engine, ids: list[str]) -> dict[str, int]:
    """The cost of each of `ids` the ledger holds (the others are left out)."""
    out: dict[str, int] = {}
    with engine.connect() as conn:
        for i in range(0, len(ids), 500):
            query = select(requests.c.id, requests.c.cost_pico).where(requests.c.id.in_(ids[i:i + 500]))
            out.update((rid, int(cost or 0)) for rid, cost in conn.execute(query))
    return out
