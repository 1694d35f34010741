"""Every example in README.md and docs/*.md runs against a real gateway, so the docs cannot drift.

One `tallygate serve` on the built-in demo config (temp SQLite ledger, the demo key it prints)
serves every shell, Python and JavaScript block; `<!-- docs-test: fake-upstream -->` blocks run
against a gateway on the page's last YAML config with its providers pointed at the fake
upstreams. YAML blocks are validated as `tallygate.yaml` (over the demo config when they are a
fragment), JSON and TOML blocks parsed. A block that fails, a curl answered with an error, an
unknown CLI flag, model or config field fails the build; a block the harness cannot run must
say why (`<!-- docs-test: skip: reason -->`). See tests/docs/blocks.py for the markers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tallygate.core.demo import DEMO_CONFIG
from tallygate.settings import Settings, parse_config
from tests.docs.blocks import CHECKED, MARKER, NODE, PYTHON, ROOT, SHELL, TEXT, Block, all_blocks, pages
from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway

ADMIN_KEY = "tg-admin-demo"  # what `make run` sets, and what the docs say
MARKERS = frozenset({"skip", "fake-upstream", "expect-status"})
NODE_DIR = Path(__file__).resolve().parent / "node"
BLOCK_TIMEOUT_S = 60
_DOCS_PORT = re.compile(r"\b(127\.0\.0\.1|localhost):8400\b")
_ENV_REF = re.compile(r"env:([A-Za-z_][A-Za-z0-9_]*)")

BLOCKS = all_blocks()
RUN = [b for b in BLOCKS if "skip" not in b.markers and b.lang not in TEXT]


class DocsGateway:
    """A `tallygate serve` process and the secrets the docs' environment names."""

    def __init__(self, gateway: Gateway, key: str) -> None:
        self.gateway = gateway
        self.key = key

    def env(self) -> dict[str, str]:
        return {**os.environ,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                "TALLYGATE_KEY": self.key, "TALLYGATE_ADMIN_KEY": ADMIN_KEY,
                "TALLYGATE_DB_URL": self.gateway.db_url, "PYTHONDONTWRITEBYTECODE": "1"}


def _start(workdir: Path, config: dict | None) -> DocsGateway:
    gateway = Gateway(workdir, config, env={"TALLYGATE_ADMIN_KEY": ADMIN_KEY, **_dummy_env(config)}).start()
    if config is None:  # the demo config creates the demo key on first start and prints it once
        found = re.search(r"demo API key \(shown once\): (\S+)", gateway.log())
        assert found, gateway.log()
        return DocsGateway(gateway, found[1])
    status, _, body = gateway.post_json("/v1/manage/apikey", {"name": "docs", "labels": {"team": "docs"}},
                                        key=ADMIN_KEY)
    assert status == 201, body
    return DocsGateway(gateway, str(body["key"]))


def _dummy_env(config: dict | None) -> dict[str, str]:
    """A value for every `env:NAME` a config names (the fakes accept any credential)."""
    return {name: f"docs-test-{name.lower()}" for name in _ENV_REF.findall(json.dumps(config or {}))}


def _as_config(fragment: dict) -> dict:
    """A YAML block as a whole config: a fragment (`alerts:` alone) sits on the demo config."""
    return {**DEMO_CONFIG, **fragment}


def _on_fakes(config: dict, upstream: FakeUpstream) -> dict:
    """The same config with every OpenAI and Anthropic provider pointed at the fake upstream."""
    providers = {}
    for name, provider in config["providers"].items():
        kind = provider.get("type")
        if kind == "openai":
            provider = {**provider, "base_url": upstream.base_url}
        elif kind == "anthropic":
            provider = {**provider, "base_url": upstream.root_url}
        providers[name] = provider
    return {**config, "providers": providers}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocsGateway]:
    gw = _start(tmp_path_factory.mktemp("docs-demo"), None)
    yield gw
    gw.gateway.stop()


@pytest.fixture(scope="module")
def faked(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, DocsGateway]]:
    """Gateways on the docs' own configs, started on first use, one per distinct config."""
    started: dict[str, DocsGateway] = {}
    yield started
    for gw in started.values():
        gw.gateway.stop()


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """The Node SDKs the JavaScript examples import, from tests/docs/node's lockfile (cached)."""
    target = NODE_DIR / "node_modules"
    if not (target / ".package-lock.json").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR,
                       check=True, timeout=300)
    return target


