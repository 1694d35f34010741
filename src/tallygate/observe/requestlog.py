"""Structured logs: one JSON line per request (`--log-format json`), and JSON log messages.

`RequestLog` is a request observer: it builds the line (request id, key id and name, endpoint,
models, provider, status, error type, tokens, exact cost, latency, ttft, tags) and hands it to
the `tallygate.requests` logger. No secret or prompt is ever in a record, so none reaches a
line. `JsonLogging` routes every log record through a `QueueHandler`, so the event loop only
enqueues; a listener thread formats and writes to stderr.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
from typing import Any

import orjson

from tallygate.core.money import usd_text
from tallygate.core.record import LedgerRecord
from tallygate.observe.events import iso

REQUEST_LOGGER = "tallygate.requests"


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object: time, level, logger, message, and a request's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": iso(int(record.created * 1000)), "level": record.levelname.lower(),
                                "logger": record.name}
        fields = getattr(record, "request", None)
        if fields is not None:
            line.update(fields)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def request_fields(r: LedgerRecord) -> dict[str, Any]:
    return {"event": "request", "request_id": r.id, "key_id": r.key_id, "key_name": r.key_name,
            "endpoint": r.endpoint, "model": r.requested_model, "served_model": r.served_model,
            "provider": r.provider, "status": r.status, "error_type": r.error_type,
            "error_code": r.error_code, "stream": r.stream,
            "partial": r.partial, "input_tokens": r.input_tokens, "output_tokens": r.output_tokens,
            "cost_usd": usd_text(r.cost_pico), "latency_ms": r.latency_us / 1000,
            "ttft_ms": None if r.ttft_us is None else r.ttft_us / 1000, "tags": list(r.tags)}


class RequestLog:
    """A request observer writing one line per request to the `tallygate.requests` logger."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger(REQUEST_LOGGER)

    def request_finished(self, record: LedgerRecord) -> None:
        self._log.info("request %s", record.id, extra={"request": request_fields(record)})


class JsonLogging:
    """Every log record goes through a queue to a thread writing JSON lines to `stream`. A
    service: `stop()` (the last service stopped) writes what is queued and makes the rest of the
    process's lines direct, because uvicorn ends on SIGTERM by re-raising it (no atexit)."""

    def __init__(self, level: int = logging.INFO, stream: Any = None) -> None:
        q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._out = logging.StreamHandler(stream or sys.stderr)
        self._out.setFormatter(JsonFormatter())
        self._listener = logging.handlers.QueueListener(q, self._out, respect_handler_level=False)
        root = logging.getLogger()
        root.handlers[:] = [logging.handlers.QueueHandler(q)]
        root.setLevel(level)
        self._listener.start()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._listener.stop()
        logging.getLogger().handlers[:] = [self._out]
