"""A throw-away PostgreSQL server for tests: initdb into a temp dir, start on a free port.

Uses the `pg_ctl`/`initdb` of the machine's PostgreSQL (the Makefile installs Debian's package
when it is missing). As root, the server runs as the `postgres` user, since PostgreSQL refuses
to run as root. With CI=true a missing PostgreSQL fails the tests instead of skipping them.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.fakes.upstream import free_port


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
    """A running throw-away server: its URL, `restart()` (fast shutdown, then start), and
    `stop()` / `start()` for an outage of any length."""

    def __init__(self, url: str, restart_cmd: list[str]) -> None:
        self.url = url
        self._restart = restart_cmd

    def restart(self) -> None:
        subprocess.run(self._restart, check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        subprocess.run([*self._ctl("stop"), "-m", "fast", "-w"], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        subprocess.run([*self._ctl("start"), "-w"], check=True, capture_output=True, timeout=120)

    def _ctl(self, action: str) -> list[str]:
        cmd = [c for c in self._restart if c not in ("-m", "fast", "-w", "restart")]
        return [*cmd, action]


@contextmanager
def postgres_instance() -> Iterator[PostgresInstance]:
    """A fresh, empty PostgreSQL server on a free port."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        message = "PostgreSQL server binaries (initdb, pg_ctl) not found; `make test` installs them"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    as_user: list[str] = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    datadir = tempfile.mkdtemp(prefix="tallygate-pg-")
    if as_user:
        shutil.chown(datadir, "postgres", "postgres")
    port = free_port()
    run = dict(check=True, capture_output=True, timeout=120)
    subprocess.run([*as_user, initdb, "-D", datadir, "-U", "postgres", "--auth=trust", "-E", "UTF8"], **run)
    opts = f"-p {port} -c listen_addresses=127.0.0.1 -k {datadir} -c fsync=off -c synchronous_commit=off"
    subprocess.run([*as_user, pg_ctl, "-D", datadir, "-o", opts, "-w", "-l", f"{datadir}/log", "start"], **run)
    restart = [*as_user, pg_ctl, "-D", datadir, "-o", opts, "-m", "fast", "-w", "-l", f"{datadir}/log", "restart"]
    try:
        yield PostgresInstance(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", restart)
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", datadir, "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(datadir, ignore_errors=True)