def _page_config(block: Block) -> dict:
    """The last YAML block above `block` on its page: the config its gateway runs."""
    above = [b for b in BLOCKS if b.page == block.page and b.line < block.line and b.lang in ("yaml", "yml")]
    assert above, f"{block.id}: fake-upstream needs a YAML config block above it on the page"
    return _as_config(yaml.safe_load(above[-1].code))


def _gateway_for(block: Block, request: pytest.FixtureRequest) -> DocsGateway:
    if "fake-upstream" not in block.markers:
        gw: DocsGateway = request.getfixturevalue("demo")
        return gw
    upstream: FakeUpstream = request.getfixturevalue("upstream")
    started: dict[str, DocsGateway] = request.getfixturevalue("faked")
    config = _on_fakes(_page_config(block), upstream)
    text = json.dumps(config, sort_keys=True)
    if text not in started:
        workdir = request.getfixturevalue("tmp_path_factory").mktemp("docs-fake")
        started[text] = _start(workdir, config)
    return started[text]


def _run(args: list[str], env: dict[str, str], cwd: Path, block: Block) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{block.id} ran over {BLOCK_TIMEOUT_S} s\n{exc.stdout!r}\n{exc.stderr!r}")
    assert done.returncode == 0, (f"{block.id} exited {done.returncode}\n--- block\n{block.code}"
                                  f"--- stdout\n{done.stdout}--- stderr\n{done.stderr}")
    return done


_FAIL_ON_ERROR = 'curl() { command curl --silent --show-error --fail-with-body "$@"; }\n'
_RECORD_STATUS = ("curl() { command curl --silent --show-error "
                  "--write-out '%{stderr}docs-test-status %{http_code}\\n' \"$@\"; }\n")


def _run_shell(block: Block, code: str, env: dict[str, str], cwd: Path) -> None:
    expected = block.markers.get("expect-status")
    prelude = "set -euo pipefail\n" + (_RECORD_STATUS if expected else _FAIL_ON_ERROR)
    done = _run(["bash", "-c", prelude + code], env, cwd, block)
    if expected:
        statuses = re.findall(r"docs-test-status (\d+)", done.stderr)
        assert statuses and set(statuses) == {expected}, f"{block.id}: curl answered {statuses}, not {expected}"


