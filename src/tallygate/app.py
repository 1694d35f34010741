"""create_app(config, settings) -> the ASGI application. Wiring only.

The proxy routes are dispatched by path straight to their raw-ASGI handlers; everything else
goes to the FastAPI management app. The database must already be migrated (`prepare_database`,
an explicit start-up step that `tallygate serve` takes); constructing the app touches no
database. The long-lived services start in the order of `services` when the ASGI lifespan
starts and stop in the reverse order when it ends (SIGTERM included): the HTTP client first,
the shared budget (which sends its last settles) next to last, and the ledger writer, which
writes what is left, last. With `settings.redis_url` the budget state lives in Redis (several
processes and replicas share it); without, in memory. `app_from_env` builds the app in each
worker process of `tallygate serve --workers N`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine, make_url

from tallygate.analytics.columnar_service import ColumnarSync, columnar_engine
from tallygate.analytics.copied_logs import CopiedLogs
from tallygate.analytics.minutes import MinuteReader
from tallygate.analytics.mirror import ColumnarEngine
from tallygate.analytics.oncall import OnCall
from tallygate.analytics.reader import AnalyticsStore
from tallygate.analytics.service import Analytics
from tallygate.api.alerts import MetricsEndpoint
from tallygate.api.health import Readiness
from tallygate.api.limits import BodyLimit, nul_check
from tallygate.api.management import create_management_app
from tallygate.api.proxy import ProxyRoutes
from tallygate.core import clock
from tallygate.errors import GatewayError, MethodNotAllowed, NotFound
from tallygate.manage.budgets import BudgetAdmin
from tallygate.manage.keys import KeyAdmin
from tallygate.manage.ratelimits import RateLimitAdmin
from tallygate.manage.sessions import SessionStore
from tallygate.observe.alerts import AlertService
from tallygate.observe.metrics import GatewayMetrics, mark_process_dead
from tallygate.observe.requestlog import RequestLog
from tallygate.observe.spikes import ErrorRates, SpendSpikes
from tallygate.observe.thresholds import ThresholdWatcher
from tallygate.observe.webhooks import WebhookSender
from tallygate.pipeline.auth import Authenticator
from tallygate.pipeline.budget import BudgetEngine, MemoryBudget
from tallygate.pipeline.exchange import Pipeline
from tallygate.pipeline.freshness import Freshness
from tallygate.pipeline.messages import send_anthropic_error
from tallygate.pipeline.models import ModelCatalog
from tallygate.pipeline.observers import CallObserver, Observers, RequestObserver
from tallygate.pipeline.ratelimit import MemoryLimiter
from tallygate.pipeline.ratelimit_rules import RuleRegistry
from tallygate.pipeline.redis_budget import RedisBudget
from tallygate.pipeline.redis_ratelimit import RatedRedisBudget, RedisLimiter
from tallygate.pipeline.routing import Router
from tallygate.pipeline.routing.shared import SharedCooldowns
from tallygate.pipeline.scopes import BudgetRegistry, LedgerSpend
from tallygate.pipeline.wire import Message, Receive, Scope, Send, new_request_id, send_error
from tallygate.providers.http import HttpClient
from tallygate.providers.registry import ProviderSet, build_providers
from tallygate.providers.secrets import Scrubber
from tallygate.settings import GatewayConfig, Settings, load_config
from tallygate.store.alerts import AlertStore
from tallygate.store.budgets import BudgetStore
from tallygate.store.db import migrate, open_engine, schema_behind
from tallygate.store.feedback import FeedbackStore
from tallygate.store.keys import KeyStore
from tallygate.store.ledger import LedgerWriter
from tallygate.store.logs import LogReader
from tallygate.store.minutes import MinuteCounts
from tallygate.store.ratelimits import RateLimitStore
from tallygate.store.refusals import RefusalCounts
from tallygate.store.sessions import SessionRows

log = logging.getLogger("tallygate")
MAX_LEDGER_BACKLOG = 100_000  # records waiting for the database before /readyz says not ready


class Service(Protocol):
    """Something that runs for the life of the process."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def prepare_database(db_url: str) -> None:
    """Migrate the database to the newest schema (idempotent): the start-up step before serving."""
    engine = open_engine(db_url)
    try:
        migrate(engine)
    finally:
        engine.dispose()


class SpendLoader:
    """Loads each key's spend in its limit's window from the ledger into the budget at start-up
    (budgets get theirs when the registry first loads them)."""

    def __init__(self, budget: MemoryBudget, ledger: LedgerSpend) -> None:
        self._budget, self._ledger = budget, ledger

    async def start(self) -> None:
        await asyncio.to_thread(self._ledger.load, self._budget)

    async def stop(self) -> None:
        return None


