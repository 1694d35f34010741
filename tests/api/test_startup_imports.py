"""A gateway with no cloud provider configured does not load the cloud SDKs.

botocore (Bedrock) and google-auth (Vertex) are imported by the providers that need them, when
they first sign a request; loaded at start-up they cost ~100 MB of RSS and the CPU of importing
them in every worker. The check runs inside a real `tallygate serve` process (the built-in demo
config), after it answers `/readyz` and one proxied chat request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.fakes.loopback import free_port

# Not loaded by a gateway whose config names no provider of their type. (duckdb is the analytics
# columnar copy's: the analytics work makes it lazy and adds it here.)
CLOUD_SDKS = ("botocore", "boto3", "google.auth", "google.oauth2", "azure.identity")

SERVER = textwrap.dedent("""
    import json, os, signal, sys, threading, time, urllib.request

    port, out = sys.argv[1], sys.argv[2]

    def call(path, body=None, key=None):
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body)
        if key:
            req.add_header("Authorization", "Bearer " + key)
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()

    def probe():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if call("/readyz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        key = os.environ["DEMO_KEY_FILE"]
        chat = call("/v1/chat/completions", json.dumps({"model": "gpt-4o-mini", "messages": [
            {"role": "user", "content": "hi"}]}).encode(), open(key).read().strip())[0]
        with open(out, "w") as f:
            json.dump({"chat": chat, "modules": sorted(sys.modules)}, f)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=probe, daemon=True).start()
    from tallygate.cli.main import cli
    cli(["serve", "--port", port])
""")


def test_serve_with_the_demo_config_loads_no_cloud_sdk(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    env = {**os.environ, "TALLYGATE_DB_URL": f"sqlite:///{db}", "TALLYGATE_ADMIN_KEY": "tg-test-admin"}
    key_file = tmp_path / "key"
    made = subprocess.run([sys.executable, "-m", "tallygate", "keys", "create", "--name", "probe"],
                          env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    key_file.write_text(made.stdout.strip().splitlines()[-1])
    out = tmp_path / "modules.json"
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    proc = subprocess.run([sys.executable, str(script), str(free_port()), str(out)],
                          env={**env, "DEMO_KEY_FILE": str(key_file)}, capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert out.exists(), proc.stderr[-3000:]
    seen = json.loads(out.read_text())
    assert seen["chat"] == 200
    modules = set(seen["modules"])
    assert "tallygate.app" in modules and "uvicorn" in modules  # it is the server's own list
    loaded = [m for m in CLOUD_SDKS if m in modules]
    assert loaded == [], f"imported at start-up: {loaded}"
