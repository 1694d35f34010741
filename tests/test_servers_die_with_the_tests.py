"""The PostgreSQL, Redis and gateway servers the tests start die with the test process, even when it
is killed -9 (an interrupted run used to leave `postgres`, `redis-server` and `tallygate serve` running)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A pytest-like parent: starts the servers as the fixtures do (Redis from a thread that ends,
# as load tests restart it; a gateway subprocess in `workdir`), says who they are, then waits to be killed.
PARENT = textwrap.dedent("""
    import json, sys, threading, time
    from pathlib import Path
    from tests.gateway import Gateway
    from tests.postgres import postgres_instance
    from tests.redis import redis_server

    with postgres_instance() as pg, redis_server() as rds:
        restarter = threading.Thread(target=rds.restart)
        restarter.start()
        restarter.join()  # that thread has ended: the server it started runs on
        gateway = Gateway(Path(sys.argv[1]), None).start()
        time.sleep(0.3)
        print(json.dumps({"postgres_url": pg.url, "redis": rds.proc.pid, "gateway": gateway.proc.pid}), flush=True)
        time.sleep(120)
""")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return out


def _postmaster(port: str) -> tuple[int, str]:
    """The pid and data directory of the `postgres` serving `port`, whoever started it."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode().split("\0")
        except OSError:
            continue
        if args[0].endswith("postgres") and "-p" in args and args[args.index("-p") + 1] == port:
            return int(cmdline.parent.name), args[args.index("-D") + 1]
    raise AssertionError(f"no postgres on port {port}")


def test_servers_die_when_the_test_process_is_killed(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                              env={**os.environ, "CI": "true"})
    try:
        line = parent.stdout.readline()  # type: ignore[union-attr]
        assert line, "the parent did not start its servers"
        started = json.loads(line)
        postmaster, datadir = _postmaster(started["postgres_url"].rsplit(":", 1)[1].split("/")[0])
        servers = [postmaster, started["redis"], started["gateway"], *_children(postmaster)]
        assert len(servers) > 3 and all(_alive(pid) for pid in servers)  # the postmaster's workers too
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while (left := [pid for pid in servers if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:  # (a failing run leaves nothing behind either)
        os.kill(pid, signal.SIGKILL)
    subprocess.run(["rm", "-rf", datadir], check=False)  # (no one is left to remove it)
    assert left == [], "servers left running after their test process was killed"
