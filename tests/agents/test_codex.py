"""Codex (`codex exec`) through the gateway with its default tools: natively to an OpenAI
provider, translated onto an Anthropic one; each turn recorded and tagged from the provider's
`http_headers`. Codex reports tokens, not dollars: its token counts are compared."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.agents.conftest import TAGS, Agents, cli

PROMPTS = {"plain": "[[no tools]] Say hello",
           "tool": 'Run it. [[call exec_command {"cmd": "echo tool-ran-through-the-gateway"}]]'}


def codex(agents: Agents, model: str, prompt: str, key: str, home: Path) -> list[dict]:
    """One non-interactive turn with a throw-away CODEX_HOME; Codex's JSON events."""
    codex_home = home / "codex"
    codex_home.mkdir(parents=True)
    tags = ", ".join(f'"{k}" = "{v}"' for k, v in {"X-Request-Tags": TAGS}.items())
    (codex_home / "config.toml").write_text(f'''
model = "{model}"
model_provider = "tallygate"
check_for_update_on_startup = false

[analytics]
enabled = false

[model_providers.tallygate]
name = "Tallygate"
base_url = "{agents.gateway.base_url}"
env_key = "TALLYGATE_KEY"
wire_api = "responses"
http_headers = {{ {tags} }}
''')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_"))}
    env.update({"HOME": str(home), "CODEX_HOME": str(codex_home), "TALLYGATE_KEY": key})
    out = subprocess.run([str(cli("codex")), "exec", "--json", "--skip-git-repo-check", prompt],
                         env=env, cwd=home, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, (out.stdout, out.stderr, agents.gateway.log()[-2000:])
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("turn", ["plain", "tool"])
@pytest.mark.parametrize(("model", "path", "provider"), [
    ("gpt-5", "/v1/responses", "openai"), ("claude-for-codex", "/v1/messages", "anthropic")],
    ids=["native", "translated"])
def test_codex_turn_is_recorded_tagged_and_counted(agents: Agents, tmp_path: Path, model: str, path: str,
                                                   provider: str, turn: str) -> None:
    agents.upstream.clear()
    name = f"codex-{model}-{turn}"
    events = codex(agents, model, PROMPTS[turn], agents.key(name), tmp_path)
    sent = [r["body"] for r in agents.upstream.requests if r["path"] == path]
    assert len(sent) == (2 if turn == "tool" else 1)
    if provider == "anthropic":  # Codex's default tools, namespace members among them, translated
        names = [t["name"] for t in sent[0]["tools"]]
        assert "exec_command" in names and any(n.startswith("multi_agent_v1__") for n in names)
    if turn == "tool":  # Codex ran the command and sent its output back for the final answer
        ran = [e["item"] for e in events if e["type"] == "item.completed"
               and e["item"]["type"] == "command_execution"]
        assert ran and "tool-ran-through-the-gateway" in ran[0]["aggregated_output"]
        assert "tool-ran-through-the-gateway" in json.dumps(sent[1])
    assert any(e["type"] == "item.completed" and e["item"]["type"] == "agent_message" for e in events)
    rows = agents.records(name, len(sent))
    for row in rows:
        record = agents.gateway.log_record(row["id"])
        assert record["status"] == 200 and record["endpoint"] == "responses" and record["provider"] == provider
        assert sorted(record["tags"]) == ["agent/cli", "team/platform"]
    [usage] = [e["usage"] for e in events if e["type"] == "turn.completed"]
    assert usage["input_tokens"] == sum(r["input_tokens"] for r in rows)
    assert usage["cached_input_tokens"] == sum(r["cached_tokens"] for r in rows)
    assert usage["output_tokens"] == sum(r["output_tokens"] for r in rows)
