"""Invoice lines for a month: cost, markup and amount due per group, adding up exactly.

Rounding rule, per line i:

* `cost` is exact: the ledger's picodollars as a decimal (up to 12 places). The lines' costs
  add up exactly to the month's total in the ledger.
* `markup` is exact too: cost x rate.
* `amount_due` is in cents. The invoice total is cost_total x (1 + rate) rounded half-even to
  the cent; each line gets its exact amount (cost + markup) rounded *down* to the cent, and the
  cents still missing to reach the total go, one each, to the lines with the largest dropped
  fractions (ties: the larger cost, then the earlier line). This is the largest-remainder
  method: every line is within one cent of its exact amount, and the lines add up exactly to
  the total.

The CSV is safe to open in a spreadsheet (OWASP's CSV-injection advice): a text cell (a group
value such as a label, a dimension name) that begins with `=`, `+`, `-`, `@`, a tab or a carriage
return is written with a leading `'`, so no spreadsheet runs it as a formula. The numeric columns
are left as they are, but only cells that are plain decimal numbers (`-?digits[.digits]`), which
no spreadsheet reads as a formula; anything else in them is neutralised like text. The JSON
export carries the values unchanged.
"""

from __future__ import annotations

import csv
import io
import re
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any

from tallygate.core.money import PICO_PER_USD, usd_text

CENT = Decimal("0.01")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens")


def _plain(d: Decimal) -> str:
    """A decimal as plain text without exponent or trailing zeros ("0.2", "12", "0.000015")."""
    text = format(d.normalize(), "f") if d else "0"
    return text


def apportion(costs_pico: list[int], rate: Decimal) -> tuple[list[int], int]:
    """Amounts due in cents per line, and the total in cents (see the module docstring)."""
    factor = (1 + rate) / PICO_PER_USD * 100  # picodollars -> cents, with the markup
    exact = [Decimal(c) * factor for c in costs_pico]
    total = int((Decimal(sum(costs_pico)) * factor).to_integral_value(ROUND_HALF_EVEN))
    floors = [int(e.to_integral_value(ROUND_FLOOR)) for e in exact]
    missing = total - sum(floors)
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - floors[i]), -costs_pico[i], i))
    for i in order[:missing]:
        floors[i] += 1
    return floors, total


def _cents_text(cents: int) -> str:
    return str((Decimal(cents) * CENT).quantize(CENT))


def invoice(month: str, dims: list[str], lines: list[tuple[dict[str, Any], dict[str, Any]]],
            rate: Decimal) -> dict[str, Any]:
    """The invoice document. `lines` holds (group, sums) with sums of requests, the token
    fields and `cost_pico`, already in invoice order."""
    due, total_due = apportion([s["cost_pico"] for _, s in lines], rate)
    out = []
    for (group, sums), cents in zip(lines, due, strict=True):
        cost = Decimal(sums["cost_pico"]) / PICO_PER_USD
        out.append({"group": group, "requests": sums["requests"],
                    **{f: sums[f] for f in TOKEN_FIELDS},
                    "cost": usd_text(sums["cost_pico"]), "markup": _plain(cost * rate),
                    "amount_due": _cents_text(cents)})
    total_pico = sum(s["cost_pico"] for _, s in lines)
    totals = {"requests": sum(s["requests"] for _, s in lines),
              **{f: sum(s[f] for _, s in lines) for f in TOKEN_FIELDS},
              "cost": usd_text(total_pico), "markup": _plain(Decimal(total_pico) / PICO_PER_USD * rate),
              "amount_due": _cents_text(total_due)}
    return {"object": "invoice", "month": month, "currency": "USD", "group_by": dims, "markup_rate": _plain(rate),
            "rounding": "amount_due: cents; total = (cost + markup) rounded half-even; lines by the "
                        "largest-remainder method, so they add up to the total exactly",
            "lines": out, "totals": totals}


def text_cell(value: object) -> str:
    """A text cell no spreadsheet runs as a formula: a leading `'` when it starts like one."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def number_cell(value: object) -> str:
    """A numeric cell: a plain decimal number as it is, anything else as text (`text_cell`)."""
    text = str(value)
    return text if _PLAIN_NUMBER.fullmatch(text) else text_cell(text)


def invoice_csv(doc: dict[str, Any]) -> str:
    """The invoice as CSV: one column per group dimension, one row per line, then a total row
    (cells neutralised as the module docstring says)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")  # RFC 4180; also makes the writer quote a lone CR
    fields = ["requests", *TOKEN_FIELDS, "cost_usd", "markup_usd", "amount_due_usd"]
    w.writerow(["line", *map(text_cell, doc["group_by"]), *fields])

    def cells(row: dict[str, Any]) -> list[str]:
        values = [row["requests"], *(row[f] for f in TOKEN_FIELDS), row["cost"], row["markup"], row["amount_due"]]
        return [number_cell(v) for v in values]

    for i, line in enumerate(doc["lines"], 1):
        w.writerow([i, *(text_cell(line["group"][d]) for d in doc["group_by"]), *cells(line)])
    w.writerow(["total", *([""] * len(doc["group_by"])), *cells(doc["totals"])])
    return buf.getvalue()