class Gateway:
    """The ASGI application: hot routes by exact path, the rest to the management app."""

    def __init__(self, config: GatewayConfig, settings: Settings, span_exporter: Any = None,
                 log_service: Service | None = None,
                 columnar: Callable[[], ColumnarEngine | None] | None = None) -> None:
        """`span_exporter`: where traces go when `tracing.enabled` (default: OTLP from OTEL_*);
        `log_service`: the JSON log handler, started first and stopped last; `columnar`: opens the
        analytics' columnar copy (default: the DuckDB file of `TALLYGATE_ANALYTICS_COLUMNAR`)."""
        self.settings = settings
        if settings.fake_now_ms is not None:  # tests only: a clock that crosses a midnight in seconds
            clock.run_from(settings.fake_now_ms, settings.clock_rate, settings.fake_now_from_ms)
        self.engine = engine = open_engine(settings.db_url)
        self.keys = keys = KeyStore(engine)
        self.auth = auth = Authenticator(keys, settings.admin_key)
        http = HttpClient()
        providers = ProviderSet(build_providers(config, http))
        self.catalog = catalog = ModelCatalog(config, providers.providers)
        self.ledger = ledger = LedgerWriter(engine, flush_ms=settings.ledger_flush_ms, batch=settings.ledger_batch,
                                            journal_dir=journal_dir(settings), fsync=settings.journal_fsync,
                                            max_bytes=settings.journal_max_bytes)
        budget_store = BudgetStore(engine)
        spend = LedgerSpend(engine, keys, budget_store, config.reporting.timezone)
        budget, spend_loader, redis = _budget_engine(settings, spend, ledger)
        self.redis = redis
        if redis is not None:  # requests a killed process never settled count when its journal is replayed
            ledger.on_replayed = redis.settle_replayed
        budgets = BudgetRegistry(budget_store, budget, spend)
        rate_store = RateLimitStore(engine)
        rules = RuleRegistry(rate_store)
        self.router = router = Router(config, catalog, seed=settings.routing_seed)
        cooldowns = SharedCooldowns(router.policies, settings.redis_url) if settings.redis_url and router.policies \
            else None

        alerts = config.alerts
        alert_store = AlertStore(engine)
        thresholds = ThresholdWatcher(budget, budgets.scopes, alerts.thresholds, alerts.scope_thresholds)
        detectors = _detectors(config) if alerts.enabled else []
        webhooks = WebhookSender(alerts.webhooks) if alerts.enabled else None
        alert_service = None if webhooks is None else AlertService(alert_store, webhooks, thresholds, detectors,
                                                                   alerts.evaluate_every_s)
        self.metrics = metrics = _metrics(config, settings, budget, thresholds, ledger)
        self.tracer = tracer = _tracer(config, span_exporter)
        request_log = RequestLog() if settings.log_format == "json" else None
        # roll-ups, raw, and the columnar copy (opened by the first question that needs it)
        store = AnalyticsStore(engine, open_columnar=columnar or partial(columnar_engine, settings))

        # Who hears of every finished request, in order: the ledger first (it journals the record).
        observers: list[RequestObserver] = [ledger, *detectors, *_present(metrics, request_log)]
        call_observers: list[CallObserver] = [*_present(thresholds if alerts.enabled else None, tracer)]
        # Started in this order, stopped in the reverse: the log handler last of all, then the ledger
        # (which writes what is left), the budget (its last settles), ... the HTTP client first.
        self.services: list[Service] = _present(log_service, ledger, spend_loader, budgets, rules, auth, cooldowns,
                                                webhooks, alert_service, tracer, http, providers,
                                                ColumnarSync(store))

        limiter = MemoryLimiter() if redis is None else RedisLimiter(redis)
        freshness = None if redis is None else Freshness(redis, budgets.reload_async, rules.reload_async, auth.refresh)
        pipeline = Pipeline(auth, catalog, Observers(observers, call_observers), budget, router,
                            settings.max_body_bytes, budgets.scopes, Scrubber.from_config(config),
                            ledger.refusal, None if freshness is None else freshness.catch_up,
                            limits=rules.rules, limiter=limiter, model_limits=rules.model_rules)
        proxy = ProxyRoutes(pipeline, None if freshness is None else freshness.latest)
        self._models = proxy.models
        self._hot: dict[tuple[str, str], Callable[[Scope, Receive, Send], Awaitable[None]]] = {
            ("POST", "/v1/chat/completions"): proxy.chat,
            ("POST", "/v1/embeddings"): proxy.embeddings,
            ("POST", "/v1/messages"): proxy.messages,
            ("POST", "/v1/messages/count_tokens"): proxy.count_tokens,
            ("POST", "/v1/responses"): proxy.responses,
            ("GET", "/v1/models"): proxy.models,
        }
        if metrics is not None:
            self._hot[("GET", "/metrics")] = MetricsEndpoint(metrics, config.metrics.bearer_token)
        self._allow = {path: method.encode() for method, path in self._hot}
        key_admin = KeyAdmin(keys, auth, budget, config.policies, lambda: budgets.current, lambda: rules.current,
                             budgets.reload)
        analytics = Analytics(store, config.reporting.timezone)
        minutes = MinuteReader(store, MinuteCounts(engine))
        copied_logs = CopiedLogs(store)
        logs = LogReader(engine, exact_hours=copied_logs.hours, exact_keys=copied_logs.keys)
        management = create_management_app(auth, logs, key_admin,
                                            analytics, FeedbackStore(engine), ledger,
                                            SessionStore(SessionRows(engine)),
                                            BudgetAdmin(budget_store, keys, budgets, budget),
                                            _readiness(engine, ledger, redis), alert_store,
                                            minutes,
                                            RateLimitAdmin(rate_store, keys, rules, lambda: budgets.current,
                                                           budget.bump, limiter=limiter,
                                                           refusals=RefusalCounts(engine)),
                                            OnCall(store, minutes))
        management.state.fresh = None if freshness is None else freshness.latest  # keys changed elsewhere
        self._management = BodyLimit(management, settings.max_manage_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["method"] == "HEAD" and self._allow.get(scope["path"], b"GET") == b"GET":
                scope, send = {**scope, "method": "GET"}, _without_body(send)  # RFC 9110: GET's head
            handler = self._hot.get((scope["method"], scope["path"]))
            if handler is not None:
                return await handler(scope, receive, send)
            if scope["method"] == "GET" and scope["path"].startswith("/v1/models/"):
                return await self._models(scope, receive, send)
            allow = self._allow.get(scope["path"])
            anthropic = scope["path"] == "/v1/messages" or scope["path"].startswith("/v1/messages/")
            try:
                if allow is not None:
                    raise MethodNotAllowed(scope["method"], allow)
                nul_check(scope)
                if anthropic:  # a route Anthropic serves and this gateway does not (Message Batches ...)
                    raise NotFound(f"no route {scope['method']} {scope['path']} on this gateway; the README "
                                   "lists the routes it serves")
            except GatewayError as err:
                reply = send_anthropic_error if anthropic else send_error
                return await reply(send, err, new_request_id())
            return await self._management(scope, receive, _with_request_id(send))
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)

    async def start(self) -> None:
        for service in self.services:
            await service.start()

    async def stop(self) -> None:
        for service in reversed(self.services):
            try:
                await service.stop()
            except Exception:
                log.exception("stopping %s failed", type(service).__name__)
        self.engine.dispose()
        mark_process_dead(self.settings.metrics_dir)
        log.info("ledger flushed: %d records written this run, %d bytes left in the journal", self.ledger.written,
                 self.ledger.journal.backlog if self.ledger.journal else 0)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _budget_engine(settings: Settings, spend: LedgerSpend,
                   ledger: LedgerWriter) -> tuple[BudgetEngine, Service, RatedRedisBudget | None]:
    """The budget state: in Redis with `redis_url` (shared by processes and replicas; it loads
    spend itself), else in memory, loaded from the ledger at start-up. Returns the engine, the
    service that loads its spend, and the Redis one if any."""
    if settings.redis_url:
        redis = RatedRedisBudget(settings.redis_url, spend.window,
                                 fail_open=settings.budgets_unavailable == "open", ttl_s=settings.hold_ttl_s,
                                 open_allowance=int(settings.budgets_open_allowance * 10**12),
                                 tz=spend.tz, periods=spend.periods, ledger_costs=spend.costs,
                                 ledger_written=ledger.drain,
                                 peers_file=journal_dir(settings) / "redis-peers")
        return redis, redis, redis
    memory = MemoryBudget(tz=spend.tz)
    return memory, SpendLoader(memory, spend), None


