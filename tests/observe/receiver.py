"""A webhook receiver on a loopback port: records every POST (headers, raw body), answers with
the status the test sets (to exercise retries)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tallygate.observe.events import verify


class Receiver:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.received: list[tuple[dict[str, str], bytes, int]] = []  # headers, body, status answered
        self.fail_next = 0  # answer this many POSTs with 503
        self.redirect_to: str | None = None  # answer every POST with a 307 to this URL
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer._lock:
                    failing = outer.fail_next > 0
                    outer.fail_next -= failing
                    status = 307 if outer.redirect_to else 503 if failing else 204
                    outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                if outer.redirect_to:
                    self.send_header("Location", outer.redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def events(self) -> list[dict[str, Any]]:
        """Every event accepted (2xx), each checked for a valid signature; duplicates kept."""
        with self._lock:
            got = list(self.received)
        out = []
        for headers, body, status in got:
            if status >= 300:
                continue
            assert verify(self.secret, body, headers["tallygate-signature"], time.time()), headers
            out.append(json.loads(body))
        return out

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            if predicate(events) or time.monotonic() > deadline:
                return events
            time.sleep(0.05)
