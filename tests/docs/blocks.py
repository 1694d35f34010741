"""The fenced code blocks of README.md and docs/*.md, with the markers that say how to test them.

A marker is an HTML comment on the line right above a fence, invisible on GitHub:

    <!-- docs-test: skip: starts a foreground server -->      not run; the reason is required
    <!-- docs-test: fake-upstream -->     run against a gateway on the page's last YAML config,
                                          its providers pointed at the fake upstreams
    <!-- docs-test: expect-status 402 --> a shell block whose every curl must answer 402

Several markers may share one comment, separated by `;` (`skip` stands alone). Blocks without an info string
(output, file trees) are text and are not run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHELL = frozenset({"sh", "bash", "shell"})
PYTHON = frozenset({"python", "py"})
NODE = frozenset({"js", "javascript", "mjs"})
CHECKED = frozenset({"yaml", "yml", "json", "toml"})  # parsed (and YAML validated as a config), not run
TEXT = frozenset({"", "text", "console"})

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<body>.*?)\s*-->\s*$")


@dataclass(frozen=True, kw_only=True)
class Block:
    """One fenced block: where it is, its language, its text and its markers."""

    page: str  # path relative to the repository root
    line: int  # line of the opening fence, 1-based
    lang: str
    code: str
    markers: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}:{self.lang or 'text'}"


def pages() -> list[Path]:
    """README.md and every page under docs/, in a stable order."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def parse_markers(comment: str) -> dict[str, str]:
    """`skip: reason; expect-status 402` -> {"skip": "reason", "expect-status": "402"}."""
    if comment.startswith("skip"):  # a skipped block has no other marker; its reason may hold `;`
        return {"skip": comment[4:].lstrip(" :").strip()}
    markers: dict[str, str] = {}
    for part in comment.split(";"):
        part = part.strip()
        if not part:
            continue
        name, _, arg = part.partition(" ")
        markers[name.strip()] = arg.strip()
    return markers


def extract(path: Path) -> list[Block]:
    """Every fenced block of one Markdown file, in order."""
    lines = path.read_text().splitlines()
    page = str(path.relative_to(ROOT))
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence = opening["fence"]
        lang = opening["info"].strip().split(" ")[0].lower()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        marker = MARKER.match(lines[i - 1]) if i else None
        blocks.append(Block(page=page, line=i + 1, lang=lang, code="\n".join(lines[i + 1:j]) + "\n",
                            markers=parse_markers(marker["body"]) if marker else {}))
        i = j + 1
    return blocks


def all_blocks() -> list[Block]:
    return [block for path in pages() for block in extract(path)]
