"""The per-request Prometheus series as plain integers, rendered by a collector at scrape time.

A request costs one dict lookup (its series, cached by the record's raw label values) and a few
integer additions: no prometheus_client child, lock or float on the hot path. `collect()` (a
prometheus_client `Collector`, run by a scrape from a worker thread) folds the series into the
families `prometheus_client`'s own `Counter`s and `Histogram`s would expose, with the same names,
help, labels, bucket bounds, `_created` samples (unless prometheus_client's are disabled) and order
of first appearance. Money and durations are summed as integers (picodollars, microseconds) and
turned into USD and seconds only at scrape time, so the sums are exact where the float additions
were not.

The event loop is the only writer. A scrape reads while it writes: it copies each dict before
iterating it, and a histogram's count may be one request ahead of its sum, as with the
prometheus_client values it replaces (their buckets are not read atomically either).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from tallygate.core.money import PICO_PER_USD
from tallygate.core.record import LedgerRecord

OTHER = "other"
TOKEN_TYPES = ("input", "output", "cached", "cache_write", "reasoning")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
REFUSAL_CODES = frozenset({"rate_limit_exceeded", "budget_exceeded", "budget_unavailable"})
_BOUNDS_US = tuple(round(b * 1_000_000) for b in LATENCY_BUCKETS)  # a value <= bound lands in it
_LE = (*map(floatToGoString, LATENCY_BUCKETS), "+Inf")
_CACHED = 50_000  # raw label values -> series: bounded, key label values may churn


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else OTHER


class _Series:
    """One (endpoint, model, provider, status class, key labels) series' integers."""

    __slots__ = ("labels", "created", "requests", "tokens", "cost_pico", "latency", "latency_us",
                 "ttft", "ttft_us", "fallbacks")

    def __init__(self, labels: tuple[str, str, str, str, tuple[str, ...]]) -> None:
        self.labels = labels
        self.created = time.time()
        self.requests = self.cost_pico = self.latency_us = self.ttft_us = self.fallbacks = 0
        self.tokens = [0] * len(TOKEN_TYPES)
        self.latency = [0] * len(_LE)  # per bucket (not cumulative); the last is +Inf
        self.ttft = [0] * len(_LE)


