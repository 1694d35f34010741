"""The text rules of the management API as JSON-schema patterns, so `/openapi.json` describes
exactly what the API validates (a client, or a fuzzer, that follows the document is never
refused, and one that breaks it always is).

`visible()` matches text without control characters (C0, DEL, C1), invisible formatting
characters (zero-width spaces, bidirectional overrides ...), line and paragraph separators or
private-use code points, built from this Python's Unicode database; key names and label values
and tag filters are checked with the same expression (`has_invisible`), so document and check
agree exactly.
`tag()` is a request tag; `MONEY` and `SCORE` the decimal strings the API accepts, which the
validators below enforce too (`decimal_text`). (Unassigned code points are not in the class:
a fuzzer draws from all of them, and a class that size makes generating examples crawl.)
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections.abc import Callable
from typing import Any

_REFUSED = frozenset({"Cc", "Cf", "Zl", "Zp", "Co"})  # and Cs: no JSON string holds a lone one


@functools.cache
def _refused_class() -> str:
    """A regex character class body with every refused code point (as ranges)."""
    ranges: list[tuple[int, int]] = []
    for cp in range(sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF or unicodedata.category(chr(cp)) not in _REFUSED:
            continue
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
                   for a, b in ranges)


@functools.cache
def visible() -> str:
    """Text without refused characters (computed once, when the OpenAPI document is built)."""
    return f"^[^{_refused_class()}]*$"


@functools.cache
def tag() -> str:
    """A tag filter: 1-8 non-empty segments, nothing invisible."""
    seg = f"[^/{_refused_class()}]+"
    return f"^{seg}(?:/{seg}){{0,7}}$"


@functools.cache
def _refused_re() -> re.Pattern[str]:
    return re.compile(f"[{_refused_class()}]")


def has_invisible(text: str) -> bool:
    """Whether `text` holds a character `visible()` excludes."""
    if text.isascii():
        return any(c < " " or c == "\x7f" for c in text)
    return _refused_re().search(text) is not None


NO_NUL = "^[^\\x00]*$"
CURSOR = r"^$|^[0-9]{1,15}\.[A-Za-z0-9_-]{0,64}$"
ALERT_CURSOR_SHAPE = r"[0-9]{1,15}\.(?:[0-9a-f]{2}){0,800}"  # <created_at>.<alert id's UTF-8 in hex>
ALERT_CURSOR = rf"^$|^{ALERT_CURSOR_SHAPE}$"
MONTH = r"^(?:19[7-9][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-(?:0[1-9]|1[0-2])$"
_DIM = (r"\s*(?:key|model|served_model|provider|status|tag|tag_level\.[1-8]|time\.(?:hour|day|month)"
        r"|label\.[A-Za-z_][A-Za-z0-9_.-]{0,63})\s*")
GROUP_BY = rf"^\s*$|^{_DIM}(?:,{_DIM}){{0,3}}$"
_LINE_DIM = r"\s*(?:key|model|served_model|provider|status|label\.[A-Za-z_][A-Za-z0-9_.-]{0,63})\s*"
INVOICE_GROUP_BY = rf"^\s*$|^{_LINE_DIM}(?:,{_LINE_DIM}){{0,3}}$"  # invoice lines must not overlap
_DAY = r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
TIME = (rf"^$|^[0-9]{{1,14}}$|^(?:197[1-9]|19[89][0-9]|[2-8][0-9]{{3}}|9[0-8][0-9]{{2}})"
        rf"{_DAY[8:]}(?:T(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9])?(?:Z|[+-](?:0[0-9]|1[0-3]):[0-5][0-9])?)?$")
MARKUP = r"^$|^(?:10(?:\.0{1,6})?|[0-9](?:\.[0-9]{1,6})?)$"

# Up to 9,000,000 with at most 12 decimal places; a score from 0 to 1 with at most 3.
MONEY = r"^(?:9000000(?:\.0{1,12})?|[0-8]?[0-9]{1,6}(?:\.[0-9]{1,12})?)$"
SCORE = r"^(?:0(?:\.[0-9]{1,3})?|1(?:\.0{1,3})?)$"


def decimal_text(pattern: str, example: str) -> Callable[[object], object]:
    """A before-validator: a decimal given as a string must match `pattern` (numbers pass on)."""
    compiled = re.compile(pattern)

    def check(value: object) -> object:
        if isinstance(value, str) and not compiled.fullmatch(value):
            raise ValueError(f"must be a decimal number written like {example!r}")
        return value

    return check


def decimal_schema(pattern: str, maximum: int, step: float) -> dict[str, Any]:
    """The JSON schema of a decimal sent as a number or as a string."""
    return {"anyOf": [{"type": "number", "minimum": 0, "maximum": maximum, "multipleOf": step},
                      {"type": "string", "pattern": pattern}]}
