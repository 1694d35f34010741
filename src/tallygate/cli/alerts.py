"""`tallygate alerts list`: the alerts fired, newest first, straight from the database."""

from __future__ import annotations

import json

import click

from tallygate.cli.options import db_option, open_database
from tallygate.errors import GatewayError
from tallygate.settings import ALERT_KINDS


@click.group()
def alerts() -> None:
    """Alerts fired: thresholds, projected overruns, spend spikes, error rates."""


@alerts.command("list")
@db_option
@click.option("--kind", type=click.Choice(ALERT_KINDS), default=None)
@click.option("--subject", default=None, help="A subject id: key id, budget:<id>, or group.")
@click.option("--from", "from_", default=None, help="Inclusive; ISO 8601 or epoch ms.")
@click.option("--to", default=None, help="Exclusive; ISO 8601 or epoch ms.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line.")
def list_alerts(db_url: str | None, kind: str | None, subject: str | None, from_: str | None, to: str | None,
                limit: int, as_json: bool) -> None:
    """List alerts, newest first."""
    from tallygate.analytics.query import parse_time
    from tallygate.store.alerts import AlertFilter, AlertStore

    engine = open_database(db_url)
    try:
        f = AlertFilter(kind=kind, subject=subject, from_ms=parse_time(from_, "from"), to_ms=parse_time(to, "to"))
        rows, _ = AlertStore(engine).page(f, limit, None)
    except GatewayError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        engine.dispose()
    for ev in rows:
        if as_json:
            click.echo(json.dumps(ev, sort_keys=True))
        else:
            click.echo(f"{ev['created_at']}  {ev['kind']:<17}  {ev['subject']['name']}  {ev['summary']}")