def _present(*items: Any) -> list[Any]:
    """The items that are configured (not None), in order."""
    return [item for item in items if item is not None]


def _detectors(config: GatewayConfig) -> list[SpendSpikes | ErrorRates]:
    """The spike and error-rate detectors the alerts config asks for."""
    cfg = config.alerts
    spikes: list[SpendSpikes | ErrorRates] = [SpendSpikes(cfg.spike)] if cfg.spike.group_by else []
    return spikes + ([ErrorRates(cfg.error_rate)] if cfg.error_rate is not None else [])


def _metrics(config: GatewayConfig, settings: Settings, budget: BudgetEngine, thresholds: ThresholdWatcher,
             ledger: LedgerWriter) -> GatewayMetrics | None:
    if not config.metrics.enabled:
        return None
    models = [*config.models, *(f"policy/{p}" for p in config.policies)]
    metrics = GatewayMetrics(models, config.providers, config.metrics.key_labels, budget,
                             lambda: thresholds.known.values(), settings.metrics_dir)
    metrics.watch_ledger(lambda: ledger.pending, lambda: ledger.failing)
    ledger.on_write = metrics.ledger_written
    ledger.on_failure = metrics.ledger_state
    return metrics


def _tracer(config: GatewayConfig, span_exporter: Any) -> Any:
    """The request tracer when `tracing.enabled` (OpenTelemetry is imported only then)."""
    if not config.tracing.enabled:
        return None
    from tallygate.observe.tracing import RequestTracer

    return RequestTracer({n: p.type for n, p in config.providers.items()}, span_exporter)