@pytest.mark.parametrize("block", RUN, ids=[b.id for b in RUN])
def test_docs_example_runs(block: Block, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if block.lang in CHECKED:
        _check_data_block(block)
        return
    gw = _gateway_for(block, request)
    code = _DOCS_PORT.sub(f"127.0.0.1:{gw.gateway.port}", block.code)
    env = gw.env()
    if block.lang in SHELL:
        _run_shell(block, code, env, tmp_path)
    elif block.lang in PYTHON:
        script = tmp_path / "example.py"
        script.write_text(code)
        _run([sys.executable, str(script)], env, tmp_path, block)
    elif block.lang in NODE:
        (tmp_path / "node_modules").symlink_to(request.getfixturevalue("node_modules"))
        script = tmp_path / "example.mjs"
        script.write_text(code)
        _run([shutil.which("node") or "node", str(script)], env, tmp_path, block)
    else:
        pytest.fail(f"{block.id}: no runner for ```{block.lang}")


def _check_data_block(block: Block) -> None:
    if block.lang == "json":
        json.loads(block.code)
    elif block.lang == "toml":
        tomllib.loads(block.code)
    else:
        config = _as_config(yaml.safe_load(block.code))
        parse_config(config, _dummy_env(config))  # unknown fields, types or names raise ConfigError


def test_every_block_is_run_or_says_why() -> None:
    """No example escapes the harness silently: an unknown language or marker, or a skip
    without a reason, fails."""
    problems = []
    runnable = SHELL | PYTHON | NODE | CHECKED | TEXT
    for block in BLOCKS:
        unknown = set(block.markers) - MARKERS
        if unknown:
            problems.append(f"{block.id}: unknown docs-test marker {sorted(unknown)}")
        if "skip" in block.markers and not block.markers["skip"]:
            problems.append(f"{block.id}: `skip` needs a reason (`<!-- docs-test: skip: why -->`)")
        if block.lang not in runnable and "skip" not in block.markers:
            problems.append(f"{block.id}: the harness cannot run ```{block.lang}; mark it with a reason")
        if "expect-status" in block.markers and block.lang not in SHELL:
            problems.append(f"{block.id}: expect-status applies to shell blocks")
    for page in pages():
        written = sum(1 for line in page.read_text().splitlines() if MARKER.match(line))
        attached = sum(1 for b in BLOCKS if b.page == str(page.relative_to(ROOT)) and b.markers)
        if written != attached:
            problems.append(f"{page.relative_to(ROOT)}: a docs-test marker is not on the line right above a fence")
    assert not problems, "\n".join(problems)
    assert len(RUN) >= 20, "the docs examples were not found"


# JSON blocks that show an answer of the gateway, each with the chat request that gets it: the
# block must be that answer, field for field (a JSON block is otherwise only parsed).
_HELLO = {"role": "user", "content": "Hello"}
ANSWERS = {
    ("docs/errors.md", "messages[1].content[0].type must be a string"):
        {"model": "gpt-4o-mini", "messages": [_HELLO, {"role": "user", "content": [{"type": 5}]}]},
    ("docs/tags.md", "request_tags[0] 'team//search'"):
        {"model": "gpt-4o-mini", "messages": [_HELLO], "request_tags": ["team//search"]},
}


@pytest.mark.parametrize(("page", "needle"), list(ANSWERS), ids=[page for page, _ in ANSWERS])
def test_an_answer_the_docs_show_is_the_gateways(demo: DocsGateway, page: str, needle: str) -> None:
    shown = [b for b in BLOCKS if b.page == page and b.lang == "json" and needle in b.code]
    assert len(shown) == 1, f"{page}: no JSON block holds {needle!r}"
    status, _, answer = demo.gateway.post_json("/v1/chat/completions", ANSWERS[page, needle], key=demo.key)
    assert status == 400 and answer == json.loads(shown[0].code), answer


_ENV_DEFAULT = re.compile(r"^\| `(TALLYGATE_[A-Z_]+)` \| `?([0-9][0-9_,.]*)`? \|", flags=re.MULTILINE)


def test_the_documented_defaults_of_the_environment_are_the_gateways() -> None:
    """Every `| `TALLYGATE_X` | 250 |` row of a settings table: setting the variable to the default
    the docs give changes nothing (so the docs cannot give another number than the code's)."""
    rows = [(page.name, name, value.replace(",", "")) for page in pages()
            for name, value in _ENV_DEFAULT.findall(page.read_text())]
    assert len(rows) >= 10, rows
    wrong = [row for row in rows if Settings.from_env({row[1]: row[2]}) != Settings.from_env({})]
    assert not wrong, f"documented defaults the gateway does not have: {wrong}"


def test_the_readme_routes_table_names_every_route_the_gateway_documents(demo: DocsGateway) -> None:
    """Each path of /openapi.json is in the README's Routes table (by its last fixed segment, as the
    table abbreviates: `/tags/tree`, `[/{id}]`): the rate-limit and minutes routes were missing."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Routes"):readme.index("Any other route")]
    status, spec = demo.gateway.get("/openapi.json", key=None)
    assert status == 200, spec
    missing = [path for path in spec["paths"]
               if f"/{[s for s in path.split('/') if s and not s.startswith('{')][-1]}" not in table]
    assert not missing, f"README.md's Routes table lacks {missing}"


def test_harness_catches_a_misspelled_flag_and_an_unknown_model(demo: DocsGateway, tmp_path: Path) -> None:
    """The checks the docs rely on: a wrong CLI flag and a model the config lacks both fail."""
    env = demo.env()
    port = demo.gateway.port
    for code in ("tallygate keys list --lable team=demo\n",
                 f"curl http://127.0.0.1:{port}/v1/chat/completions -H \"Authorization: Bearer $TALLYGATE_KEY\" "
                 "-H 'Content-Type: application/json' "
                 "-d '{\"model\": \"claude-sonnet\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}'\n"):
        done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + _FAIL_ON_ERROR + code], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
        assert done.returncode != 0, code


def test_harness_rejects_an_unknown_config_field() -> None:
    with pytest.raises(Exception, match="alerts"):
        _check_data_block(Block(page="x.md", line=1, lang="yaml", code="alerts: {thresholdz: [50]}\n"))


def test_docs_pages_are_linked_from_the_readme() -> None:
    """Every page under docs/ is reachable from the front door."""
    readme = (ROOT / "README.md").read_text()
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if f"docs/{p.name}" not in readme]
    assert not missing, f"README.md does not link {missing}"


_LINK = re.compile(r"\]\((?!https?://|mailto:)([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to `-`."""
    headings = re.findall(r"^#{1,6} (.+)$", page.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_docs_links_point_at_files_and_headings_that_exist() -> None:
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
        for target in _LINK.findall(text):
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
