"""create_app(config, settings) -> the ASGI application. Wiring only.

The proxy routes are dispatched by path straight to their raw-ASGI handlers; everything else
goes to the FastAPI management app. The database must already be migrated (`prepare_database`,
an explicit start-up step that `tallygate serve` takes); constructing the app touches no
database. The long-lived services start in the order of `services` when the ASGI lifespan
starts and stop in the reverse order when it ends (SIGTERM included): the HTTP client first,
the ledger writer, which writes what is left, last.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Protocol

import orjson
from sqlalchemy import make_url

from tallygate.analytics.reader import AnalyticsStore
from tallygate.analytics.service import Analytics
from tallygate.api.asgi import (
    JSON_HEADERS,
    Message,
    Receive,
    Scope,
    Send,
    new_request_id,
    send_bytes,
    send_error,
)
from tallygate.api.limits import BodyLimit, nul_check
from tallygate.api.management import create_management_app
from tallygate.api.messages import MessagesAPI
from tallygate.api.proxy import Proxy
from tallygate.api.responses import ResponsesAPI
from tallygate.errors import GatewayError, MethodNotAllowed
from tallygate.manage.keys import KeyAdmin
from tallygate.pipeline.auth import Authenticator
from tallygate.pipeline.budget import MemoryBudget
from tallygate.pipeline.models import ModelCatalog
from tallygate.pipeline.observers import Observers
from tallygate.pipeline.routing import Router
from tallygate.providers.http import HttpClient
from tallygate.providers.registry import build_providers
from tallygate.providers.secrets import Scrubber
from tallygate.settings import GatewayConfig, Settings
from tallygate.store.db import migrate, open_engine
from tallygate.store.feedback import FeedbackStore
from tallygate.store.keys import KeyStore
from tallygate.store.ledger import LedgerWriter
from tallygate.store.logs import LogReader

log = logging.getLogger("tallygate")


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

    def __init__(self, config: GatewayConfig, settings: Settings) -> None:
        self.settings = settings
        self.engine = open_engine(settings.db_url)
        self.keys = KeyStore(self.engine)
        self.auth = Authenticator(self.keys, settings.admin_key)
        self.http = HttpClient()
        self.catalog = ModelCatalog(config, build_providers(config, self.http))
        self.ledger = LedgerWriter(self.engine, flush_ms=settings.ledger_flush_ms, batch=settings.ledger_batch,
                                   journal_dir=journal_dir(settings), fsync=settings.journal_fsync,
                                   max_bytes=settings.journal_max_bytes)
        self.budget = MemoryBudget()
        self.router = Router(config, self.catalog, seed=settings.routing_seed)
        self.services: list[Service] = [self.ledger, SpendLoader(self.keys, self.budget), self.auth, self.http]
        proxy = Proxy(self.auth, self.catalog, Observers([self.ledger]), self.budget, settings.max_body_bytes,
                      self.router, Scrubber.from_config(config), lambda: self.ledger.full)
        messages, responses = MessagesAPI(proxy), ResponsesAPI(proxy)
        self._models = proxy.models
        self._hot = {
            ("POST", "/v1/chat/completions"): proxy.chat,
            ("POST", "/v1/embeddings"): proxy.embeddings,
            ("POST", "/v1/messages"): messages.messages,
            ("POST", "/v1/messages/count_tokens"): messages.count_tokens,
            ("POST", "/v1/responses"): responses.responses,
            ("GET", "/v1/models"): proxy.models,
            ("GET", "/readyz"): self._ready,
        }
        self._allow = {path: method.encode() for method, path in self._hot}
        key_admin = KeyAdmin(self.keys, self.auth, self.budget, config.policies)
        management = create_management_app(self.auth, LogReader(self.engine), key_admin,
                                            Analytics(AnalyticsStore(self.engine)),
                                            FeedbackStore(self.engine), self.ledger)
        self._management = BodyLimit(management, settings.max_manage_body_bytes)

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

    async def _ready(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`/readyz`: 200 while the gateway takes requests, 503 when the ledger journal is full;
        the body shows the ledger backlog either way."""
        status = self.ledger.status()
        await send_bytes(send, 503 if status["full"] else 200,
                         orjson.dumps({"status": "unavailable" if status["full"] else "ok", "ledger": status}),
                         list(JSON_HEADERS))

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
        log.info("ledger flushed: %d records written this run, %d bytes left in the journal",
                 self.ledger.written, self.ledger.journal.backlog if self.ledger.journal else 0)

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


def journal_dir(settings: Settings) -> Path:
    """`TALLYGATE_JOURNAL_DIR`, else `<file>.journal` next to a SQLite ledger, else
    `./tallygate-journal`."""
    if settings.journal_dir:
        return Path(settings.journal_dir)
    url = make_url(settings.db_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database + ".journal")
    return Path("tallygate-journal")


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


def create_app(config: GatewayConfig, settings: Settings) -> Gateway:
    return Gateway(config, settings)
