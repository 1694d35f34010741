"""`tallygate budgets ...`: limits per period (`--period`) on label groups, tag subtrees and keys.

Commands act on the database directly as the bootstrap `admin` user. With `--redis` (or
TALLYGATE_REDIS_URL, as the gateways') a change binds every running gateway from its next
request; without Redis, a gateway picks changes up within about a second. Spend shown here is
the ledger's (reservations in flight live in the gateways).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import click

from tallygate.cli.keys import USD, _run, _validated, config_option
from tallygate.cli.options import (
    announcing_budget,
    db_option,
    load_settings,
    open_database,
    parse_labels,
    period_flag,
    period_option,
    redis_option,
    reporting_tz,
)


def _admin(db_url: str | None, budget=None, config_path: str | None = None):  # type: ignore[no-untyped-def]
    """A BudgetAdmin on the database, acting as `admin`, plus the admin principal; `budget`: the
    engine that announces changes (`announcing_budget`), for commands that make one."""
    from tallygate.core.windows import Windows
    from tallygate.manage.budgets import BudgetAdmin
    from tallygate.pipeline.auth import ADMIN_PERMISSIONS
    from tallygate.pipeline.budget import MemoryBudget
    from tallygate.pipeline.scopes import BudgetRegistry, LedgerSpend
    from tallygate.store.budgets import BudgetStore
    from tallygate.store.keys import KeyStore
    from tallygate.types import Principal

    engine = open_database(db_url)
    keys, store = KeyStore(engine), BudgetStore(engine)
    admin_user = keys.ensure_user("admin")
    budget = budget or MemoryBudget()
    ledger = LedgerSpend(engine, keys, store, reporting_tz(config_path))
    budget.windows = Windows(ledger.tz)
    registry = BudgetRegistry(store, budget, ledger)
    registry.reload()
    principal = Principal(key_id=None, name="admin", permissions=ADMIN_PERMISSIONS, user_id=admin_user.id)
    return BudgetAdmin(store, keys, registry, budget), principal


def _scope(label_pairs: tuple[str, ...], tag: str | None, key: str | None) -> dict[str, Any] | None:
    given = [x for x in (label_pairs, tag, key) if x]
    if len(given) > 1:
        raise click.UsageError("give one of --label (repeatable), --tag or --key")
    if label_pairs:
        return {"label": parse_labels(label_pairs)}
    if tag:
        return {"tag": tag}
    if key:
        return {"key": key}
    return None


def _echo(record: dict[str, Any]) -> None:
    click.echo(json.dumps(record, indent=2))


label_option = click.option("--label", "label_pairs", multiple=True, metavar="NAME=VALUE",
                            help="Scope: requests of keys carrying every pair (repeatable).")
tag_option = click.option("--tag", default=None, metavar="PATH",
                          help="Scope: requests with a tag at or under PATH.")
key_option = click.option("--key", default=None, metavar="KEY_ID", help="Scope: requests of one key.")


@click.group()
def budgets() -> None:
    """Create, list, show, update and delete budgets on label groups, tag subtrees and keys."""


@budgets.command("create")
@click.option("--name", required=True)
@label_option
@tag_option
@key_option
@click.option("--limit", "monthly_limit", type=USD, required=True, help="Limit in USD per --period.")
@period_option
@click.option("--soft", is_flag=True, help="Never refuse: count, alert and show only.")
@config_option
@db_option
@redis_option
def create(name: str, label_pairs: tuple[str, ...], tag: str | None, key: str | None, monthly_limit: Decimal,
           period: object, soft: bool, config_path: str | None, db_url: str | None, redis_url: str | None) -> None:
    """Create a budget: e.g. --name growth --label team=growth --limit 2000."""
    from tallygate.manage.budget_schemas import BudgetCreate

    scope = _scope(label_pairs, tag, key)
    if scope is None:
        raise click.UsageError("give the scope: --label NAME=VALUE (repeatable), --tag PATH or --key KEY_ID")
    admin, caller = _admin(db_url, announcing_budget(load_settings(redis_url=redis_url).redis_url), config_path)
    _echo(_run(admin.create, caller, _validated(BudgetCreate, {"name": name, "scope": scope,
                                                               "monthly_limit": monthly_limit,
                                                               "period": period or "month",
                                                               "enforce": not soft})))


@budgets.command("list")
@config_option
@db_option
def list_budgets(config_path: str | None, db_url: str | None) -> None:
    """Every budget with its spend in its current window."""
    admin, _ = _admin(db_url, None, config_path)
    from tallygate.pipeline.scopes import scope_text

    for b in _run(admin.page)["data"]:
        click.echo(f"{b['id']}  {b['name']}  {scope_text(b['scope'])}  spend ${b['monthly_spend']} "
                   f"/ ${b['monthly_limit']} per {period_flag(b['period'])} since {b['window_start']}")


@budgets.command("show")
@click.argument("budget_id")
@config_option
@db_option
def show(budget_id: str, config_path: str | None, db_url: str | None) -> None:
    """One budget as JSON."""
    admin, _ = _admin(db_url, None, config_path)
    _echo(_run(admin.get, budget_id))


@budgets.command("update")
@click.argument("budget_id")
@click.option("--name", default=None)
@label_option
@tag_option
@key_option
@click.option("--limit", "monthly_limit", type=USD, default=None, help="Limit in USD per --period.")
@period_option
@click.option("--soft/--hard", "soft", default=None, help="Stop / start refusing requests past the limit.")
@config_option
@db_option
@redis_option
def update(budget_id: str, name: str | None, label_pairs: tuple[str, ...], tag: str | None, key: str | None,
           monthly_limit: Decimal | None, period: object, soft: bool | None, config_path: str | None,
           db_url: str | None, redis_url: str | None) -> None:
    """Replace the given fields (a scope option replaces the whole scope)."""
    from tallygate.manage.budget_schemas import BudgetUpdate

    fields: dict[str, Any] = {}
    if name is not None:
        fields["name"] = name
    if (scope := _scope(label_pairs, tag, key)) is not None:
        fields["scope"] = scope
    if monthly_limit is not None:
        fields["monthly_limit"] = monthly_limit
    if soft is not None:
        fields["enforce"] = not soft
    if period is not None:
        fields["period"] = period
    admin, caller = _admin(db_url, announcing_budget(load_settings(redis_url=redis_url).redis_url), config_path)
    _echo(_run(admin.update, caller, budget_id, _validated(BudgetUpdate, fields)))


@budgets.command("delete")
@click.argument("budget_id")
@db_option
@redis_option
def delete(budget_id: str, db_url: str | None, redis_url: str | None) -> None:
    """Delete a budget (at once with --redis, else within a second); the ledger keeps the history."""
    admin, caller = _admin(db_url, announcing_budget(load_settings(redis_url=redis_url).redis_url))
    _run(admin.delete, caller, budget_id)
    click.echo(f"deleted {budget_id}")
