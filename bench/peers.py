"""Peer gateways for `run_bench.py --peers`: Portkey and LiteLLM as `shared/bench/run_peers.sh --setup`
installs them, started on free loopback ports in front of the benchmark's mock, and the table of the
figures issue 19 compares (CPU per request, added p50 at 1 client, CPU per stream) with their ratios."""
import json
import os
import shutil
import statistics
from pathlib import Path

from procs import TCK, free_port, start, wait_ready

DEFAULT_DIR = "/tmp/peers"
MODES = ("c1", "c8", "s8")  # the configs the peers run in (as in PEERS.md)
NAMES = ("portkey", "litellm")
INSTALL = "bash ../shared/bench/run_peers.sh --setup"
PORTKEY_MAIN = "portkey-lock/node_modules/@portkey-ai/gateway/build/start-server.js"
# run_peers.sh's preload: Portkey's start-server.js listens on every interface; this binds 127.0.0.1
LOOPBACK_MJS = """import net from 'node:net';
const orig = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number') {
    if (args.length === 1 || args[1] == null) args[1] = '127.0.0.1';
    else if (typeof args[1] === 'function') args.splice(1, 0, '127.0.0.1');
  }
  return orig.apply(this, args);
};
"""
LITELLM_ENV = {"LITELLM_LOG": "ERROR", "LITELLM_MODE": "PRODUCTION", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
               "LITELLM_OFFLINE_MODE": "true", "LITELLM_TELEMETRY_DISABLED": "true",
               "LITELLM_DISABLE_LATEST_RELEASE_CHECK": "true"}
TARGET_CPU_RATIO, TARGET_ADDED_P50_MS = 0.2, 0.5  # issue 19, point 5


def missing(peers_dir):
    """What is missing for the peers in `peers_dir`, as a sentence; None when they are installed."""
    d = Path(peers_dir)
    gone = [str(p) for p in (d / "venv/bin/litellm", d / PORTKEY_MAIN) if not p.exists()]
    if not shutil.which("node"):
        gone.append("node on PATH")
    if not gone:
        return None
    return (f"peers not installed in {d} (missing {', '.join(gone)}): install them with `{INSTALL}` "
            f"(PEERS=DIR for another directory); this run has no peer table.")


def versions(peers_dir):
    d = Path(peers_dir)
    pk = json.loads((d / PORTKEY_MAIN).parent.parent.joinpath("package.json").read_text())["version"]
    lite = next(d.glob("venv/lib/python3*/site-packages/litellm-*.dist-info"), None)
    return {"portkey": pk, "litellm": lite.name[len("litellm-"):-len(".dist-info")] if lite else "?"}


def start_peers(procs, tmp, peers_dir, mock_port):
    """Start Portkey and LiteLLM against the mock; returns ({name: (url, auth, headers, proc)}, ready_s)."""
    d, up = Path(peers_dir), f"http://127.0.0.1:{mock_port}/v1"
    (tmp / "loopback.mjs").write_text(LOOPBACK_MJS)
    # shared/bench/litellm_config.yaml with the mock's port, plus run_peers.sh's quiet settings (JSON is YAML)
    (tmp / "litellm.yaml").write_text(json.dumps({
        "model_list": [{"model_name": "mock-gpt", "litellm_params": {
            "model": "openai/mock-gpt", "api_base": up, "api_key": "sk-mock-upstream"}}],
        "general_settings": {"master_key": "sk-bench-1234", "disable_spend_logs": True, "disable_error_logs": True},
        "litellm_settings": {"set_verbose": False, "json_logs": False}}))
    pk_port, lite_port = free_port(), free_port()
    pk = start(procs, ["node", "--import", tmp / "loopback.mjs", d / PORTKEY_MAIN, f"--port={pk_port}", "--headless"],
               open(tmp / "portkey.log", "w"))
    lite = start(procs, [d / "venv/bin/litellm", "--config", tmp / "litellm.yaml", "--host", "127.0.0.1",
                         "--port", lite_port, "--num_workers", 1],
                 open(tmp / "litellm.log", "w"), env={**os.environ, **LITELLM_ENV})
    ready = {"portkey": wait_ready(pk, f"http://127.0.0.1:{pk_port}/", {}, tmp / "portkey.log"),
             "litellm": wait_ready(lite, f"http://127.0.0.1:{lite_port}/health/liveliness", {},
                                   tmp / "litellm.log", limit_s=180)}
    pk_headers = ("x-portkey-provider: openai", f"x-portkey-custom-host: {up}")
    return {"portkey": (f"http://127.0.0.1:{pk_port}/v1/chat/completions", "Bearer sk-mock-upstream", pk_headers, pk),
            "litellm": (f"http://127.0.0.1:{lite_port}/v1/chat/completions", "Bearer sk-bench-1234", (), lite)}, ready


