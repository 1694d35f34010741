"""Spend spikes per group and error-rate spikes per model and provider, from finished requests.

The rule, for spend (`SpendSpikes`): time is cut in 5-minute slots. For each configured group
(`key`, `label.<name>`, `tag_level.<n>`: the tag prefixes of depth n) the *window* is the last
hour (12 slots) and the *baseline* is the median of the group's spend over each of the
`baseline_hours` whole hours before it (hours before this process started watching do not
count; at least `min_baseline_hours` are needed). The median is robust: one earlier spike does
not raise the bar. A group fires when its window spend is at least `min_usd` and more than
`factor` times the baseline; the alert carries the figures and the key and model that spent
most in the window. It fires once, then stays quiet until the group recovers (window spend back
under `factor` x baseline); its id holds the hour it fired in, so processes agree on it.

Error rates (`ErrorRates`) work the same way per model and provider, with `window_s` windows:
the rate (5xx and 429 answers over requests) of the last window against the median rate of the
`baseline_windows` before it, firing above `factor` x baseline, `min_rate` and `min_requests`.

Everything is in memory and counted from this process's own requests; evaluation touches only
groups that saw requests since the last evaluation. Groups are capped (`MAX_GROUPS`): past that,
new groups are not tracked (a client inventing tags cannot grow memory without bound).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from decimal import Decimal

from tallygate.core.money import PICO_PER_USD, usd_text
from tallygate.core.record import LedgerRecord
from tallygate.core.timebuckets import HOUR_MS
from tallygate.observe.events import Event, event, group_hash, iso
from tallygate.settings import ErrorRateConfig, SpikeConfig

SLOT_MS = 300_000
MAX_GROUPS = 10_000
Group = tuple[str, str]  # (group_by, value)


def groups_of(record: LedgerRecord, group_by: Iterable[str]) -> list[Group]:
    """The groups a request belongs to for each `group_by` spec."""
    out: list[Group] = []
    for spec in group_by:
        if spec == "key":
            if record.key_id:
                out.append((spec, record.key_id))
        elif spec.startswith("label."):
            value = record.labels.get(spec[6:])
            if value is not None:
                out.append((spec, value))
        else:
            depth = int(spec[10:])
            seen = {"/".join(parts[:depth]) for t in record.tags if len(parts := t.split("/")) >= depth}
            out.extend((spec, v) for v in sorted(seen))
    return out


class _Series:
    """Per group: slot -> [a, b] sums (spend and nothing; errors and requests)."""

    def __init__(self, keep_slots: int) -> None:
        self.slots: dict[Group, dict[int, list[int]]] = {}
        self._keep = keep_slots
        self.started: int | None = None

    def add(self, group: Group, slot: int, a: int, b: int) -> bool:
        series = self.slots.get(group)
        if series is None:
            if len(self.slots) >= MAX_GROUPS:
                return False
            series = self.slots[group] = {}
        cell = series.get(slot)
        if cell is None:
            series[slot] = [a, b]
            for old in [s for s in series if s <= slot - self._keep]:
                del series[old]
        else:
            cell[0] += a
            cell[1] += b
        return True

    def window(self, group: Group, end: int, width: int) -> tuple[int, int]:
        """Sums over the `width` slots before slot `end` (exclusive)."""
        series = self.slots.get(group, {})
        a = b = 0
        for s in range(end - width, end):
            cell = series.get(s)
            if cell:
                a, b = a + cell[0], b + cell[1]
        return a, b


class SpendSpikes:
    """A request observer counting spend per group; `due()` returns spike alerts."""

    def __init__(self, config: SpikeConfig, clock: Callable[[], float] = time.time) -> None:
        self._cfg = config
        self._clock = clock
        self._width = HOUR_MS // SLOT_MS
        self._series = _Series(self._width * (config.baseline_hours + 1) + 1)
        self._top: dict[Group, dict[int, dict[tuple[str, str], int]]] = {}  # group -> slot -> (key, model)
        self._group_cache: dict[tuple[str | None, tuple[str, ...]], tuple[dict[str, str], list[Group]]] = {}
        self._touched: set[Group] = set()
        self._active: set[Group] = set()
        self._factor = config.factor
        self._min = int(config.min_usd * PICO_PER_USD)

    def _slot(self) -> int:
        return int(self._clock() * 1000) // SLOT_MS

    def _groups(self, record: LedgerRecord) -> list[Group]:
        """`groups_of`, cached per key and tag set (the labels object is the key record's own)."""
        cache_key = (record.key_id, record.tags)
        found = self._group_cache.get(cache_key)
        if found is not None and found[0] is record.labels:
            return found[1]
        groups = groups_of(record, self._cfg.group_by)
        if len(self._group_cache) > 10_000:
            self._group_cache.clear()
        self._group_cache[cache_key] = (record.labels, groups)
        return groups

    def request_finished(self, record: LedgerRecord) -> None:
        cost = record.cost_pico
        if not cost or not self._cfg.group_by:
            return
        slot = self._slot()
        if self._series.started is None:
            self._series.started = slot
        who = (record.key_name or record.key_id or "", record.requested_model or "")
        for g in self._groups(record):
            if self._series.add(g, slot, cost, 0):
                self._touched.add(g)
                by_slot = self._top.get(g)
                if by_slot is None:
                    by_slot = self._top[g] = {}
                top = by_slot.get(slot)
                if top is None:
                    top = by_slot[slot] = {}
                top[who] = top.get(who, 0) + cost

    def due(self) -> list[Event]:
        """Spike alerts for the groups that spent since the last call (on the event loop)."""
        now_slot, out = self._slot(), []
        touched, self._touched = self._touched, set()
        started = self._series.started
        for g in touched:
            spend, _ = self._series.window(g, now_slot + 1, self._width)
            hours = [self._series.window(g, now_slot + 1 - self._width * h, self._width)[0]
                     for h in range(1, self._cfg.baseline_hours + 1)
                     if started is not None and now_slot + 1 - self._width * (h + 1) >= started]
            if len(hours) < self._cfg.min_baseline_hours:
                continue
            baseline = Decimal(statistics.median(hours))
            spiking = spend >= self._min and spend > self._factor * baseline
            if not spiking:
                self._active.discard(g)
                continue
            if g in self._active:
                continue
            self._active.add(g)
            out.append(self._event(g, spend, baseline, now_slot))
        self._prune(now_slot)
        return out

    def _event(self, g: Group, spend: int, baseline: Decimal, now_slot: int) -> Event:
        now = int(self._clock() * 1000)
        hour = now - now % HOUR_MS
        keys: dict[str, int] = {}
        models: dict[str, int] = {}
        for slot, cells in self._top.get(g, {}).items():
            if slot > now_slot - self._width:
                for (key, model), v in cells.items():
                    keys[key] = keys.get(key, 0) + v
                    models[model] = models.get(model, 0) + v
        top_key = max(keys.items(), key=lambda kv: kv[1], default=None)
        top_model = max(models.items(), key=lambda kv: kv[1], default=None)
        by, value = g
        ratio = "new spend" if not baseline else f"{Decimal(spend) / baseline:.1f}x its usual"
        return event(f"spend_spike:{group_hash(by + '=' + value)}:{iso(hour)[:13]}", "spend_spike", now,
                     {"kind": "group", "id": f"{by}={value}", "name": f"{by} {value}"},
                     f"spend of {by} {value} in the last hour is ${usd_text(spend)}, {ratio} "
                     f"(baseline ${usd_text(int(baseline))}/hour)"
                     + (f", mostly key {top_key[0]}" if top_key else "")
                     + (f" on model {top_model[0]}" if top_model else ""),
                     group={"by": by, "value": value}, window_start=iso(now - HOUR_MS), window_end=iso(now),
                     spend=usd_text(spend), baseline=usd_text(int(baseline)), factor=str(self._factor),
                     top_key=None if top_key is None else {"name": top_key[0], "spend": usd_text(top_key[1])},
                     top_model=None if top_model is None else {"name": top_model[0],
                                                               "spend": usd_text(top_model[1])})

    def _prune(self, now_slot: int) -> None:
        for g, slots in list(self._top.items()):
            for s in [s for s in slots if s <= now_slot - self._width]:
                del slots[s]
            if not slots:
                del self._top[g]


class ErrorRates:
    """A request observer counting answers and errors per model and provider; `due()` alerts."""

    def __init__(self, config: ErrorRateConfig, clock: Callable[[], float] = time.time) -> None:
        self._cfg = config
        self._clock = clock
        self._slot_ms = config.window_s * 1000 // 5
        self._width = 5
        self._series = _Series(self._width * (config.baseline_windows + 1) + 1)
        self._touched: set[Group] = set()
        self._active: set[Group] = set()

    def _slot(self) -> int:
        return int(self._clock() * 1000) // self._slot_ms

    def request_finished(self, record: LedgerRecord) -> None:
        if record.provider is None:  # never routed (bad input, auth, budget): not the model's fault
            return
        slot = self._slot()
        if self._series.started is None:
            self._series.started = slot
        failed = 1 if record.status >= 500 or record.status == 429 else 0
        for g in (("model", record.requested_model or ""), ("provider", record.provider)):
            if g[0] in self._cfg.group_by and self._series.add(g, slot, failed, 1):
                self._touched.add(g)

    def due(self) -> list[Event]:
        now_slot, out = self._slot(), []
        touched, self._touched = self._touched, set()
        started = self._series.started
        for g in touched:
            errors, total = self._series.window(g, now_slot + 1, self._width)
            rates = []
            for w in range(1, self._cfg.baseline_windows + 1):
                end = now_slot + 1 - self._width * w
                if started is None or end - self._width < started:
                    break
                e, n = self._series.window(g, end, self._width)
                if n:
                    rates.append(Decimal(e) / n)
            if not rates or total < self._cfg.min_requests:
                continue
            rate, baseline = Decimal(errors) / total, Decimal(statistics.median(rates))
            if not (rate >= self._cfg.min_rate and rate > self._cfg.factor * baseline):
                self._active.discard(g)
                continue
            if g in self._active:
                continue
            self._active.add(g)
            now = int(self._clock() * 1000)
            by, value = g
            window = now - now % (self._cfg.window_s * 1000)
            out.append(event(f"error_rate:{group_hash(by + '=' + value)}:{window}", "error_rate", now,
                             {"kind": by, "id": value, "name": f"{by} {value}"},
                             f"error rate of {by} {value} is {rate:.1%} over the last {self._cfg.window_s}s "
                             f"({errors} of {total}; baseline {baseline:.1%})",
                             group={"by": by, "value": value}, errors=errors, requests=total,
                             rate=f"{rate:.4f}", baseline_rate=f"{baseline:.4f}", window_s=self._cfg.window_s))
        return out
