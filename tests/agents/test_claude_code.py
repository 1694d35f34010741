"""Claude Code (`claude -p`) through the gateway: natively to an Anthropic provider, translated
to an OpenAI-compatible one; each turn recorded, tagged from `ANTHROPIC_CUSTOM_HEADERS`, and the
cost Claude Code reports equal to the ledger's where Claude Code knows the model's price."""

from __future__ import annotations

import json
import os
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from tests.agents.conftest import TAGS, Agents, cli

PICO = Decimal(10) ** -12


def claude(agents: Agents, model: str, prompt: str, key: str, home: Path) -> dict:
    """One non-interactive turn; Claude Code's JSON result."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_"))}
    env.update({
        "HOME": str(home), "ANTHROPIC_BASE_URL": agents.gateway.url, "ANTHROPIC_AUTH_TOKEN": key,
        "ANTHROPIC_CUSTOM_HEADERS": f"X-Request-Tags: {TAGS}",
        # offline: no telemetry, error reports, update checks or other traffic of its own
        "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1", "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    })
    out = subprocess.run([str(cli("claude")), "-p", prompt, "--model", model, "--output-format", "json"],
                         env=env, cwd=home, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, (out.stdout, out.stderr, agents.gateway.log()[-2000:])
    result = json.loads(out.stdout)
    assert result["is_error"] is False, result
    return dict(result)


def ledger_cost(rows: list[dict]) -> Decimal:
    return sum((Decimal(r["cost_pico"]) for r in rows), Decimal(0)) * PICO


def assert_attributed(agents: Agents, rows: list[dict], provider: str) -> None:
    for row in rows:
        record = agents.gateway.log_record(row["id"])
        assert record["status"] == 200 and record["endpoint"] == "messages" and record["provider"] == provider
        assert sorted(record["tags"]) == ["agent/cli", "team/platform"]
        assert record["labels"] == {"team": "platform"}


def assert_same_tokens(result: dict, rows: list[dict]) -> None:
    """Claude Code's token counts are the ledger's (its `input_tokens` leaves out cache reads
    and writes, as Anthropic's do)."""
    usage = result["usage"]
    fresh = sum(r["input_tokens"] - r["cached_tokens"] - r["cache_write_tokens"] for r in rows)
    assert usage["input_tokens"] == fresh
    assert usage["output_tokens"] == sum(r["output_tokens"] for r in rows)


def test_claude_code_plain_turn_native_costs_what_the_ledger_says(agents: Agents, tmp_path: Path) -> None:
    key = agents.key("cc-native-plain")
    result = claude(agents, "claude-sonnet-4-5", "[[no tools]] Say hello", key, tmp_path)
    assert result["result"].startswith("Echo:") and result["num_turns"] == 1
    rows = agents.records("cc-native-plain", 1)
    assert_attributed(agents, rows, "anthropic")
    assert_same_tokens(result, rows)
    # Claude Code sums float dollars; the ledger's integer picodollars are exact
    assert Decimal(repr(result["total_cost_usd"])).quantize(PICO) == ledger_cost(rows) > 0


def test_claude_code_tool_turn_native_any_model_name(agents: Agents, tmp_path: Path) -> None:
    """A configured name Claude Code does not know: its mid-conversation `system` message goes
    to the provider as it is, the Read tool runs, the answer follows."""
    note = tmp_path / "note.txt"
    note.write_text("the gateway relayed this file\n")
    agents.upstream.clear()
    key = agents.key("cc-native-tool")
    prompt = f'Read the note. [[call Read {{"file_path": "{note}"}}]]'
    result = claude(agents, "team-claude", prompt, key, tmp_path)
    assert result["num_turns"] == 2
    sent = [r["body"] for r in agents.upstream.requests if r["path"] == "/v1/messages"]
    assert len(sent) == 2 and any(m["role"] == "system" for m in sent[0]["messages"])
    result_blocks = [b for m in sent[1]["messages"] if isinstance(m["content"], list) for b in m["content"]
                     if b.get("type") == "tool_result"]
    assert "the gateway relayed this file" in json.dumps(result_blocks)
    rows = agents.records("cc-native-tool", 2)
    assert_attributed(agents, rows, "anthropic")
    assert_same_tokens(result, rows)
    # Claude Code has no price for a model name it does not know: it estimates at its own
    # default rate and says so (`costBasis: "unknown"`); the ledger prices the upstream model.
    assert result["modelUsage"]["team-claude"]["costBasis"] == "unknown"


@pytest.mark.parametrize("tool", [False, True], ids=["plain", "tool"])
def test_claude_code_translated_to_an_openai_compatible_model(agents: Agents, tmp_path: Path, tool: bool) -> None:
    note = tmp_path / "note.txt"
    note.write_text("translated tool result\n")
    agents.upstream.clear()
    name = f"cc-translated-{tool}"
    key = agents.key(name)
    prompt = f'Read the note. [[call Read {{"file_path": "{note}"}}]]' if tool else "[[no tools]] Say hello"
    result = claude(agents, "local-coder", prompt, key, tmp_path)
    sent = [r["body"] for r in agents.upstream.requests if r["path"] == "/v1/chat/completions"]
    assert len(sent) == (2 if tool else 1)
    assert [m["role"] for m in sent[0]["messages"]].count("system") >= 2  # top-level and mid-conversation
    if tool:
        tool_messages = [m for m in sent[1]["messages"] if m["role"] == "tool"]
        assert "translated tool result" in tool_messages[0]["content"]
    rows = agents.records(name, len(sent))
    assert_attributed(agents, rows, "openai")
    assert_same_tokens(result, rows)