def failure(rs):
    """Why these runs cannot give a figure (errors, refusals, a failed load generator), or None."""
    bad = [r for r in rs if r.get("loadgen_failed") or r["errors"] or r.get("first_error")]
    if not rs:
        return "no runs"
    if not bad:
        return None
    first = next((r.get("first_error") or r.get("stderr") for r in bad if r.get("first_error") or r.get("stderr")), "")
    return f"FAILED: {sum(r['errors'] for r in bad)} errors in {len(bad)} runs ({str(first)[:80]})"


def figures(runs, target):
    """The issue's figures for one target over every round; a target whose runs had errors gets none."""
    rs = [r for r in runs if r["target"] == target and r["mode"] in MODES]
    why = failure(rs)
    if why:
        return {"failed": why}

    def of(mode):
        return [r for r in rs if r["mode"] == mode]

    def cpu_ms(sel):  # server CPU over all these runs / all their requests (warm-ups included)
        return sum(r["gw_ticks"] for r in sel) * 1000 / TCK / sum(r["requests_in_cpu_window"] for r in sel)

    def direct_p50(mode):
        return statistics.median(r["p50_ms"] for r in runs if (r["target"], r["mode"]) == ("direct", mode))

    return {"cpu_ms_per_req": cpu_ms(of("c1") + of("c8")),
            "added_p50_c1_ms": statistics.median(r["p50_ms"] for r in of("c1")) - direct_p50("c1"),
            "cpu_ms_per_stream": cpu_ms(of("s8")),
            "rps_c8": statistics.median(r["rps"] for r in of("c8")),
            "peak_rss_mb": max(r["gw_vmhwm_mb"] for r in rs),
            "truncated_runs": sum(r["truncated"] for r in rs)}


def ratio(ours, theirs, kind):
    """Tallygate ÷ a peer; a CPU ratio also as 1/x, the way the issue states its targets."""
    if ours is None or not theirs or kind not in ("cpu", "rps"):
        return "–"
    return f"{ours / theirs:.2f}" + (f" (1/{theirs / ours:.1f})" if kind == "cpu" and ours else "")


def table(runs, vers):
    """Markdown: Tallygate, Portkey and LiteLLM from this run's interleaved rounds, with ratios and targets."""
    f = {t: figures(runs, t) for t in ("tallygate", *NAMES)}
    heads = ["Tallygate", f"Portkey {vers['portkey']}", f"LiteLLM {vers['litellm']}"]
    lines = ["| figure | " + " | ".join(heads) + " | Tallygate ÷ Portkey | target | Tallygate ÷ LiteLLM |",
             "|---" * 7 + "|"]
    rows = (("CPU-ms per request (1 and 8 clients)", "cpu_ms_per_req", "{:.3f}", "cpu"),
            ("added p50 ms, 1 client", "added_p50_c1_ms", "{:+.2f}", "p50"),
            ("CPU-ms per stream (8 clients)", "cpu_ms_per_stream", "{:.3f}", "cpu"),
            ("requests/s, 8 clients", "rps_c8", "{:,.0f}", "rps"),
            ("peak RSS MB", "peak_rss_mb", "{:.0f}", None))
    verdicts = []
    for name, k, form, kind in rows:
        cells = [f[t]["failed"] if "failed" in f[t] else form.format(f[t][k]) for t in f]
        tg = f["tallygate"].get(k)
        target = "–"
        if kind == "cpu" and tg is not None and f["portkey"].get(k):
            verdicts.append(tg <= TARGET_CPU_RATIO * f["portkey"][k])
            target = f"≤ {TARGET_CPU_RATIO:.2f}: {'met' if verdicts[-1] else 'NOT met'}"
        elif kind == "p50" and "failed" not in f["tallygate"]:
            verdicts.append(tg <= TARGET_ADDED_P50_MS)
            target = f"≤ +{TARGET_ADDED_P50_MS} ms: {'met' if verdicts[-1] else 'NOT met'}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio(tg, f['portkey'].get(k), kind)} | {target} "
                     f"| {ratio(tg, f['litellm'].get(k), kind)} |")
    cut = [t for t in f if f[t].get("truncated_runs")]
    if cut:
        lines += ["", "Runs stopped by --max-seconds (their figures are still per request sent): "
                  + ", ".join(f"{t} {f[t]['truncated_runs']}" for t in cut) + "."]
    lines += ["", f"Issue 19 targets: {sum(verdicts)} of 3 met." if len(verdicts) == 3
              else "Issue 19 targets: not judged (some runs failed)."]
    return "\n".join(lines)
