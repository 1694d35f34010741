"""A real gateway on a loopback port for end-to-end tests: in this process, or as a subprocess.

`Gateway` runs `tallygate serve` in a subprocess, for what needs a real process (signals,
restarts, `kill -9`), which dies with the test process (`tests/lifeline.py`). `InProcessGateway`
serves the same app from a thread of the test process through uvicorn on a real socket: the same
HTTP, a fraction of the start-up time.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path

import yaml

from tests.fakes.loopback import free_port
from tests.lifeline import spawn

ADMIN_KEY = "tg-test-admin-secret"
START_S = 90  # a start under CI load (migrations, price tables, several fakes) can take tens of seconds


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the gateway writes on a raw socket until it closes it (or a reset, or the timeout)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


class Gateway:
    """A gateway process on a free loopback port, with its own SQLite ledger in `workdir`."""

    def __init__(self, workdir: Path, config: dict | None, env: dict[str, str] | None = None,
                 db_url: str | None = None, args: tuple[str, ...] = ()) -> None:
        """`db_url`: another database than the SQLite file in `workdir`; `args`: more `serve` options."""
        self.workdir = workdir
        self.db_path = workdir / "ledger.db"
        self.db_url = db_url or f"sqlite:///{self.db_path}"
        self.args = args
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = workdir / "tallygate.yaml"
            self.config_path.write_text(yaml.safe_dump(config))
        self.env = {**os.environ, "TALLYGATE_ADMIN_KEY": ADMIN_KEY, **(env or {})}
        self.port = 0
        self.ready = False  # answered once since start()
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "gateway.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tallygate", *args, "--db", self.db_url],
                              env=self.env, capture_output=True, text=True, timeout=60)

    def create_key(self, name: str = "test", monthly_limit: str | Decimal | None = None, **labels: str) -> str:
        """A new API key's secret (through the management API once the gateway runs; else the CLI),
        limited to `monthly_limit` USD a month if given."""
        limit = {} if monthly_limit is None else {"monthly_limit": str(monthly_limit)}
        if self.port:
            status, _, body = self.post_json("/v1/manage/apikey", {"name": name, "labels": labels, **limit})
            assert status == 201, body
            return str(body["key"])
        args = ["keys", "create", "--name", name, *(["--limit", limit["monthly_limit"]] if limit else [])]
        for k, v in labels.items():
            args += ["--label", f"{k}={v}"]
        out = self.cli(*args)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1]

    def spend_when_settled(self, key: str, timeout: float = 10.0) -> Decimal:
        """`key`'s monthly spend once nothing of it is reserved (or after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            status, me = self.get("/v1/key", key=key)
            assert status == 200, me
            if me["monthly_reserved"] == "0" or time.monotonic() > deadline:
                return Decimal(me["monthly_spend"])
            time.sleep(0.05)

    def start(self) -> Gateway:
        self.port, self.ready = free_port(), False
        args = [sys.executable, "-m", "tallygate", "serve", "--db", self.db_url, "--port", str(self.port), *self.args]
        if self.config_path is not None:
            args += ["--config", str(self.config_path)]
        self._log = open(self.log_path, "ab")
        self.proc = spawn(args, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{self.log()}")
            try:
                self.get("/v1/models", key=ADMIN_KEY)
                self.ready = True
                return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        self.stop(signal.SIGKILL)  # a process that never answered is not left behind
        raise RuntimeError(f"gateway did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc, self.ready = None, False
        self._log.close()
        return code

    def request(self, method: str, path: str, body: bytes | None = None, key: str | None = ADMIN_KEY,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if key is not None:
            req.add_header("Authorization", f"Bearer {key}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()
        except urllib.error.URLError as err:  # once started, a refusal says why: the process's state and log
            if self.ready and isinstance(err.reason, ConnectionRefusedError):
                code = None if self.proc is None else self.proc.poll()
                state = "running" if code is None else f"exited {code}"
                raise ConnectionRefusedError(f"the gateway refused a connection ({state}); "
                                             f"its log ends:\n{self.log()[-4000:]}") from err
            raise

    def get(self, path: str, key: str | None = ADMIN_KEY) -> tuple[int, dict]:
        status, _, body = self.request("GET", path, key=key)
        return status, json.loads(body)

    def wait_columnar(self, timeout_s: float = 120) -> None:
        """Wait until the analytics' columnar copy (made in the background from start-up, or from the
        first question that needs it) answers: until then the roll-ups and the raw ledger do."""
        deadline = time.monotonic() + timeout_s
        while True:
            status, doc = self.get("/v1/analytics/usage?group_by=tag,label.team&limit=1")
            assert status == 200, doc
            if doc["plan"]["source"] == "columnar" and doc["plan"]["copy"] == "ready":
                return
            assert time.monotonic() < deadline, "the columnar copy was never made"
            time.sleep(0.05)

    def post_json(self, path: str, payload: object, key: str | None = ADMIN_KEY,
                  headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], dict]:
        status, hdrs, body = self.request("POST", path, json.dumps(payload).encode(), key,
                                          {"Content-Type": "application/json", **(headers or {})})
        return status, hdrs, json.loads(body) if body else {}

    def log_record(self, request_id: str, timeout: float = 5.0) -> dict:
        """The ledger record of `request_id` through the API, waiting for the batched writer."""
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.get(f"/v1/logs/{request_id}")
            if status == 200 or time.monotonic() > deadline:
                assert status == 200, body
                return body
            time.sleep(0.05)

    def ledger_rows(self) -> list[dict]:
        """Every ledger row, read straight from the SQLite file."""
        con = sqlite3.connect(self.db_path)
        con.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in con.execute("SELECT * FROM requests ORDER BY created_at, id")]
        finally:
            con.close()


class InProcessGateway(Gateway):
    """The gateway app served by uvicorn from a thread of this process, on a free loopback port.
    `span_exporter`, if set before `start()`, receives the traces (with `tracing.enabled`)."""

    span_exporter: object = None
    columnar: object = None  # if set before `start()`: opens the analytics' columnar copy

    def start(self) -> InProcessGateway:
        import threading

        import uvicorn

        from tallygate.app import create_app, prepare_database
        from tallygate.settings import Settings, load_config

        settings = Settings.from_env(self.env, db_url=self.db_url)
        prepare_database(settings.db_url)
        app = self.app = create_app(load_config(self.config_path, env=self.env), settings, self.span_exporter,
                                    columnar=self.columnar)  # type: ignore[arg-type]
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, loop="asyncio", http="httptools",
                                lifespan="on", access_log=False, log_level="warning",
                                timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="tallygate-test-gateway", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("in-process gateway did not start")
            time.sleep(0.01)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Shut down as SIGTERM would (drain, flush the ledger); always 0."""
        if self.port and self._thread.is_alive():
            self._server.should_exit = True
            self._thread.join(30)
        return 0
