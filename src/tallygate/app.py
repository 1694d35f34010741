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

from sqlalchemy import make_url

from tallygate.analytics.columnar_service import ColumnarSync, columnar_engine
from tallygate.analytics.reader import AnalyticsStore
from tallygate.analytics.service import Analytics
from tallygate.api.alerts import MetricsEndpoint
from tallygate.api.asgi import Message, Receive, Scope, Send, new_request_id, send_error
from tallygate.api.health import Readiness
from tallygate.api.limits import BodyLimit, nul_check
from tallygate.api.management import create_management_app
from tallygate.api.messages import MessagesAPI
from tallygate.api.proxy import Proxy
from tallygate.api.responses import ResponsesAPI
from tallygate.core.timebuckets import month_floor
from tallygate.errors import GatewayError, MethodNotAllowed
from tallygate.manage.budgets import BudgetAdmin
from tallygate.manage.keys import KeyAdmin
from tallygate.manage.sessions import SessionStore
from tallygate.observe.alerts import AlertService
from tallygate.observe.metrics import GatewayMetrics, mark_process_dead
from tallygate.observe.requestlog import RequestLog
from tallygate.observe.spikes import ErrorRates, SpendSpikes
from tallygate.observe.thresholds import ThresholdWatcher
from tallygate.observe.webhooks import WebhookSender
from tallygate.pipeline.auth import Authenticator
from tallygate.pipeline.budget import BudgetEngine, MemoryBudget
from tallygate.pipeline.models import ModelCatalog
from tallygate.pipeline.observers import CallObserver, Observers, RequestObserver
from tallygate.pipeline.redis_budget import RedisBudget
from tallygate.pipeline.routing import Router
from tallygate.pipeline.routing.shared import SharedCooldowns
from tallygate.pipeline.scopes import BudgetRegistry, month_spend
from tallygate.providers.http import HttpClient
from tallygate.providers.registry import build_providers
from tallygate.providers.secrets import Scrubber
from tallygate.settings import GatewayConfig, Settings, load_config
from tallygate.store.alerts import AlertStore
from tallygate.store.budgets import BudgetStore
from tallygate.store.db import migrate, open_engine, schema_behind
from tallygate.store.feedback import FeedbackStore
from tallygate.store.keys import KeyStore, now_ms
from tallygate.store.ledger import LedgerWriter
from tallygate.store.logs import LogReader
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
    """Loads this month's spend per key from the ledger into the budget at start-up."""

    def __init__(self, keys: KeyStore, budget: MemoryBudget) -> None:
        self._keys, self._budget = keys, budget

    async def start(self) -> None:
        month = self._budget.month
        self._budget.load(await asyncio.to_thread(self._keys.spend_since, month), month)

    async def stop(self) -> None:
        return None