def _readiness(engine: Engine, ledger: LedgerWriter, redis: RedisBudget | None) -> Readiness:
    def details() -> dict[str, object]:
        """Shown either way; `degraded` says what fails while requests are still served."""
        status = ledger.status()
        degraded = []
        if status["database_failing"]:
            degraded.append(f"the ledger database fails writes ({status['database_error']}): "
                            f"{status['pending_records']} records wait in the journal, and requests are still "
                            "answered and journaled")
        return {"degraded": degraded, "ledger": status}

    readiness = Readiness(details=details)

    async def database() -> str | None:
        return await asyncio.to_thread(schema_behind, engine)

    async def ledger_backlog() -> str | None:
        refusal = ledger.refusal()
        if refusal is not None:
            return f"{refusal.message} (requests are answered 503 {refusal.code})"
        waiting = ledger.pending
        return f"{waiting} ledger records wait for the database" if waiting > MAX_LEDGER_BACKLOG else None

    readiness.add("database", database)
    if redis is not None:
        readiness.add("redis", redis.ping)
    readiness.add("ledger", ledger_backlog)
    return readiness


def _without_body(send: Send) -> Send:
    """A GET's answer to a HEAD request: status and headers (Content-Length included), no body."""
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)
    return wrapped


def _with_request_id(send: Send) -> Send:
    """Every management answer (its 404 for unknown routes included) carries an `x-request-id`."""
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers") or [])
            if not any(k.lower() == b"x-request-id" for k, _ in headers):
                headers.append((b"x-request-id", new_request_id().encode()))
            message = {**message, "headers": headers}
        await send(message)
    return wrapped


def create_app(config: GatewayConfig, settings: Settings, span_exporter: Any = None,
               log_service: Service | None = None,
               columnar: Callable[[], ColumnarEngine | None] | None = None) -> Gateway:
    return Gateway(config, settings, span_exporter, log_service, columnar)


def journal_dir(settings: Settings) -> Path:
    """`TALLYGATE_JOURNAL_DIR`, else `<file>.journal` next to a SQLite ledger, else
    `./tallygate-journal`; each process takes a slot of its own under it (`0`, `1` ...)."""
    if settings.journal_dir:
        return Path(settings.journal_dir)
    url = make_url(settings.db_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database + ".journal")
    return Path("tallygate-journal")


def app_from_env() -> Gateway:
    """The app of one worker process: config from TALLYGATE_CONFIG, settings from TALLYGATE_*
    (set by `tallygate serve --workers N` in the parent)."""
    import gc

    from tallygate.core.orphans import end_with_parent

    if os.environ.get("TALLYGATE_SERVE_PID", "").isdigit():  # a worker stops when `serve` dies
        end_with_parent(int(os.environ["TALLYGATE_SERVE_PID"]))
    settings = Settings.from_env()
    json_log = None
    if settings.log_format == "json":
        from tallygate.observe.requestlog import JsonLogging

        json_log = JsonLogging()
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(load_config(os.environ.get("TALLYGATE_CONFIG") or None), settings, log_service=json_log)
    gc.freeze()
    return app
