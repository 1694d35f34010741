"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tallygate.core import windows
from tallygate.settings import ConfigError, Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

db_option = click.option(
    "--db", "db_url", envvar="TALLYGATE_DB_URL", default=None, metavar="URL",
    help="Database URL (default sqlite:///tallygate.db in the working directory; "
         "postgresql+psycopg://... for PostgreSQL). Env: TALLYGATE_DB_URL.")

redis_option = click.option(
    "--redis", "redis_url", envvar="TALLYGATE_REDIS_URL", default=None, metavar="URL",
    help="The running gateways' Redis (redis://host:port/db, as `serve --redis`): the change is announced "
         "there, so every gateway applies it to its next request. Unreachable: nothing is changed. "
         "Env: TALLYGATE_REDIS_URL.")


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(**overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def open_database(db_url: str | None) -> Engine:
    """The ledger's engine for a CLI command, migrated. A SQLite file that was not there is said on
    stderr: run away from the gateway's directory, the command would otherwise write a fresh
    ledger the running gateway never reads (a key it then answers 401 to) without a word."""
    from sqlalchemy.engine import make_url

    from tallygate.store.db import migrate, open_engine

    url = load_settings(db_url=db_url).db_url
    path = make_url(url).database if url.startswith("sqlite") else None
    fresh = Path(path).resolve() if path and path != ":memory:" and not Path(path).exists() else None
    engine = open_engine(url)
    migrate(engine)
    if fresh is not None:
        click.echo(f"note: {fresh} did not exist: this made a new, empty ledger there. A gateway serving "
                   "another database does not see it: run the command where `tallygate serve` runs "
                   "(make run: the repository), or give its database with --db or TALLYGATE_DB_URL.", err=True)
    return engine


def announcing_budget(redis_url: str | None):  # type: ignore[no-untyped-def]
    """The CLI's budget engine for a change: it bumps the shared version in Redis when Redis is
    configured (checked reachable first: a ClickException, and nothing changed, when it is not)."""
    from tallygate.errors import GatewayError
    from tallygate.pipeline.freshness import AnnouncingBudget, SharedVersion

    if not redis_url:
        return AnnouncingBudget(None)
    shared = SharedVersion(redis_url)
    try:
        shared.check()
    except GatewayError as err:
        shared.close()
        raise click.ClickException(err.message) from None
    return AnnouncingBudget(shared)


def reporting_tz(config_path: str | None) -> str:
    """The reporting time zone of the config file (UTC without one): budget days and weeks."""
    from tallygate.settings import ConfigError, load_config

    try:
        return load_config(config_path).reporting.timezone
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _period(_ctx: click.Context, _param: click.Parameter, value: str | None) -> object:
    """--period as the API takes it: 'day', 'week', 'month', or 'hours:N' / 'days:N' as {unit: N}."""
    if value is None or value in ("day", "week", "month"):
        return value
    unit, sep, n = value.partition(":")
    top = {"hours": windows.MAX_HOURS, "days": windows.MAX_DAYS}.get(unit)
    if sep and top is not None and n.isdigit() and 1 <= int(n) <= top:
        return {unit: int(n)}
    raise click.BadParameter(f"must be day, week, month, hours:N (N from 1 to {windows.MAX_HOURS}) or days:N "
                             f"(N from 1 to {windows.MAX_DAYS})", param_hint="--period")


def period_flag(period: object) -> str:
    """A period as the API shows it, written as --period takes it: 'month', 'hours:6'."""
    if isinstance(period, dict) and len(period) == 1:
        (unit, n), = period.items()
        return f"{unit}:{n}"
    return str(period)


period_option = click.option("--period", default=None, callback=_period, metavar="PERIOD",
                             help="The limit's window: day, week or month (the default), from local midnight "
                                  "in the reporting time zone, or rolling hours:N / days:N.")


def parse_labels(pairs: tuple[str, ...]) -> dict[str, str]:
    """`--label name=value` options as a dict."""
    labels = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not name=value", param_hint="--label")
        labels[name] = value
    return labels
