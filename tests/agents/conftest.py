"""The real coding-agent CLIs against a real `tallygate serve` and the fake upstream, offline.

`make test` installs the pinned `@anthropic-ai/claude-code` and `@openai/codex` (package.json,
package-lock.json beside this file) into `tests/agents/node_modules`; both ship a native
linux-x64 binary as an optional dependency of their npm package. A CLI that is missing fails
these tests (it is never skipped): run `make agents` (or `npm ci` here).

Each CLI turn is scripted through the fake upstream's prompt directives (`[[no tools]]`,
`[[call NAME {json}]]`, see `tests/fakes/wire.tool_call`): a plain turn is one request, a tool
turn is the model's tool call, the CLI running the tool, and the final answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway

BIN = Path(__file__).parent / "node_modules" / ".bin"
TAGS = "team/platform,agent/cli"


def cli(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: `make agents` installs the pinned CLIs from npm")
    return path


def agent_config(upstream: FakeUpstream) -> dict:
    """Each CLI against each provider type: an Anthropic and an OpenAI provider on the fake.

    `claude-sonnet-4-5`: a name Claude Code knows (its list price is the ledger's); `team-claude`
    a name it does not (it then sends `system` messages mid-conversation); `local-coder` an
    OpenAI-compatible model (Claude Code's requests translated); `gpt-5` Codex native,
    `claude-for-codex` Codex translated onto the Anthropic provider."""
    return {
        "providers": {
            "openai": {"type": "openai", "base_url": upstream.base_url, "api_key": "sk-upstream"},
            "anthropic": {"type": "anthropic", "base_url": upstream.root_url, "api_key": "sk-ant-up"},
        },
        "models": {
            "claude-sonnet-4-5": {"provider": "anthropic", "model": "claude-sonnet-4-5"},
            "team-claude": {"provider": "anthropic", "model": "claude-sonnet-4-5"},
            "local-coder": {"provider": "openai", "model": "gpt-4o-mini"},
            "gpt-5": {"provider": "openai", "model": "gpt-5"},
            "claude-for-codex": {"provider": "anthropic", "model": "claude-sonnet-4-5"},
        },
    }


@dataclass
class Agents:
    gateway: Gateway
    upstream: FakeUpstream
    workdir: Path

    def key(self, name: str) -> str:
        return self.gateway.create_key(name, team="platform")

    def records(self, key_name: str, count: int, timeout: float = 15.0) -> list[dict]:
        """The key's ledger records, once the batched writer has written `count` of them."""
        deadline = time.monotonic() + timeout
        while True:
            rows = [r for r in self.gateway.ledger_rows() if r["key_name"] == key_name]
            if len(rows) >= count or time.monotonic() > deadline:
                assert len(rows) == count, rows
                return rows
            time.sleep(0.1)


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agents]:
    with FakeUpstream() as upstream:
        workdir = tmp_path_factory.mktemp("agents")
        gateway = Gateway(workdir, agent_config(upstream)).start()
        try:
            yield Agents(gateway, upstream, workdir)
        finally:
            gateway.stop()
