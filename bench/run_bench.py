#!/usr/bin/env python3
"""Tallygate overhead benchmark (loopback only): `make bench` or `.venv/bin/python bench/run_bench.py`.

Starts bench/mock_upstream.py on a free port, creates a real API key, starts `tallygate serve`
(one worker, fresh temporary SQLite ledger), then runs bench/loadgen.py interleaved direct-to-mock
and through-gateway: 1 client JSON (c1), 1 client stream (s1), 8 clients JSON (c8) and 8 clients
stream (s8), `--rounds` times each; the table shows the median of the rounds. Every gateway request
carries the key and body tags (one 3 levels deep), and is priced and written to the ledger.
Afterwards it reads GET /v1/logs and, after SIGTERM, counts the SQLite rows against the requests
sent. Raw JSON lines go to bench/results/<timestamp>.jsonl. bench/README.md explains the figures.
With --policy, each round also runs through a fallback routing policy whose first target answers.
"""
import argparse
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
TCK = os.sysconf("SC_CLK_TCK")
TAGS = ["team/feature", "US/California/SF"]
BODY = {"model": "mock-gpt", "max_tokens": 64,
        "messages": [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": "Say something short about load testing gateways."}]}
MESSAGES_BODY = {"model": "mock-claude", "max_tokens": 64, "system": BODY["messages"][0]["content"],
                 "messages": BODY["messages"][1:]}
RESPONSES_BODY = {"model": "mock-gpt", "max_output_tokens": 64, "instructions": BODY["messages"][0]["content"],
                  "input": BODY["messages"][1]["content"]}
MODES = {"c1": (1, False), "s1": (1, True), "c8": (8, False), "s8": (8, True), "m1": (1, True), "r1": (1, True)}
CONFIG_NAME = {"c1": "1 client", "s1": "1 client, stream", "c8": "8 clients", "s8": "8 clients, stream",
               "m1": "1 client, /v1/messages stream", "r1": "1 client, /v1/responses stream"}
# mode -> (path, gateway body, upstream model name for the direct run); the others are chat
API = {"m1": ("/messages", MESSAGES_BODY, "claude-3-5-haiku-latest"), "r1": ("/responses", RESPONSES_BODY, None)}
# Peers from shared/bench/PEERS.md (2026-11-23; same mock, loadgen and method, 2 cores):
# (figure, LiteLLM 1.109.1, Portkey 1.15.2)
PEERS = [("1 client: added p50 / p99 ms", "+12.2 / +18.4", "+1.1 / +7.0"),
         ("1 client: gateway CPU-ms per request", "12–13", "1.7–1.8"),
         ("1 client, stream: added TTFB p50 ms", "not measured", "not measured"),
         ("8 clients: req/s", "~100", "~1,020"),
         ("8 clients: gateway CPU-ms per request", "10", "1.2–1.3"),
         ("8 clients, stream: req/s", "~33", "~250"),
         ("8 clients, stream: added TTFB p50 ms", "+~120", "+~29"),
         ("8 clients, stream: gateway CPU-ms per request", "28–33", "2.5–2.7"),
         ("peak RSS MB", "407–425", "175–185"),
         ("idle CPU ms/s", "4.0", "1.0")]


def start(procs, cmd, log, env=None):
    """Start a server in its own session (a terminal's Ctrl-C reaches only us); remember its PID."""
    procs.append(subprocess.Popen([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=env, start_new_session=True))
    return procs[-1]


def stop(p, timeout=30.0):
    """SIGTERM by PID, SIGKILL after `timeout`; returns the exit code."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return p.returncode


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ticks(pid):  # utime+stime (+ reaped children) of one process, all its threads
    return sum(int(x) for x in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:15])


def machine_busy():  # user + nice + system ticks of all CPUs (softirq, mostly loopback TCP, left out)
    return sum(int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:4])


def wait_for_quiet(limit_s, step=0.5, max_cores=0.25):
    """Other jobs on the box skew every figure: wait (bounded) until they use < max_cores."""
    t0 = time.monotonic()
    while True:
        b0 = machine_busy()
        time.sleep(step)
        cores = (machine_busy() - b0) / TCK / step  # our servers are idle now: ~0.01 core
        if cores < max_cores or time.monotonic() - t0 >= limit_s:
            return round(time.monotonic() - t0, 1), round(cores, 2)


def children_ticks():  # CPU of our reaped children (the loadgen runs), in ticks
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r.ru_utime + r.ru_stime) * TCK


def status_mb(pid, key):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return round(int(line.split()[1]) / 1024, 1)


def http(method, url, body=None, headers=None, timeout=10):
    """(status, headers, body bytes); HTTP errors are returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def wait_ready(proc, url, headers, log_path, limit_s=60):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s and proc.poll() is None:
        try:
            if http("GET", url, headers=headers, timeout=2)[0] == 200:
                return round(time.monotonic() - t0, 2)
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"{url} not ready (exit code {proc.poll()}); log:\n{Path(log_path).read_text()[-3000:]}")


def run_load(a, url, auth, body, mode, label, mock, gw):
    """One loadgen run, with the CPU of the gateway, mock, loadgen and everything else around it."""
    clients, stream = MODES[mode]
    waited_s, busy_before = wait_for_quiet(a.quiet_wait)
    cmd = [sys.executable, HERE / "loadgen.py", url, "-c", clients, "-n", a.requests, "--warmup", a.warmup,
           "--max-seconds", a.max_seconds, "--label", label, "--auth", auth, "--body", json.dumps(body)]
    def sample():
        return ticks(mock.pid), ticks(gw.pid) if gw else 0, children_ticks(), machine_busy(), time.monotonic()

    before = sample()
    out = subprocess.run([str(c) for c in cmd + (["--stream"] if stream else [])],
                         capture_output=True, text=True, timeout=a.max_seconds + 120)
    m, g, lg, busy, wall = (x1 - x0 for x0, x1 in zip(before, sample(), strict=True))
    try:
        rec = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        rec = {"loadgen_failed": True, "ok": 0, "errors": 0, "stderr": out.stderr[-500:]}
    sent = rec["ok"] + rec["errors"] + (0 if rec.get("loadgen_failed") else a.warmup)
    def per_req(t):
        return round(t * 1000 / TCK / max(sent, 1), 3)

    rec.update(kind="run", mode=mode, warmup=a.warmup, requests_in_cpu_window=sent, window_s=round(wall, 2),
               truncated=rec["ok"] + rec["errors"] < a.requests,  # stopped by --max-seconds (or failed)
               quiet_wait_s=waited_s, other_cpu_cores_before=busy_before,
               mock_cpu_ms_per_req=per_req(m), loadgen_cpu_ms_per_req=per_req(lg),
               # CPU used by processes that are not ours (other jobs on the box), in cores
               other_cpu_cores=round(max(0, busy - m - g - lg) / TCK / wall, 2))
    if gw:
        rec.update(gw_cpu_s=round(g / TCK, 2), gw_cpu_ms_per_req=per_req(g),
                   gw_cores=round(per_req(g) * (rec.get("rps") or 0) / 1000, 2),  # in the timed phase
                   gw_vmhwm_mb=status_mb(gw.pid, "VmHWM"), gw_vmrss_mb=status_mb(gw.pid, "VmRSS"))
    return rec


def summarize(runs):
    """Median over rounds per (mode, target); added = gateway median - direct median."""
    def med(rs, k):
        vals = [r.get(k) for r in rs]
        return round(statistics.median(vals), 3) if vals and None not in vals else None
    out = []
    for mode in MODES:
        direct = [r for r in runs if r["mode"] == mode and r["target"] == "direct"]
        for target in ("direct", "tallygate", "policy"):
            rs = [r for r in runs if (r["mode"], r["target"]) == (mode, target)
                  and not r.get("loadgen_failed")]
            if not rs:
                continue
            s = {"kind": "summary", "mode": mode, "target": target, "rounds": len(rs),
                 "errors": sum(r["errors"] for r in rs),
                 "first_error": next((r["first_error"] for r in rs if r.get("first_error")), None)}
            for k in ("rps", "p50_ms", "p99_ms", "ttfb_p50_ms", "gw_cpu_ms_per_req", "gw_cores",
                      "mock_cpu_ms_per_req", "loadgen_cpu_ms_per_req", "other_cpu_cores"):
                s[k], s[k + "_rounds"] = med(rs, k), [r.get(k) for r in rs]
            if target != "direct":
                s["gw_peak_rss_mb"] = max(r["gw_vmhwm_mb"] for r in rs)
                for k in ("p50_ms", "p99_ms", "ttfb_p50_ms"):
                    d = med(direct, k)
                    s["added_" + k] = None if d is None or s[k] is None else round(s[k] - d, 3)
            out.append(s)
    return out


def fmt(x, nd=2, sign=False):
    if x is None:
        return "–"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:+.{nd}f}" if sign else f"{x:.{nd}f}"


def markdown(summary, runs, mock_rss, idle, ledger):
    lines = ["| config | target | req/s | p50 ms | p99 ms | added p50 / p99 ms | TTFB p50 ms (added) "
             "| gateway CPU-ms per request | peak RSS MB |", "|---" * 9 + "|"]
    for s in summary:
        gw = s["target"] != "direct"
        added = f"{fmt(s['added_p50_ms'], sign=True)} / {fmt(s['added_p99_ms'], sign=True)}" if gw else "–"
        ttfb = fmt(s["ttfb_p50_ms"]) + (f" ({fmt(s['added_ttfb_p50_ms'], sign=True)})"
                                        if gw and s["ttfb_p50_ms"] is not None else "")
        cpu, rss = (fmt(s["gw_cpu_ms_per_req"], 3), s["gw_peak_rss_mb"]) if gw else ("–", mock_rss)
        lines.append(f"| {CONFIG_NAME[s['mode']]} | {s['target']} | {fmt(s['rps'], 0)} | {fmt(s['p50_ms'])} "
                     f"| {fmt(s['p99_ms'])} | {added} | {ttfb} | {cpu} | {rss} |")
    g = {s["mode"]: s for s in summary if s["target"] == "tallygate"}
    def pick(m, k, **kw):
        return fmt(g[m][k], **kw) if m in g else "–"

    ours = [pick("c1", "added_p50_ms", sign=True) + " / " + pick("c1", "added_p99_ms", sign=True),
            pick("c1", "gw_cpu_ms_per_req", nd=3), pick("s1", "added_ttfb_p50_ms", sign=True),
            pick("c8", "rps", nd=0), pick("c8", "gw_cpu_ms_per_req", nd=3), pick("s8", "rps", nd=0),
            pick("s8", "added_ttfb_p50_ms", sign=True), pick("s8", "gw_cpu_ms_per_req", nd=3),
            str(max((s["gw_peak_rss_mb"] for s in g.values()), default="–")),
            str(idle["idle_cpu_ms_per_s"])]
    if all(m in g and g[m]["gw_cpu_ms_per_req"] for m in ("s1", "m1", "r1")):
        base = g["s1"]["gw_cpu_ms_per_req"]

        def rel(m):
            cpu = g[m]["gw_cpu_ms_per_req"]
            return f"{fmt(cpu, 3)} ({(cpu / base - 1) * 100:+.0f} %)"
        lines += ["", f"Stream relay CPU-ms per request, 1 client: chat {fmt(base, 3)}, "
                      f"/v1/messages (native) {rel('m1')}, /v1/responses (native) {rel('r1')}."]
    lines += ["", "Against the peers (PEERS.md: same mock and load generator, measured 2026-11-23):", "",
              "| figure | Tallygate (this run) | LiteLLM 1.109.1 | Portkey 1.15.2 |", "|---|---|---|---|"]
    lines += [f"| {f} | {o} | {lite} | {pk} |" for (f, lite, pk), o in zip(PEERS, ours, strict=True)]
    lines += ["", f"Gateway idle: {idle['idle_cpu_ms_per_s']} ms CPU per s over {idle['idle_s']} s; "
                  f"RSS after start-up {idle['vmrss_mb']} MB. Gateway CPU in use at 8 clients: "
                  f"{pick('c8', 'gw_cores')} cores (JSON), {pick('s8', 'gw_cores')} (stream). "
                  f"Other processes: up to {max(r['other_cpu_cores'] for r in runs):.2f} cores during a run.",
              f"Ledger: {ledger['rows']} rows for {ledger['expected']} requests sent through the gateway "
              f"(warm-ups and 2 smoke checks included) -> {'OK' if ledger['ok'] else 'MISMATCH'}; "
              f"{ledger['priced_rows']} priced, {ledger['non_200']} non-200, {ledger['tag_rows']} tag rows "
              f"({ledger['deep_tag_rows']} at US/California/SF)."]
    return "\n".join(lines)


def smoke(direct_url, gw_url, key):
    """The mock must refuse leaked tags; the gateway must strip them, price, and stream to [DONE]."""
    auth = {"Authorization": "Bearer " + key}
    leak = http("POST", direct_url, {**BODY, "request_tags": TAGS})[0]
    st, h, b = http("POST", gw_url, {**BODY, "request_tags": TAGS}, auth)
    cost = json.loads(b).get("usage", {}).get("cost") if st == 200 else None
    sst, _, sb = http("POST", gw_url, {**BODY, "stream": True, "stream_options": {"include_usage": True}},
                      {**auth, "X-Request-Tags": ",".join(TAGS)})
    rec = {"kind": "smoke", "mock_status_for_leaked_tags": leak,
           "json": {"status": st, "cost": cost, "request_id": h.get("x-request-id"),
                    "body": None if st == 200 else b[:300].decode("utf-8", "replace")},
           "stream": {"status": sst, "done": sb.rstrip().endswith(b"data: [DONE]"), "cost": b'"cost"' in sb}}
    rec["ok"] = leak == 400 and bool(cost) and sst == 200 and rec["stream"]["done"] and rec["stream"]["cost"]
    return rec


def ledger_check(db_path, expected):
    db = sqlite3.connect(db_path)
    def q(sql):
        return db.execute(sql).fetchone()[0]

    rows = q("SELECT count(*) FROM requests")
    res = {"kind": "ledger", "rows": rows, "expected": expected, "ok": rows == expected,
           "non_200": q("SELECT count(*) FROM requests WHERE status != 200"),
           "priced_rows": q("SELECT count(*) FROM requests WHERE cost_pico > 0"),
           "stream_rows": q("SELECT count(*) FROM requests WHERE stream"),
           "tag_rows": q("SELECT count(*) FROM request_tags"),
           "deep_tag_rows": q("SELECT count(*) FROM request_tags WHERE tag = 'US/California/SF'"),
           "total_cost_usd": q("SELECT coalesce(sum(cost_pico), 0) FROM requests") / 1e12,
           "pricing_sources": [r[0] for r in db.execute("SELECT DISTINCT pricing_source FROM requests")]}
    db.close()
    return res


def start_servers(procs, tmp, db_url, admin, policy=False):
    """Mock upstream, a real API key, then the gateway. Returns (mock, gw, key, urls, ready_s)."""
    mock_port, gw_port = free_port(), free_port()
    mock = start(procs, [sys.executable, HERE / "mock_upstream.py", "--host", "127.0.0.1",
                         "--port", mock_port], open(tmp / "mock.log", "w"))
    ready = {"mock": wait_ready(mock, f"http://127.0.0.1:{mock_port}/health", {}, tmp / "mock.log")}
    (tmp / "tallygate.yaml").write_text(
        f'providers:\n  up: {{type: openai, base_url: "http://127.0.0.1:{mock_port}/v1", api_key: "sk-up"}}\n'
        f'  up-anthropic: {{type: anthropic, base_url: "http://127.0.0.1:{mock_port}", api_key: "sk-up"}}\n'
        "models:\n  mock-gpt: {provider: up, model: gpt-4o-mini}\n"
        "  mock-claude: {provider: up-anthropic, model: claude-3-5-haiku-latest}\n"
        + ("  mock-gpt-b: {provider: up, model: gpt-4o-mini}\npolicies:\n  bench: {strategy: fallback, "
           "targets: [mock-gpt, mock-gpt-b], timeout_s: 30}\n" if policy else ""))
    tallygate = BIN / "tallygate"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYGATE_")}
    key = subprocess.run([str(tallygate), "keys", "create", "--name", "bench", "--label", "team=bench",
                          "--label", "env=bench", "--db", db_url], capture_output=True, text=True,
                         timeout=60, env=env, check=True).stdout.strip().splitlines()[-1]
    gw = start(procs, [tallygate, "serve", "--config", tmp / "tallygate.yaml", "--db", db_url,
                       "--host", "127.0.0.1", "--port", gw_port],
               open(tmp / "gateway.log", "w"), env={**env, "TALLYGATE_ADMIN_KEY": admin})
    urls = (f"http://127.0.0.1:{mock_port}/v1/chat/completions", f"http://127.0.0.1:{gw_port}/v1")
    ready["gateway"] = wait_ready(gw, urls[1] + "/models", {"Authorization": "Bearer " + key},
                                  tmp / "gateway.log")
    return mock, gw, key, urls, ready


def progress(rec):
    print(f"{rec['mode']} r{rec['round']} {rec['target']:9} rps={rec.get('rps')} p50={rec.get('p50_ms')} "
          f"p99={rec.get('p99_ms')} ttfb50={rec.get('ttfb_p50_ms')} "
          f"cpu/req={rec.get('gw_cpu_ms_per_req', '-')} "
          f"other={rec['other_cpu_cores']} waited={rec['quiet_wait_s']}s errors={rec['errors']}"
          + (f" first_error={rec['first_error']!r}" if rec.get("first_error") else "")
          + (" STOPPED BY --max-seconds" if rec["truncated"] else "")
          + (" LOADGEN FAILED " + rec["stderr"] if rec.get("loadgen_failed") else ""), file=sys.stderr)


def journal_cost(n=20000):
    """CPU per request of the ledger journal on the hot path (encode the record, one os.write to
    the O_APPEND segment), measured in this process on a realistic record: µs, median of 5."""
    from tallygate.core.record import Attempt, LedgerRecord
    from tallygate.store.journal import Journal
    from tallygate.store.record_codec import encode_record

    rec = LedgerRecord(id="req_19c3f0a2b1d4e5f60718293a4", created_at=1_764_000_000_000,
                       key_id="5f0e3c1a-9b2d-4e8f-a7c6-1d2e3f4a5b6c", key_name="growth-autocomplete-prod",
                       labels={"team": "growth", "env": "prod", "feature": "autocomplete"}, tags=tuple(TAGS),
                       endpoint="chat", requested_model="mock-gpt", served_model="mock-gpt", provider="mock",
                       status=200, error_type=None, error_message=None, stream=False, partial=False,
                       input_tokens=41, output_tokens=12, cached_tokens=0, cache_write_tokens=0,
                       reasoning_tokens=0, cost_pico=33_150_000, pricing_source="genai-prices", latency_us=1_830,
                       ttft_us=None, attempts=(Attempt(provider="mock", model="mock-gpt", status=200,
                                                       latency_ms=1.2, target="mock-gpt"),))
    tmp = Path(tempfile.mkdtemp(prefix="tallygate-journal-bench-"))
    journal = Journal(tmp, fsync="batch")
    per = []
    try:
        for _ in range(5):
            t0 = time.process_time()
            for _ in range(n):
                journal.append(encode_record(rec))
            per.append((time.process_time() - t0) / n * 1e6)
    finally:
        journal.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"kind": "journal_cost", "us_cpu_per_request": round(statistics.median(per), 2),
            "bytes_per_record": len(encode_record(rec)), "fsync": "batch (the writer syncs, not the request)"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke check: few requests, ~30 s")
    ap.add_argument("--requests", type=int, help="timed requests per run (default 3000, --quick 300)")
    ap.add_argument("--rounds", type=int, help="rounds per config and target (default 3, --quick 2; min 2)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (ledger.db, config, logs)")
    ap.add_argument("--policy", action="store_true",
                    help="also run each config through model policy/bench (fallback, first target answers)")
    a = ap.parse_args()
    a.requests = a.requests or (300 if a.quick else 3000)
    a.rounds = max(2, a.rounds or (2 if a.quick else 3))
    a.warmup, a.max_seconds, idle_s = (20, 10.0, 2.0) if a.quick else (100, 20.0, 10.0)
    a.quiet_wait = 1.0 if a.quick else 5.0  # per run, at most
    if not (BIN / "tallygate").exists():
        sys.exit(f"{BIN / 'tallygate'} not found: run `make install` first")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    results = HERE / "results" / f"{stamp}.jsonl"
    results.parent.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="tallygate-bench-"))
    db_path, admin = tmp / "ledger.db", "tg-admin-" + secrets.token_urlsafe(24)
    procs = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # -> the finally below

    def emit(rec):
        with open(results, "a") as f:
            f.write(json.dumps(rec) + "\n")

    try:
        mock, gw, key, (direct_url, gw_base), ready = start_servers(procs, tmp, f"sqlite:///{db_path}", admin, a.policy)
        emit({"kind": "meta", "run_id": stamp, "nproc": os.cpu_count(), "python": sys.version.split()[0],
              "settings": {"requests": a.requests, "warmup": a.warmup, "rounds": a.rounds, "tags": TAGS,
                           "max_seconds": a.max_seconds, "quick": a.quick, "policy": a.policy,
                           "quiet_wait_s": a.quiet_wait},
              "ready_s": ready, "mock_pid": mock.pid, "gw_pid": gw.pid})
        sm = smoke(direct_url, gw_base + "/chat/completions", key)
        emit(sm)
        gw_sent = 2  # the smoke checks
        print("smoke:", "OK" if sm["ok"] else "FAILED " + json.dumps(sm), file=sys.stderr)

        t0, b0 = ticks(gw.pid), machine_busy()
        time.sleep(idle_s)
        idle = {"kind": "idle", "idle_s": idle_s,
                "idle_cpu_ms_per_s": round((ticks(gw.pid) - t0) * 1000 / TCK / idle_s, 1),
                "machine_busy_cores": round((machine_busy() - b0) / TCK / idle_s, 2),
                "vmrss_mb": status_mb(gw.pid, "VmRSS"), "mock_vmrss_mb": status_mb(mock.pid, "VmRSS")}
        emit(idle)

        runs = []
        tagged = {**BODY, "request_tags": TAGS}
        targets = (("direct", direct_url, "Bearer sk-up", BODY, None),
                   ("tallygate", gw_base + "/chat/completions", "Bearer " + key, tagged, gw))
        if a.policy:
            targets += (("policy", gw_base + "/chat/completions", "Bearer " + key,
                         {**tagged, "model": "policy/bench"}, gw),)
        def targets_for(mode):
            if mode not in API:
                return targets
            path, body, upstream_model = API[mode]
            direct = {**body, "model": upstream_model or "gpt-4o-mini"}
            return (("direct", direct_url.replace("/chat/completions", path), "Bearer sk-up", direct, None),
                    ("tallygate", gw_base + path, "Bearer " + key, {**body, "request_tags": TAGS}, gw))

        for mode in MODES:
            for rnd in range(1, a.rounds + 1):
                for target, url, auth, body, g in targets_for(mode):
                    rec = run_load(a, url, auth, body, mode, f"{target}/{mode}/r{rnd}", mock, g)
                    rec.update(target=target, round=rnd)
                    emit(rec)
                    progress(rec)
                    runs.append(rec)
                    gw_sent += rec["requests_in_cpu_window"] if g else 0

        time.sleep(0.3)  # > the ledger's flush interval
        st, _, b = http("GET", gw_base + "/logs?limit=1", headers={"Authorization": "Bearer " + admin})
        latest = (json.loads(b).get("data") or [None])[0] if st == 200 else None
        emit({"kind": "logs_api", "status": st, "latest": latest})
        peak = status_mb(gw.pid, "VmHWM")
        rc = stop(gw, 60)
        flushed = [ln for ln in (tmp / "gateway.log").read_text().splitlines() if "ledger flushed" in ln]
        clean = bool(flushed) and rc in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after its shutdown
        emit({"kind": "shutdown", "returncode": rc, "clean": clean, "log": flushed[-1:], "gw_vmhwm_mb": peak})
        ledger = ledger_check(db_path, gw_sent)
        emit(ledger)
        summary = summarize(runs)
        for s in summary:
            emit(s)
        jc = journal_cost()
        emit(jc)

        print(f"\n## Tallygate overhead, {stamp} ({os.cpu_count()} cores, {a.requests} requests x {a.rounds} "
              f"rounds per row, median of rounds)\n")
        print(markdown(summary, runs, status_mb(mock.pid, "VmHWM"), idle, ledger))
        print(f"Ledger journal on the hot path: {jc['us_cpu_per_request']} µs CPU per request "
              f"({jc['bytes_per_record']} bytes a record; fsync {jc['fsync']}).")
        print(f"GET /v1/logs?limit=1: HTTP {st}, {'a record' if latest else 'NO RECORD'}; "
              f"SIGTERM: exit {rc}, {flushed[-1].split(': ', 1)[-1] if flushed else 'NO FLUSH LINE IN LOG'}."
              f"\nRaw lines: {results}")
        problems = [p for p, bad in (
            ("smoke check failed", not sm["ok"]), ("ledger count mismatch", not ledger["ok"]),
            ("errors during runs", any(s["errors"] for s in summary)), ("/v1/logs has no record", not latest),
            ("unclean gateway shutdown", not clean),
            ("a run hit --max-seconds", any(r["truncated"] for r in runs))) if bad]
        if any(r["other_cpu_cores"] > 0.25 for r in runs):
            print("NOTE: other processes used > 0.25 core during some runs (other= above): noisy figures.")
        if problems:
            print("PROBLEMS: " + "; ".join(problems))
        return 1 if problems else 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(getattr(exc, "stderr", None) or "", file=sys.stderr)  # e.g. `tallygate keys create` failed
        for name in ("gateway.log", "mock.log"):
            if (tmp / name).exists():
                print(f"--- tail of {name}:\n" + (tmp / name).read_text()[-2000:], file=sys.stderr)
        raise
    finally:
        for p in reversed(procs):
            stop(p, 10)
        if a.keep:
            print(f"kept: {tmp} (ledger.db, tallygate.yaml, gateway.log, mock.log)", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
