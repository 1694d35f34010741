"""`tallygate report` (a readable table of usage by group) and `tallygate export` (invoice CSV).

Both read the database directly, like `tallygate keys`: records a running gateway still holds
in its write buffer (at most a few hundred milliseconds' worth) are not in them yet.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from tallygate.cli.options import db_option, open_database, parse_labels
from tallygate.errors import GatewayError

COLUMNS = [("requests", "requests", ">"), ("errors", "errors", ">"), ("error_rate", "err %", ">"),
           ("input_tokens", "input tok", ">"), ("output_tokens", "output tok", ">"), ("cost", "cost USD", ">"),
           ("p50", "p50 ms", ">"), ("p95", "p95 ms", ">"), ("ttft", "ttft p50", ">"), ("fb", "feedback", ">")]


def _analytics(db_url: str | None):  # type: ignore[no-untyped-def]
    from tallygate.analytics.reader import AnalyticsStore
    from tallygate.analytics.service import Analytics

    engine = open_database(db_url)
    return Analytics(AnalyticsStore(engine))


def _cells(m: dict[str, Any]) -> dict[str, str]:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:,.0f}" if v >= 10 else f"{v:.1f}"

    fb = m["feedback"]
    return {"requests": f"{m['requests']:,}", "errors": f"{m['errors']:,}", "error_rate": f"{m['error_rate']:.1%}",
            "input_tokens": f"{m['input_tokens']:,}", "output_tokens": f"{m['output_tokens']:,}",
            "cost": m["cost"], "p50": ms(m["latency_ms"]["p50"]), "p95": ms(m["latency_ms"]["p95"]),
            "ttft": ms(m["ttft_ms"]["p50"]),
            "fb": "-" if not fb["count"] else f"{fb['mean_score']:.2f} ({fb['count']})"}


def render_table(doc: dict[str, Any]) -> str:
    """The usage document as an aligned text table, totals last."""
    dims = doc["group_by"]
    rows = [[("(none)" if r["group"][d] is None else str(r["group"][d])) for d in dims]
            + list(_cells(r).values()) for r in doc["data"]]
    total_label = "TOTAL (each request once)" if doc["overlapping"] else "TOTAL"
    totals = [total_label] + [""] * (len(dims) - 1) + list(_cells(doc["totals"]).values()) if dims else \
        list(_cells(doc["totals"]).values())
    header = list(dims) + [title for _, title, _ in COLUMNS]
    table = [header, *rows, totals]
    widths = [max(len(str(r[i])) for r in table) for i in range(len(header))]
    aligns = ["<"] * len(dims) + [a for _, _, a in COLUMNS]
    lines = []
    for j, r in enumerate(table):
        if j == len(table) - 1:
            lines.append("  ".join("-" * w for w in widths))
        lines.append("  ".join(f"{c:{a}{w}}" for c, a, w in zip(r, aligns, widths, strict=True)).rstrip())
    if doc["overlapping"]:
        lines.append(f"note: {doc['note']}")
    if doc.get("truncated"):
        lines.append(f"note: showing {len(doc['data'])} of {doc['row_count']} rows")
    return "\n".join(lines)


def _fail(err: GatewayError) -> click.ClickException:
    flag = f" (--{err.param.replace('_', '-')})" if err.param and not err.param.startswith("label.") else ""
    return click.ClickException(err.message + flag)


@click.command()
@click.option("--group-by", "group_by", default="", metavar="DIMS",
              help="Comma-separated: key, model, served_model, provider, status, label.<name>, tag, "
                   "tag_level.<n>, time.hour|day|month.")
@click.option("--month", default=None, metavar="YYYY-MM", help="The calendar month (UTC) to report on.")
@click.option("--from", "from_", default=None, help="Inclusive start: ISO 8601 or epoch ms (instead of --month).")
@click.option("--to", default=None, help="Exclusive end: ISO 8601 or epoch ms.")
@click.option("--tag", default=None, help="Only requests with this tag or one under it.")
@click.option("--label", "label_pairs", multiple=True, metavar="NAME=VALUE", help="Filter; repeatable.")
@click.option("--key", "key_id", default=None, help="Only this API key (id).")
@click.option("--model", default=None, help="Only this requested model.")
@click.option("--labels", "label_mode", type=click.Choice(["recorded", "current"]), default="recorded",
              show_default=True, help="Labels as each request recorded them, or each key's labels now.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON document instead of a table.")
@click.option("--tz", default="UTC", show_default=True, help="Reporting time zone (IANA name) of days and months.")
@db_option
def report(group_by: str, month: str | None, from_: str | None, to: str | None, tag: str | None,
           label_pairs: tuple[str, ...], key_id: str | None, model: str | None, label_mode: str, limit: int,
           as_json: bool, tz: str, db_url: str | None) -> None:
    """Usage and spend grouped by labels, tags, keys, models or time."""
    from tallygate.analytics.query import Query, parse_group_by, parse_month, parse_time, parse_zone
    from tallygate.pipeline.tags import check_tag_filter

    try:
        if month and (from_ or to):
            raise click.UsageError("give --month or --from/--to, not both")
        zone = parse_zone(tz)
        start, end = parse_month(month, tz=zone) if month else (parse_time(from_, "from", zone),
                                                                 parse_time(to, "to", zone))
        q = Query(parse_group_by(group_by), check_tag_filter(tag), parse_labels(label_pairs), key_id, model,
                  start, end, label_mode == "current", zone)
        doc = _analytics(db_url).usage(q, limit)
    except GatewayError as err:
        raise _fail(err) from None
    click.echo(json.dumps(doc, indent=2) if as_json else render_table(doc))


@click.command("export")
@click.option("--month", required=True, metavar="YYYY-MM", help="The calendar month (in --tz) to invoice.")
@click.option("--tz", default="UTC", show_default=True, help="Reporting time zone (IANA name) of the month.")
@click.option("--group-by", "group_by", default="", metavar="DIMS",
              help="Comma-separated: key, model, served_model, provider, status, label.<name>.")
@click.option("--markup", default="0", show_default=True, help="A rate: 0.20 adds 20 %.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--labels", "label_mode", type=click.Choice(["recorded", "current"]), default="recorded",
              show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default="-",
              help="File to write (default: standard output).")
@db_option
def export(month: str, tz: str, group_by: str, markup: str, fmt: str, label_mode: str, output: str,
           db_url: str | None) -> None:
    """A month's invoice lines per group, with a markup: cost exact, amounts due in cents."""
    from tallygate.analytics.invoice import invoice_csv
    from tallygate.analytics.query import parse_group_by, parse_markup, parse_month, parse_zone

    try:
        zone = parse_zone(tz)
        start, end = parse_month(month, tz=zone)
        doc = _analytics(db_url).export(month, start, end, parse_group_by(group_by), parse_markup(markup),
                                        label_mode == "current", zone)
    except GatewayError as err:
        raise _fail(err) from None
    text = invoice_csv(doc) if fmt == "csv" else json.dumps(doc, indent=2) + "\n"
    if output == "-":
        sys.stdout.write(text)
    else:
        with open(output, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        click.echo(f"wrote {len(doc['lines'])} invoice lines for {month} to {output} "
                   f"(total due {doc['totals']['amount_due']} USD)", err=True)