class RequestTally(Collector):
    """`request_finished` counts a record; `collect` renders the request series."""

    def __init__(self, models: Collection[str], providers: Collection[str], key_labels: Sequence[str] = ()) -> None:
        self._models = frozenset(models)
        self._providers = frozenset(providers)
        self._key_labels = tuple(key_labels)
        self._series: dict[tuple[Any, ...], _Series] = {}  # by label values, in order of first appearance
        self._cache: dict[tuple[Any, ...], _Series] = {}  # by the record's raw values
        self._attempts: dict[tuple[str, str], list[float]] = {}  # (provider, status class) -> [count, created]
        self._attempt_keys: dict[tuple[str, int], list[float]] = {}  # raw (provider, status) -> the same
        self._refusals: dict[tuple[str, str], list[float]] = {}  # (endpoint, code) -> [count, created]

    def request_finished(self, r: LedgerRecord) -> None:
        extra = tuple(r.labels.get(k, "") for k in self._key_labels) if self._key_labels else ()
        raw = (r.endpoint, r.requested_model, r.provider, r.status, extra)
        s = self._cache.get(raw)
        if s is None:
            s = self._series_of(r, extra, raw)
        s.requests += 1
        tokens = s.tokens
        tokens[0] += r.input_tokens
        tokens[1] += r.output_tokens
        tokens[2] += r.cached_tokens
        tokens[3] += r.cache_write_tokens
        tokens[4] += r.reasoning_tokens
        s.cost_pico += r.cost_pico
        us = r.latency_us
        s.latency[bisect_left(_BOUNDS_US, us)] += 1
        s.latency_us += us
        us2 = r.ttft_us
        if us2 is not None:
            s.ttft[bisect_left(_BOUNDS_US, us2)] += 1
            s.ttft_us += us2
        attempts = r.attempts
        if attempts:
            for a in attempts:
                found = self._attempt_keys.get((a.provider, a.status))
                if found is None:
                    found = self._attempt_of(a.provider, a.status)
                found[0] += 1
            if len(attempts) > 1 and r.status < 400:
                s.fallbacks += 1
        code = r.error_code
        if code in REFUSAL_CODES:
            assert code is not None
            counted = self._refusals.get((r.endpoint, code))
            if counted is None:
                counted = self._refusals[(r.endpoint, code)] = [0, time.time()]
            counted[0] += 1

    def _series_of(self, r: LedgerRecord, extra: tuple[str, ...], raw: tuple[Any, ...]) -> _Series:
        model = r.requested_model if r.requested_model in self._models else OTHER
        provider = r.provider if r.provider in self._providers else (OTHER if r.provider else "none")
        labels = (r.endpoint, model, provider, status_class(r.status), extra)
        s = self._series.get(labels)
        if s is None:
            s = self._series[labels] = _Series(labels)
        if len(self._cache) >= _CACHED:
            self._cache.clear()
        self._cache[raw] = s
        return s

    def _attempt_of(self, provider: str, status: int) -> list[float]:
        labels = (provider if provider in self._providers else OTHER, status_class(status))
        found = self._attempts.get(labels)
        if found is None:
            found = self._attempts[labels] = [0, time.time()]
        self._attempt_keys[(provider, status)] = found
        return found

    def collect(self) -> Iterable[Metric]:
        extra = list(self._key_labels)
        requests = CounterMetricFamily("tallygate_requests", "Requests answered",
                                       labels=["endpoint", "model", "provider", "status", *extra])
        tokens = CounterMetricFamily("tallygate_tokens", "Tokens by type",
                                     labels=["endpoint", "model", "provider", "type", *extra])
        cost = CounterMetricFamily("tallygate_cost_usd", "Cost in USD (exact figures are in the ledger)",
                                   labels=["model", "provider", *extra])
        latency = HistogramMetricFamily("tallygate_request_duration_seconds", "Time to the last byte",
                                        labels=["endpoint", "model", "status"])
        ttft = HistogramMetricFamily("tallygate_time_to_first_token_seconds", "Time to the first byte of the answer",
                                     labels=["endpoint", "model"])
        attempts = CounterMetricFamily("tallygate_upstream_attempts", "Upstream attempts",
                                       labels=["provider", "status"])
        refusals = CounterMetricFamily("tallygate_refusals", "Requests the gateway refused under a limit, by code",
                                       labels=["endpoint", "code"])
        fallbacks = CounterMetricFamily("tallygate_fallbacks", "Requests answered by a later attempt than the first",
                                        labels=["model"])
        # Fold the series into each family's own label sets, in order of first appearance.
        tok: dict[tuple[Any, ...], list[Any]] = {}
        usd: dict[tuple[Any, ...], list[Any]] = {}
        lat: dict[tuple[Any, ...], list[Any]] = {}
        first: dict[tuple[Any, ...], list[Any]] = {}
        fell: dict[str, list[Any]] = {}
        for s in list(self._series.values()):
            endpoint, model, provider, status, ex = s.labels
            requests.add_metric([endpoint, model, provider, status, *ex], s.requests, created=s.created)
            _add(tok, (endpoint, model, provider, ex), s.created, s.tokens)
            _add(usd, (model, provider, ex), s.created, [s.cost_pico])
            _add(lat, (endpoint, model, status), s.created, [*s.latency, s.latency_us])
            _add(first, (endpoint, model), s.created, [*s.ttft, s.ttft_us])
            _add(fell, model, s.created, [s.fallbacks])
        for (endpoint, model, provider, ex), (created, counts) in tok.items():
            for t, n in zip(TOKEN_TYPES, counts, strict=True):
                tokens.add_metric([endpoint, model, provider, t, *ex], n, created=created)
        for (model, provider, ex), (created, (pico,)) in usd.items():
            cost.add_metric([model, provider, *ex], pico / PICO_PER_USD, created=created)
        for labels, (created, counts) in lat.items():
            _histogram(latency, ("endpoint", "model", "status"), labels, created, counts)
        for labels, (created, counts) in first.items():
            _histogram(ttft, ("endpoint", "model"), labels, created, counts)
        for (provider, status), (n, created) in list(self._attempts.items()):
            attempts.add_metric([provider, status], n, created=created)
        for (endpoint, code), (n, created) in list(self._refusals.items()):
            refusals.add_metric([endpoint, code], n, created=created)
        for model, (created, (n,)) in fell.items():
            fallbacks.add_metric([model], n, created=created)
        families = [requests, tokens, cost, latency, ttft, attempts, refusals, fallbacks]
        if not _use_created():
            for family in families:
                family.samples = [s for s in family.samples if not s.name.endswith("_created")]
        return families


def _use_created() -> bool:
    """Whether prometheus_client's own counters and histograms expose `_created` now: not when
    PROMETHEUS_DISABLE_CREATED_SERIES was set at its import or `disable_created_metrics()` ran
    (its one switch for both is a module global)."""
    return bool(getattr(prometheus_metrics, "_use_created", True))


def _add(into: dict[Any, list[Any]], key: Any, created: float, values: Sequence[int]) -> None:
    """Sum `values` into `into[key]` (`[created, sums]`, created the earliest)."""
    found = into.get(key)
    if found is None:
        into[key] = [created, list(values)]
    else:
        found[0] = min(found[0], created)
        found[1] = [a + b for a, b in zip(found[1], values, strict=True)]


def _histogram(family: HistogramMetricFamily, names: tuple[str, ...], labels: tuple[str, ...], created: float,
               counts: list[int]) -> None:
    """Cumulative buckets, count and sum (microseconds -> seconds) and `_created`, as Histogram exposes them."""
    cumulative, buckets = 0, []
    for le, n in zip(_LE, counts, strict=False):  # the last of `counts` is the sum
        cumulative += n
        buckets.append((le, cumulative))
    family.add_metric(list(labels), buckets, counts[-1] / 1_000_000)
    family.samples.append(Sample(family.name + "_created", dict(zip(names, labels, strict=True)), created))
