"""Tag paths: their limits, the characters they may not hold, and the prefixes they roll up to."""

from __future__ import annotations

import unicodedata

MAX_TAGS = 32
MAX_TAG_LENGTH = 256
MAX_DEPTH = 8

_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def has_control_characters(text: str) -> bool:
    """Control characters (C0, DEL, C1), line/paragraph separators and invisible formatting
    characters such as zero-width spaces or right-to-left overrides."""
    if text.isascii():  # the non-printable ASCII characters are exactly C0 and DEL: one C-level pass
        return not text.isprintable()
    return any(unicodedata.category(c) in _INVISIBLE for c in text)


def prefixes(tags: tuple[str, ...]) -> list[str]:
    """Every distinct prefix of every tag, each once: ("US/CA/SF", "US/NYC") -> US, US/CA, ..."""
    out: dict[str, None] = {}
    for tag in tags:
        pos = tag.find("/")
        while pos != -1:
            out[tag[:pos]] = None
            pos = tag.find("/", pos + 1)
        out[tag] = None
    return list(out)


def carries(tags: list[str] | tuple[str, ...], tag: str) -> bool:
    """Whether one of `tags` is `tag` or a path under it."""
    inside = tag + "/"
    return any(t == tag or t.startswith(inside) for t in tags)
