"""`tallygate` command line: the root group and shared options."""

from __future__ import annotations

import click

from tallygate.cli.alerts import alerts
from tallygate.cli.budgets import budgets
from tallygate.cli.keys import keys, users
from tallygate.cli.ratelimits import ratelimits
from tallygate.cli.report import export, report
from tallygate.cli.serve import serve


@click.group()
@click.version_option(package_name="tallygate")
def cli() -> None:
    """Tallygate: an OpenAI-compatible LLM gateway that meters, prices and attributes every call."""


cli.add_command(serve)
cli.add_command(keys)
cli.add_command(budgets)
cli.add_command(ratelimits)
cli.add_command(users)
cli.add_command(report)
cli.add_command(export)
cli.add_command(alerts)
