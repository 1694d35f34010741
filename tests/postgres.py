"""A throw-away PostgreSQL server for tests: initdb into a temp dir, start on a free port.

Uses the `initdb`/`postgres` of the machine's PostgreSQL (the Makefile installs Debian's package
when it is missing). As root, the server runs as the `postgres` user, since PostgreSQL refuses
to run as root. With CI=true a missing PostgreSQL fails the tests instead of skipping them.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.fakes.loopback import free_port
from tests.lifeline import spawn


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a SQLAlchemy URL of a fresh, empty PostgreSQL database."""
    with postgres_instance() as server:
        yield server.url


class PostgresInstance:
    """A running throw-away server (`postgres` itself, a child of this process that dies with
    it: `tests/lifeline.py`): its URL, `restart()` (fast shutdown, then start), and `stop()` /
    `start()` for an outage of any length."""

    def __init__(self, binary: str, datadir: str, port: int, as_user: str | None) -> None:
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        self.datadir = datadir
        self._args = [binary, "-D", datadir, "-p", str(port), "-c", "listen_addresses=127.0.0.1", "-k", datadir,
                      "-c", "fsync=off", "-c", "synchronous_commit=off"]
        self._user = as_user
        self.proc: subprocess.Popen | None = None

    def start(self) -> PostgresInstance:
        with open(f"{self.datadir}/log", "ab") as log:
            user = {"user": self._user, "group": self._user, "extra_groups": []} if self._user else {}
            self.proc = spawn(self._args, stdout=log, stderr=subprocess.STDOUT, **user)
        deadline = time.monotonic() + 120
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"postgres did not start: see {self.datadir}/log")
            time.sleep(0.05)
        return self

    def _ready(self) -> bool:
        """The postmaster says it accepts connections (what `pg_ctl -w` waits for)."""
        try:
            with open(f"{self.datadir}/postmaster.pid") as f:
                lines = f.read().splitlines()
        except OSError:
            return False
        return len(lines) > 7 and lines[7].strip() == "ready" and lines[0].strip() == str(self.proc.pid)

    def stop(self) -> None:
        """Fast shutdown (SIGINT), as `pg_ctl stop -m fast`."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def postgres_instance() -> Iterator[PostgresInstance]:
    """A fresh, empty PostgreSQL server on a free port."""
    initdb, binary = _pg_bin("initdb"), _pg_bin("postgres")
    if not (initdb and binary):
        message = "PostgreSQL server binaries (initdb, postgres) not found; `make test` installs them"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    as_user = "postgres" if os.geteuid() == 0 else None
    datadir = tempfile.mkdtemp(prefix="tallygate-pg-")
    if as_user:
        shutil.chown(datadir, as_user, as_user)
    runuser = ["runuser", "-u", as_user, "--"] if as_user else []
    subprocess.run([*runuser, initdb, "-D", datadir, "-U", "postgres", "--auth=trust", "-E", "UTF8"], check=True,
                   capture_output=True, timeout=120)
    server = PostgresInstance(binary, datadir, free_port(), as_user)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(datadir, ignore_errors=True)
