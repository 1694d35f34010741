#!/usr/bin/env python3
"""Where a gateway's CPU per request goes, thread by thread (loopback only, bounded):

    .venv/bin/python bench/thread_cpu.py --mode c1 --requests 4000 --runs 2

One bench/mock_upstream.py and one `tallygate serve` with the bench/ab_trees.py configuration
(`--src` picks the tree), warmed up; then, per run, one bench/loadgen.py run, and for each thread
of the gateway (`/proc/PID/task/*/stat`) its user and system CPU per request (µs, 10 ms ticks
over the run, warm-ups included): the event loop (the first `tallygate`), the ledger writer (the
next one), pyreqwest's Tokio thread. Compare runs made at the same time only: the machine may be shared.
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ab_trees import WARMUP, serve
from procs import TCK, free_port, start, stop, wait_ready
from run_bench import BODY, MODES, TAGS

HERE = Path(__file__).resolve().parent


def threads(pid):
    """{thread id: (name, user ticks, system ticks)} of a process."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:  # the thread ended
            continue
        name, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        out[task.name] = (name, int(fields[11]), int(fields[12]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=str(HERE.parent / "src"), help="the src directory of the tree to run")
    ap.add_argument("--mode", default="c1", choices=[m for m, (_, stream) in MODES.items() if not stream])
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--runs", type=int, default=2)
    a = ap.parse_args()
    procs = []
    tmp = Path(tempfile.mkdtemp(prefix="tallygate-threads-"))
    try:
        mock_port = free_port()
        mock = start(procs, [sys.executable, HERE / "mock_upstream.py", "--host", "127.0.0.1", "--port", mock_port],
                     open(tmp / "mock.log", "w"))
        wait_ready(mock, f"http://127.0.0.1:{mock_port}/health", {}, tmp / "mock.log")
        gw, url, key = serve(procs, tmp, "gateway", a.src, mock_port)
        clients = MODES[a.mode][0]
        for run in range(a.runs + 1):  # the first run warms the gateway up and is not shown
            n = 300 if run == 0 else a.requests
            cmd = [sys.executable, HERE / "loadgen.py", url + "/chat/completions", "-c", clients, "-n", n,
                   "--warmup", WARMUP, "--max-seconds", 60, "--auth", "Bearer " + key,
                   "--body", json.dumps({**BODY, "request_tags": TAGS})]
            before = threads(gw.pid)
            out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=180)
            after = threads(gw.pid)
            if run == 0:
                continue
            rec = json.loads(out.stdout.strip().splitlines()[-1])
            sent = rec["ok"] + rec["errors"] + WARMUP
            def us(t, sent=sent):
                return t * 1e6 / TCK / sent

            total_user = total_sys = 0
            print(f"{a.mode} run {run}: {rec['ok']} ok, {rec['errors']} errors, {rec['rps']} req/s")
            for tid, (name, user, system) in sorted(after.items()):
                _, user0, sys0 = before.get(tid, (name, 0, 0))
                user, system = user - user0, system - sys0
                total_user, total_sys = total_user + user, total_sys + system
                if user or system:
                    print(f"  {name:16} {tid:>8}: user {us(user):6.1f} µs, system {us(system):6.1f} µs")
            print(f"  all threads:      user {us(total_user):6.1f} µs, system {us(total_sys):6.1f} µs a request")
    finally:
        for p in reversed(procs):
            stop(p, 30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
