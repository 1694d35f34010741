"""Prometheus metrics with `prometheus_client`: a request observer updates them, `/metrics`
renders them from a worker thread.

Labels are bounded by configuration, never by what a client sends: `model` is a configured
model or policy name (anything else folds into `other`), `provider` a configured provider,
`status` a class (`2xx`, `4xx`, `5xx`), `endpoint` one of the proxy's, plus only the key labels
named in `metrics.key_labels`. In one process the request series are plain integers
(`observe/request_tally.py`: a request costs a dict lookup and a few additions) that a collector
renders at scrape time. With several worker processes, `PROMETHEUS_MULTIPROC_DIR` switches to
prometheus_client's multiprocess mode (one mmap file per process, summed at scrape time), which
`tallygate serve --workers N` sets up: there the request series are prometheus_client children,
cached per label tuple.

Budget remaining (per limited key and budget seen by this process) is computed at scrape time
from the budget engine; the ledger's backlog and batch write time come from the ledger writer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from tallygate.core.money import PICO_PER_USD
from tallygate.core.record import LedgerRecord
from tallygate.observe.request_tally import (
    LATENCY_BUCKETS,
    OTHER,
    REFUSAL_CODES,
    TOKEN_TYPES,
    RequestTally,
    status_class,
)
from tallygate.pipeline.budget import BudgetEngine, Scope

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _BudgetCollector(Collector):
    """`tallygate_budget_remaining_usd` at scrape time, for every limited scope seen."""

    def __init__(self, budget: BudgetEngine, scopes: Callable[[], Iterable[Scope]]) -> None:
        self._budget, self._scopes = budget, scopes

    def collect(self) -> Iterable[GaugeMetricFamily]:
        g = GaugeMetricFamily("tallygate_budget_remaining_usd",
                              "Limit minus the spend of its current window (the month by default), "
                              "per limited key and budget",
                              labels=["kind", "scope"])
        for s in list(self._scopes()):
            if s.limit:
                try:
                    spend = self._budget.spend(s.id, s.period)
                except Exception:  # a shared engine out of reach: no figure rather than a failed scrape
                    continue
                g.add_metric([s.kind, s.name], (s.limit - spend) / PICO_PER_USD)
        yield g


class _DriftCollector(Collector):
    """`tallygate_budget_drift_usd` at scrape time: how far the shared budget counters are from
    the ledger (`RedisBudget.drift`, a reconciliation on every scrape)."""

    def __init__(self, drift: Callable[[], int]) -> None:
        self._drift = drift

    def collect(self) -> Iterable[GaugeMetricFamily]:
        g = GaugeMetricFamily("tallygate_budget_drift_usd",
                              "Sum over this month's keys and budgets of |shared counter - ledger spend|")
        try:
            g.add_metric([], self._drift() / PICO_PER_USD)
        except Exception:  # Redis or the database out of reach: no figure rather than a failed scrape
            return
        yield g


class GatewayMetrics:
    """The gateway's Prometheus series; `request_finished` is a request observer.

    In one process the request series are a `RequestTally` (plain integers, rendered at scrape
    time); with `multiprocess_dir` they are prometheus_client values in mmap files (`_FileSeries`),
    which the scraping worker sums over every worker's files."""

    request_finished: Callable[[LedgerRecord], None]

    def __init__(self, models: Collection[str], providers: Collection[str], key_labels: Sequence[str] = (),
                 budget: BudgetEngine | None = None, scopes: Callable[[], Iterable[Scope]] | None = None,
                 multiprocess_dir: str | None = None) -> None:
        self._multiproc = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        reg = None if multiprocess_dir else self.registry  # multiprocess: values live in mmap files
        if multiprocess_dir:
            self.request_finished = _FileSeries(models, providers, key_labels).request_finished
        else:
            tally = RequestTally(models, providers, key_labels)
            self.registry.register(tally)
            self.request_finished = tally.request_finished  # an attribute: no hop on the hot path
        self.backlog = Gauge("tallygate_ledger_backlog", "Ledger records waiting to be written",
                             multiprocess_mode="livesum", registry=reg)
        self.ledger_write = Histogram("tallygate_ledger_write_seconds", "Time to write one ledger batch",
                                      buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5), registry=reg)
        self.db_failing = Gauge("tallygate_ledger_database_failing",
                                "1 while the ledger's database fails or refuses writes (the records wait in the "
                                "journal: tallygate_ledger_backlog)", multiprocess_mode="livemax", registry=reg)
        self._pending: Callable[[], int] | None = None
        self._failing: Callable[[], bool] = lambda: False
        if multiprocess_dir:
            MultiProcessCollector(self.registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        if budget is not None and scopes is not None:
            self.registry.register(_BudgetCollector(budget, scopes))
        drift = getattr(budget, "drift", None)
        if callable(drift):
            self.registry.register(_DriftCollector(drift))

    def watch_ledger(self, pending: Callable[[], int], failing: Callable[[], bool] = lambda: False) -> None:
        self._pending, self._failing = pending, failing

    def ledger_written(self, records: int, seconds: float) -> None:
        """The ledger writer's `on_write` hook."""
        self.ledger_write.observe(seconds)
        self.ledger_state()

    def ledger_state(self) -> None:
        """The backlog and whether the database fails writes, now (the ledger writer's
        `on_failure` hook too: with workers, nothing else updates them during an outage)."""
        if self._pending is not None:
            self.backlog.set(self._pending())
        self.db_failing.set(1 if self._failing() else 0)

    def render(self) -> bytes:
        """The text exposition (blocking: call it from a worker thread)."""
        if not self._multiproc:
            self.ledger_state()
        return generate_latest(self.registry)


class _FileSeries:
    """The request series as prometheus_client values (multiprocess mode: mmap files per worker)."""

    def __init__(self, models: Collection[str], providers: Collection[str], key_labels: Sequence[str]) -> None:
        self._models = frozenset(models)
        self._providers = frozenset(providers)
        self._key_labels = tuple(key_labels)
        extra = list(self._key_labels)
        self.requests = Counter("tallygate_requests", "Requests answered",
                                ["endpoint", "model", "provider", "status", *extra], registry=None)
        self.tokens = Counter("tallygate_tokens", "Tokens by type",
                              ["endpoint", "model", "provider", "type", *extra], registry=None)
        self.cost = Counter("tallygate_cost_usd", "Cost in USD (exact figures are in the ledger)",
                            ["model", "provider", *extra], registry=None)
        self.latency = Histogram("tallygate_request_duration_seconds", "Time to the last byte",
                                 ["endpoint", "model", "status"], buckets=LATENCY_BUCKETS, registry=None)
        self.ttft = Histogram("tallygate_time_to_first_token_seconds", "Time to the first byte of the answer",
                              ["endpoint", "model"], buckets=LATENCY_BUCKETS, registry=None)
        self.attempts = Counter("tallygate_upstream_attempts", "Upstream attempts", ["provider", "status"],
                                registry=None)
        self.refusals = Counter("tallygate_refusals", "Requests the gateway refused under a limit, by code",
                                ["endpoint", "code"], registry=None)
        self.fallbacks = Counter("tallygate_fallbacks", "Requests answered by a later attempt than the first",
                                 ["model"], registry=None)
        self._children: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self._attempt_children: dict[tuple[str, int], Any] = {}  # configured providers x statuses: bounded

    def _series(self, r: LedgerRecord) -> tuple[Any, ...]:
        model = r.requested_model if r.requested_model in self._models else OTHER
        provider = r.provider if r.provider in self._providers else (OTHER if r.provider else "none")
        extra = tuple(r.labels.get(k, "") for k in self._key_labels)
        key = (r.endpoint, model, provider, r.status, extra)
        found = self._children.get(key)
        if found is None:
            status = status_class(r.status)
            found = (self.requests.labels(r.endpoint, model, provider, status, *extra),
                     tuple(self.tokens.labels(r.endpoint, model, provider, t, *extra) for t in TOKEN_TYPES),
                     self.cost.labels(model, provider, *extra),
                     self.latency.labels(r.endpoint, model, status),
                     self.ttft.labels(r.endpoint, model),
                     self.fallbacks.labels(model))
            if len(self._children) > 50_000:  # key label values churn: keep the cache bounded
                self._children.clear()
            self._children[key] = found
        return found

    def request_finished(self, r: LedgerRecord) -> None:
        requests, tokens, cost, latency, ttft, fallbacks = self._series(r)
        requests.inc()
        for child, n in zip(tokens, (r.input_tokens, r.output_tokens, r.cached_tokens, r.cache_write_tokens,
                                     r.reasoning_tokens), strict=True):
            if n:
                child.inc(n)
        if r.cost_pico:
            cost.inc(r.cost_pico / PICO_PER_USD)
        latency.observe(r.latency_us / 1e6)
        if r.ttft_us is not None:
            ttft.observe(r.ttft_us / 1e6)
        for a in r.attempts:
            child = self._attempt_children.get((a.provider, a.status))
            if child is None:
                provider = a.provider if a.provider in self._providers else OTHER
                child = self._attempt_children[(a.provider, a.status)] = self.attempts.labels(
                    provider, status_class(a.status))
            child.inc()
        if len(r.attempts) > 1 and r.status < 400:
            fallbacks.inc()
        if r.error_code in REFUSAL_CODES:
            self.refusals.labels(r.endpoint, r.error_code).inc()


def mark_process_dead(multiprocess_dir: str | None, pid: int | None = None) -> None:
    """Drop a stopped worker's live gauges (prometheus_client's multiprocess clean-up)."""
    if multiprocess_dir:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid(), multiprocess_dir)  # type: ignore[no-untyped-call]
