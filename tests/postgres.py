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


class PostgresServer:
    """A throw-away server that a test may stop and start again (an outage)."""

    def __init__(self) -> None:
        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if not (initdb and pg_ctl):
            message = "PostgreSQL server binaries (initdb, pg_ctl) not found; `make test` installs them"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        self._pg_ctl = pg_ctl
        self._as_user: list[str] = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.datadir = tempfile.mkdtemp(prefix="tallygate-pg-")
        if self._as_user:
            shutil.chown(self.datadir, "postgres", "postgres")
        self.port = free_port()
        subprocess.run([*self._as_user, initdb, "-D", self.datadir, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True, timeout=120)
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.datadir} -c fsync=off "
                "-c synchronous_commit=off")
        subprocess.run([*self._as_user, self._pg_ctl, "-D", self.datadir, "-o", opts, "-w", "-l",
                        f"{self.datadir}/log", "start"], check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        subprocess.run([*self._as_user, self._pg_ctl, "-D", self.datadir, "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.datadir, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a SQLAlchemy URL of a fresh, empty PostgreSQL database."""
    with postgres_instance() as server:
        yield server.url


@contextmanager
def postgres_instance() -> Iterator[PostgresServer]:
    """A started `PostgresServer`, removed afterwards."""
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.remove()
