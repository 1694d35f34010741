#!/usr/bin/env python3
"""Interleaved A/B of two or more source trees (loopback only, bounded):

    git worktree add --detach /tmp/old <commit>
    .venv/bin/python bench/ab_trees.py --modes c1,c8,s8 --pairs 3 old=/tmp/old/src new=src

One bench/mock_upstream.py, and one `tallygate serve` per tree (this venv's interpreter with
PYTHONPATH=<tree>, a fresh SQLite ledger and key each, the run_bench.py configuration). Then, per
mode and pair, one bench/loadgen.py run against each gateway, the order reversed every other pair
so that neither tree always runs first. Per run: the gateway's CPU per request (server CPU ticks
over the run, warm-ups included, as run_bench.py counts them), p50 and the load average; at the
end the median per tree and mode. On a shared machine compare the trees' medians, not a run.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from procs import TCK, free_port, start, stop, ticks, wait_ready
from run_bench import BODY, MODES, TAGS, UPSTREAM_KEY

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
WARMUP = 20


def serve(procs, tmp, name, src, mock_port):
    """A gateway running the code of `src`; returns (process, base URL, key)."""
    d = tmp / name
    d.mkdir()
    (d / "tallygate.yaml").write_text(
        f'providers:\n  up: {{type: openai, base_url: "http://127.0.0.1:{mock_port}/v1", api_key: "{UPSTREAM_KEY}"}}\n'
        "models:\n  mock-gpt: {provider: up, model: gpt-4o-mini}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYGATE_")}
    env["PYTHONPATH"] = str(Path(src).resolve())
    db = f"sqlite:///{d}/ledger.db"
    key = subprocess.run([str(BIN / "tallygate"), "keys", "create", "--name", "ab", "--label", "team=bench",
                          "--db", db], capture_output=True, text=True, env=env, check=True,
                         timeout=60).stdout.strip().splitlines()[-1]
    port = free_port()
    gw = start(procs, [BIN / "tallygate", "serve", "--config", d / "tallygate.yaml", "--db", db,
                       "--host", "127.0.0.1", "--port", port], open(d / "gateway.log", "w"), env=env)
    url = f"http://127.0.0.1:{port}/v1"
    wait_ready(gw, url + "/models", {"Authorization": "Bearer " + key}, d / "gateway.log")
    return gw, url, key


def run(gw, url, key, mode, requests):
    clients, stream = MODES[mode]
    cmd = [sys.executable, HERE / "loadgen.py", url + "/chat/completions", "-c", clients, "-n", requests,
           "--warmup", WARMUP, "--max-seconds", 30, "--auth", "Bearer " + key,
           "--body", json.dumps({**BODY, "request_tags": TAGS})] + (["--stream"] if stream else [])
    t0 = ticks(gw.pid)
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120)
    spent = ticks(gw.pid) - t0
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    sent = rec["ok"] + rec["errors"] + WARMUP
    return {"cpu_ms": spent * 1000 / TCK / sent, "p50_ms": rec.get("p50_ms"), "errors": rec["errors"],
            "load": os.getloadavg()[0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs="+", metavar="NAME=SRC", help="a name and the src directory of a tree")
    ap.add_argument("--modes", default="c1,c8,s8", help=f"comma-separated, of {', '.join(MODES)}")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--requests", type=int, default=3000)
    a = ap.parse_args()
    trees = [t.split("=", 1) for t in a.trees]
    procs, results = [], {}
    tmp = Path(tempfile.mkdtemp(prefix="tallygate-ab-"))
    try:
        mock_port = free_port()
        mock = start(procs, [sys.executable, HERE / "mock_upstream.py", "--host", "127.0.0.1", "--port", mock_port],
                     open(tmp / "mock.log", "w"))
        wait_ready(mock, f"http://127.0.0.1:{mock_port}/health", {}, tmp / "mock.log")
        gateways = {name: serve(procs, tmp, name, src, mock_port) for name, src in trees}
        for mode in a.modes.split(","):
            for pair in range(a.pairs):
                for name in (list(gateways) if pair % 2 == 0 else list(reversed(gateways))):
                    rec = run(*gateways[name], mode, a.requests)
                    results.setdefault((mode, name), []).append(rec)
                    print(f"{mode} pair {pair} {name}: cpu/req {rec['cpu_ms']:.3f} ms, p50 {rec['p50_ms']} ms, "
                          f"errors {rec['errors']}, load {rec['load']:.2f}", file=sys.stderr)
        for (mode, name), recs in results.items():
            cpu = [r["cpu_ms"] for r in recs]
            print(f"{mode} {name}: CPU-ms per request median {statistics.median(cpu):.3f} "
                  f"(runs {', '.join(f'{c:.3f}' for c in cpu)}); p50 median "
                  f"{statistics.median(r['p50_ms'] for r in recs):.3f} ms")
    finally:
        for p in reversed(procs):
            stop(p, 30)
        shutil.rmtree(tmp, ignore_errors=True)  # the gateways' ledgers and journals, the logs


if __name__ == "__main__":
    main()
