"""Options shared by several commands."""

from __future__ import annotations

from typing import Any

import click

from tallygate.settings import ConfigError, Settings

db_option = click.option(
    "--db", "db_url", envvar="TALLYGATE_DB_URL", default=None, metavar="URL",
    help="Database URL (default sqlite:///tallygate.db in the working directory; "
         "postgresql+psycopg://... for PostgreSQL). Env: TALLYGATE_DB_URL.")


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(**overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def parse_labels(pairs: tuple[str, ...]) -> dict[str, str]:
    """`--label name=value` options as a dict."""
    labels = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not name=value", param_hint="--label")
        labels[name] = value
    return labels
