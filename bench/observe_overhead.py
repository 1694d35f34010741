#!/usr/bin/env python3
"""What metrics, alert evaluation and tracing cost per request (loopback only, bounded).

    .venv/bin/python bench/observe_overhead.py [--requests 3000] [--rounds 3] [--micro 50000]

1. In process: `Observers.finished(call)` for one finished request with the ledger writer only,
   with /metrics and the alert detectors (the default set-up), and with tracing on to the SDK's
   in-memory exporter: microseconds per request, best of 5.
2. End to end: bench/mock_upstream.py and two `tallygate serve` processes on the same ledger
   config, one with `metrics.enabled: false` and `alerts.enabled: false`, one with both on (spike
   groups on a label and a tag level, error rates, a limited key, tracing off); bench/loadgen.py
   drives 8 clients of JSON chat completions through each in turn, interleaved, `--rounds`
   times; the gateway's CPU (utime + stime from /proc) per request, median of the rounds.
"""
import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run_bench import BODY, TAGS, free_port, http, start, stop, ticks, wait_for_quiet, wait_ready  # noqa: E402

BIN = Path(sys.executable).parent
TCK = os.sysconf("SC_CLK_TCK")


def micro(n: int) -> dict[str, float]:
    from decimal import Decimal

    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tallygate.core.record import Attempt
    from tallygate.observe.metrics import GatewayMetrics
    from tallygate.observe.spikes import ErrorRates, SpendSpikes
    from tallygate.observe.thresholds import ThresholdWatcher
    from tallygate.observe.tracing import RequestTracer
    from tallygate.pipeline.budget import MemoryBudget, key_scopes
    from tallygate.pipeline.call import Call
    from tallygate.pipeline.models import Route
    from tallygate.pipeline.observers import Observers
    from tallygate.providers.base import Capabilities
    from tallygate.settings import ErrorRateConfig, SpikeConfig
    from tallygate.types import Principal, Usage

    class Sink:  # the ledger writer's part: append to a list
        def __init__(self) -> None:
            self.buf: list = []

        def request_finished(self, record) -> None:
            self.buf.append(record)
            if len(self.buf) > 10_000:
                self.buf.clear()

    budget = MemoryBudget()
    principal = Principal(key_id="k1", name="bench", labels={"team": "bench"}, monthly_limit=10**18)
    route = Route(name="mock-gpt", provider_name="up", provider_type="openai", provider=None,  # type: ignore[arg-type]
                  upstream_model="gpt-4o-mini", pricing=None, native=Capabilities(None, None, None, None, None))

    def call() -> Call:
        c = Call("req_x", "chat", principal)
        c.tags, c.route, c.requested_model = tuple(TAGS), route, "mock-gpt"
        c.usage, c.cost_pico = Usage(input_tokens=20, output_tokens=40), 123_456_789
        c.attempts.append(Attempt(provider="up", model="gpt-4o-mini", status=200, latency_ms=1.0, target="mock-gpt"))
        return c

    def thresholds() -> ThresholdWatcher:
        return ThresholdWatcher(budget, lambda p, _t: key_scopes(p), [50, 80, 100])

    def on() -> tuple[list, list]:
        metrics = GatewayMetrics(["mock-gpt"], ["up"], ["team"])
        spikes = SpendSpikes(SpikeConfig(group_by=["label.team", "tag_level.2"], min_usd=Decimal(1)))
        return [Sink(), metrics, spikes, ErrorRates(ErrorRateConfig())], [thresholds()]

    exporter = InMemorySpanExporter()
    tracer = RequestTracer({"up": "openai"}, processor=SimpleSpanProcessor(exporter))
    variants = {"ledger only (off)": ([Sink()], []), "metrics + alerts (default)": on()}
    traced = on()
    variants["metrics + alerts + tracing (in-memory)"] = (traced[0], traced[1] + [tracer])
    out = {}
    for name, (obs, call_obs) in variants.items():
        observers = Observers(obs, call_obs)
        best = float("inf")
        for _ in range(5):
            calls = [call() for _ in range(n // 5)]
            t0 = time.perf_counter()
            for c in calls:
                observers.finished(c)
            best = min(best, (time.perf_counter() - t0) / len(calls) * 1e6)
            exporter.clear()
        out[name] = round(best, 2)
    return out


def config(mock_port: int, on: bool) -> str:
    doc = {"providers": {"up": {"type": "openai", "base_url": f"http://127.0.0.1:{mock_port}/v1", "api_key": "sk"}},
           "models": {"mock-gpt": {"provider": "up", "model": "gpt-4o-mini"}},
           "metrics": {"enabled": on, "key_labels": ["team"]},
           "alerts": {"enabled": on, "spike": {"group_by": ["label.team", "tag_level.2"]}}}
    return json.dumps(doc)  # JSON is YAML


def end_to_end(a) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="tallygate-observe-bench-"))
    procs: list = []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TALLYGATE_", "OTEL_", "PROMETHEUS_"))}
    try:
        mock_port = free_port()
        mock = start(procs, [sys.executable, HERE / "mock_upstream.py", "--host", "127.0.0.1", "--port", mock_port],
                     open(tmp / "mock.log", "w"))
        wait_ready(mock, f"http://127.0.0.1:{mock_port}/health", {}, tmp / "mock.log")
        gws = {}
        for name, on in (("off", False), ("on", True)):
            db = f"sqlite:///{tmp / name}.db"
            (tmp / f"{name}.yaml").write_text(config(mock_port, on))
            key = subprocess.run([str(BIN / "tallygate"), "keys", "create", "--name", "bench", "--label", "team=bench",
                                  "--limit", "1000000", "--db", db], capture_output=True, text=True, env=env,
                                 check=True, timeout=60).stdout.strip().splitlines()[-1]
            port = free_port()
            gw = start(procs, [BIN / "tallygate", "serve", "--config", tmp / f"{name}.yaml", "--db", db,
                               "--host", "127.0.0.1", "--port", port], open(tmp / f"{name}.log", "w"), env=env)
            wait_ready(gw, f"http://127.0.0.1:{port}/v1/models", {"Authorization": "Bearer " + key},
                       tmp / f"{name}.log")
            gws[name] = (gw, port, key)
        runs: dict[str, list[float]] = {"off": [], "on": []}
        body = json.dumps({**BODY, "request_tags": TAGS})
        for rnd in range(a.rounds):
            for name in (("off", "on") if rnd % 2 == 0 else ("on", "off")):
                gw, port, key = gws[name]
                wait_for_quiet(5.0)
                t0 = ticks(gw.pid)
                out = subprocess.run([sys.executable, HERE / "loadgen.py", f"http://127.0.0.1:{port}/v1/chat/completions",
                                      "-c", "8", "-n", str(a.requests), "--warmup", "50", "--max-seconds", "30",
                                      "--auth", "Bearer " + key, "--body", body],
                                     capture_output=True, text=True, timeout=120)
                rec = json.loads(out.stdout.strip().splitlines()[-1])
                sent = rec["ok"] + rec["errors"] + 50
                assert rec["errors"] == 0, rec
                runs[name].append((ticks(gw.pid) - t0) * 1000 / TCK / sent)
                print(f"round {rnd + 1} {name}: {runs[name][-1]:.3f} CPU-ms/request, {rec['rps']} req/s",
                      file=sys.stderr)
        _, port, _ = gws["on"]
        scraped = http("GET", f"http://127.0.0.1:{port}/metrics")[2].decode()
        series = sum(1 for line in scraped.splitlines() if line and not line.startswith("#"))
        return {"off": statistics.median(runs["off"]), "on": statistics.median(runs["on"]),
                "rounds": runs, "metrics_series": series}
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--micro", type=int, default=50_000, help="requests for the in-process part")
    a = ap.parse_args()
    m = micro(a.micro)
    print("| observers on a finished request | us per request |\n|---|---|")
    for name, us in m.items():
        print(f"| {name} | {us:.2f} |")
    e = end_to_end(a)
    print(f"\n| gateway, 8 clients JSON | CPU-ms per request (median of {a.rounds}) |\n|---|---|")
    print(f"| /metrics and alerts off | {e['off']:.3f} |\n| /metrics and alerts on | {e['on']:.3f} "
          f"({(e['on'] / e['off'] - 1) * 100:+.1f} %) |")
    print(f"\nrounds: {json.dumps({k: [round(x, 3) for x in v] for k, v in e['rounds'].items()})}; "
          f"/metrics samples after the runs: {e['metrics_series']}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    asyncio.run(asyncio.sleep(0))
    main()
