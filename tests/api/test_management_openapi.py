"""`/openapi.json` describes the management API, and fuzzing it finds no 5xx and no response
that breaks the schema (schemathesis, against a real gateway over loopback, on SQLite and
PostgreSQL); every request the document allows is accepted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import ADMIN_KEY, Gateway
from tests.postgres import postgres_server


def test_openapi_document_covers_management_routes(gateway: Gateway) -> None:
    status, doc = gateway.get("/openapi.json", key=None)
    assert status == 200
    paths = doc["paths"]
    assert {"post", "get"} <= set(paths["/v1/manage/apikey"])
    assert {"get", "put", "delete"} <= set(paths["/v1/manage/apikey/{key_id}"])
    assert "/v1/key" in paths and "/v1/logs" in paths
    logs = {p["name"] for p in paths["/v1/logs"]["get"]["parameters"]}
    assert {"tag", "key", "model", "status", "error_code", "provider", "served_model", "from", "to"} <= logs
    create = paths["/v1/manage/apikey"]["post"]["responses"]
    assert {"201", "400", "401", "403"} <= set(create) and "422" not in create


def test_schemathesis_finds_no_server_error_or_schema_violation(gateway: Gateway, tmp_path: Path) -> None:
    st = Path(sys.executable).with_name("schemathesis")
    out = subprocess.run(
        [str(st), "run", f"{gateway.url}/openapi.json", "-H", f"Authorization: Bearer {ADMIN_KEY}",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                     "response_schema_conformance,negative_data_rejection",
         "--phases", "coverage,fuzzing", "--max-examples", "40", "--workers", "1", "--seed", "1",
         "--suppress-health-check", "too_slow"],  # generation speed: the machine's load, not the API
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "passed" in out.stdout


def test_schemathesis_finds_every_documented_request_accepted_and_405s_with_allow(
        upstream: FakeUpstream, tmp_path: Path) -> None:
    # On PostgreSQL (the run above is on SQLite: between them, no 5xx on either).
    # The document describes what the API validates (names, labels, money and score strings,
    # tags, months, cursors, configured policies, no NUL): a request it allows is never refused,
    # logs, analytics and alerts included. The rules across parameters or list items that JSON
    # schema cannot say ("from <= to", "a dimension at most once") are the only refusals the hooks
    # let pass (`schemathesis_hooks.py`, by their 400's message). Left out: the budgets and rate limits,
    # whose scope tag follows the request-tag rule (no unassigned code points), a pattern too large for
    # schemathesis to generate from in time.
    st = Path(sys.executable).with_name("schemathesis")
    hooks = Path(__file__).with_name("schemathesis_hooks.py")
    with postgres_server() as url:
        gateway = Gateway(tmp_path, standard_config(upstream), env={"TALLYGATE_DB_URL": url}).start()
        try:
            out = subprocess.run(
                [str(st), "run", f"{gateway.url}/openapi.json", "-H", f"Authorization: Bearer {ADMIN_KEY}",
                 "--checks", "positive_data_acceptance,negative_data_rejection,unsupported_method,"
                             "allow_header_conformance,not_a_server_error",
                 "--exclude-path-regex", "^/v1/manage/(budget|ratelimit).*$",
                 "--phases", "coverage,fuzzing", "--max-examples", "30", "--workers", "1", "--seed", "2",
                 "--suppress-health-check", "too_slow"],
                capture_output=True, text=True, timeout=600, cwd=tmp_path,
                env={**os.environ, "SCHEMATHESIS_HOOKS": str(hooks)})
        finally:
            gateway.stop()
        log = gateway.log()
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "Traceback" not in log, log[log.find("Traceback") - 500:][:4000]