class Gateway:
    """The ASGI application: hot routes by exact path, the rest to the management app."""

    def __init__(self, config: GatewayConfig, settings: Settings, span_exporter: Any = None) -> None:
        """`span_exporter`: where traces go when `tracing.enabled` (default: OTLP from OTEL_*)."""
        self.settings = settings
        self.engine = open_engine(settings.db_url)
        self.keys = KeyStore(self.engine)
        self.auth = Authenticator(self.keys, settings.admin_key)
        self.http = HttpClient()
        self.catalog = ModelCatalog(config, build_providers(config, self.http))
        self.ledger = LedgerWriter(self.engine, flush_ms=settings.ledger_flush_ms, batch=settings.ledger_batch,
                                   journal_dir=journal_dir(settings), fsync=settings.journal_fsync,
                                   max_bytes=settings.journal_max_bytes)
        budget_store = BudgetStore(self.engine)
        self.budget: BudgetEngine
        self.redis: RedisBudget | None = None
        first: Service
        if settings.redis_url:
            self.budget = first = self.redis = RedisBudget(
                settings.redis_url, partial(month_spend, self.keys, budget_store),
                fail_open=settings.budgets_unavailable == "open", ttl_s=settings.hold_ttl_s)
        else:
            memory = self.budget = MemoryBudget()
            first = SpendLoader(self.keys, memory)
        self.budgets = BudgetRegistry(budget_store, self.budget, lambda: month_floor(now_ms()))
        self.router = Router(config, self.catalog, seed=settings.routing_seed)
        observers: list[RequestObserver] = [self.ledger]
        call_observers: list[CallObserver] = []
        self.services: list[Service] = [self.ledger, first, self.budgets, self.auth]
        if settings.redis_url and self.router.policies:
            self.services.append(SharedCooldowns(self.router.policies, settings.redis_url))
        self.alerts = self._alerts(config, observers, call_observers)
        self.metrics = self._metrics(config, settings, observers)
        if settings.log_format == "json":
            observers.append(RequestLog())
        self.tracer = None
        if config.tracing.enabled:
            from tallygate.observe.tracing import RequestTracer

            self.tracer = RequestTracer({n: p.type for n, p in config.providers.items()}, span_exporter)
            call_observers.append(self.tracer)
            self.services.append(self.tracer)
        self.services.append(self.http)
        proxy = Proxy(self.auth, self.catalog, Observers(observers, call_observers), self.budget,
                      settings.max_body_bytes, self.router, self.budgets.scopes, Scrubber.from_config(config),
                      lambda: self.ledger.full)
        messages, responses = MessagesAPI(proxy), ResponsesAPI(proxy)
        self._models = proxy.models
        self._hot: dict[tuple[str, str], Callable[[Scope, Receive, Send], Awaitable[None]]] = {
            ("POST", "/v1/chat/completions"): proxy.chat,
            ("POST", "/v1/embeddings"): proxy.embeddings,
            ("POST", "/v1/messages"): messages.messages,
            ("POST", "/v1/messages/count_tokens"): messages.count_tokens,
            ("POST", "/v1/responses"): responses.responses,
            ("GET", "/v1/models"): proxy.models,
        }
        if self.metrics is not None:
            self._hot[("GET", "/metrics")] = MetricsEndpoint(self.metrics, config.metrics.bearer_token)
        self._allow = {path: method.encode() for method, path in self._hot}
        key_admin = KeyAdmin(self.keys, self.auth, self.budget, config.policies, lambda: self.budgets.current)
        store = AnalyticsStore(self.engine, columnar=columnar_engine(settings))
        self.services.append(ColumnarSync(store))
        analytics = Analytics(store, config.reporting.timezone)
        management = create_management_app(self.auth, LogReader(self.engine, exact_hours=store.log_hours), key_admin,
                                            analytics,
                                            FeedbackStore(self.engine), self.ledger,
                                            SessionStore(SessionRows(self.engine)),
                                            BudgetAdmin(budget_store, self.keys, self.budgets, self.budget),
                                            self._readiness(), self.alert_store)
        self._management = BodyLimit(management, settings.max_manage_body_bytes)

    def _alerts(self, config: GatewayConfig, observers: list[RequestObserver],
                call_observers: list[CallObserver]) -> AlertService | None:
        """Threshold, spike and error-rate detectors fed by the observers; the evaluating and
        delivering services (none with `alerts.enabled: false`; `GET /v1/alerts` still lists)."""
        cfg = config.alerts
        self.alert_store = AlertStore(self.engine)
        self.thresholds = ThresholdWatcher(self.budget, self.budgets.scopes,
                                           cfg.thresholds, cfg.scope_thresholds)
        if not cfg.enabled:
            return None
        call_observers.append(self.thresholds)
        detectors: list[SpendSpikes | ErrorRates] = []
        if cfg.spike.group_by:
            detectors.append(SpendSpikes(cfg.spike))
        if cfg.error_rate is not None:
            detectors.append(ErrorRates(cfg.error_rate))
        observers.extend(detectors)
        self.webhooks = WebhookSender(cfg.webhooks)
        service = AlertService(self.alert_store, self.webhooks, self.thresholds, detectors, cfg.evaluate_every_s)
        self.services += [self.webhooks, service]  # stopped in reverse: the last evaluation, then delivery
        return service

    def _metrics(self, config: GatewayConfig, settings: Settings,
                 observers: list[RequestObserver]) -> GatewayMetrics | None:
        if not config.metrics.enabled:
            return None
        models = [*config.models, *(f"policy/{p}" for p in config.policies)]
        metrics = GatewayMetrics(models, config.providers, config.metrics.key_labels, self.budget,
                                 lambda: self.thresholds.known.values(), settings.metrics_dir)
        metrics.watch_ledger(lambda: self.ledger.pending)
        self.ledger.on_write = metrics.ledger_written
        observers.append(metrics)
        return metrics

    def _readiness(self) -> Readiness:
        readiness = Readiness(details=lambda: {"ledger": self.ledger.status()})

        async def database() -> str | None:
            return await asyncio.to_thread(schema_behind, self.engine)

        async def ledger() -> str | None:
            if self.ledger.full:
                return (f"the ledger journal is full ({self.ledger.journal.backlog} bytes wait for the "
                        "database): requests are refused until it drains")
            waiting = self.ledger.pending
            return f"{waiting} ledger records wait for the database" if waiting > MAX_LEDGER_BACKLOG else None

        readiness.add("database", database)
        if self.redis is not None:
            readiness.add("redis", self.redis.ping)
        readiness.add("ledger", ledger)
        return readiness

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handler = self._hot.get((scope["method"], scope["path"]))
            if handler is not None:
                return await handler(scope, receive, send)
            if scope["method"] == "GET" and scope["path"].startswith("/v1/models/"):
                return await self._models(scope, receive, send)
            allow = self._allow.get(scope["path"])
            try:
                if allow is not None:
                    raise MethodNotAllowed(scope["method"], allow)
                nul_check(scope)
            except GatewayError as err:
                return await send_error(send, err, new_request_id())
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


def create_app(config: GatewayConfig, settings: Settings, span_exporter: Any = None) -> Gateway:
    return Gateway(config, settings, span_exporter)


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

    settings = Settings.from_env()
    json_log = None
    if settings.log_format == "json":
        from tallygate.observe.requestlog import JsonLogging

        json_log = JsonLogging()
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(load_config(os.environ.get("TALLYGATE_CONFIG") or None), settings)
    if json_log is not None:
        app.services.insert(0, json_log)  # stopped last: after the ledger's final line
    gc.freeze()
    return app
