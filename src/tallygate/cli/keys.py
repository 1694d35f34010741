"""`tallygate keys ...` and `tallygate users ...`: the management API from the command line.

Commands act on the database directly as the bootstrap `admin` user (or, for `users create`,
on behalf of the new user). With `--redis` (or TALLYGATE_REDIS_URL, as the gateways') a change
binds every running gateway from its next request; without Redis, within about a second.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from tallygate.cli.options import (
    announcing_budget,
    db_option,
    load_settings,
    open_database,
    parse_labels,
    period_flag,
    period_option,
    redis_option,
)
from tallygate.errors import GatewayError

T = TypeVar("T")
LEVELS = {"completions": ["write", "none"], "manage": ["write", "read", "none"]}


class _Usd(click.ParamType):  # type: ignore[type-arg]  # generic only in click's stubs
    """A dollar amount, kept exact."""

    name = "USD"

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        try:
            amount = Decimal(str(value))
        except InvalidOperation:
            self.fail(f"{value!r} is not a number of dollars", param, ctx)
        if not amount.is_finite():
            self.fail(f"{value!r} is not a number of dollars", param, ctx)
        return amount


USD = _Usd()


def _admin(db_url: str | None, config_path: str | None = None, budget=None):  # type: ignore[no-untyped-def]
    """A KeyAdmin on the database, acting as `admin`, plus the admin principal; `budget`: the
    engine that announces changes (`announcing_budget`), for commands that make one."""
    from tallygate.core.windows import Windows
    from tallygate.manage.keys import KeyAdmin
    from tallygate.pipeline.auth import ADMIN_PERMISSIONS, Authenticator
    from tallygate.pipeline.budget import MemoryBudget
    from tallygate.pipeline.scopes import LedgerSpend
    from tallygate.settings import ConfigError, load_config
    from tallygate.store.budgets import BudgetStore
    from tallygate.store.keys import KeyStore
    from tallygate.types import Principal

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    policies = getattr(config, "policies", None) or {}
    engine = open_database(db_url)
    store = KeyStore(engine)
    admin_user = store.ensure_user("admin")
    budget = budget or MemoryBudget()
    ledger = LedgerSpend(engine, store, BudgetStore(engine), config.reporting.timezone)
    budget.windows = Windows(ledger.tz)
    ledger.load(budget)
    principal = Principal(key_id=None, name="admin", permissions=ADMIN_PERMISSIONS, user_id=admin_user.id)
    return KeyAdmin(store, Authenticator(store, None), budget, policies), principal, store


def _run(fn: Callable[..., T], *args: Any) -> T:
    """Call a KeyAdmin operation, turning its errors into clean CLI errors."""
    try:
        return fn(*args)
    except GatewayError as err:
        raise click.ClickException(err.message) from None


def _validated(model, data: dict[str, Any]):  # type: ignore[no-untyped-def]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise click.ClickException(f"{field}: {first['msg']}") from None


def _permissions(completions: str | None, manage: str | None) -> dict[str, str]:
    return {k: v for k, v in (("completions", completions), ("manage", manage)) if v is not None}


config_option = click.option("--config", "config_path", envvar="TALLYGATE_CONFIG", default=None,
                             type=click.Path(dir_okay=False), help="tallygate.yaml, to check --policy.")
label_option = click.option("--label", "label_pairs", multiple=True, metavar="NAME=VALUE",
                            help="Repeatable.")
completions_option = click.option("--completions", type=click.Choice(LEVELS["completions"]), default=None)
manage_option = click.option("--manage", type=click.Choice(LEVELS["manage"]), default=None)


def _echo_record(record: dict[str, Any]) -> None:
    click.echo(json.dumps({k: v for k, v in record.items() if k != "key"}, indent=2))


@click.group()
def keys() -> None:
    """Create, list, show, update and revoke API keys."""


@keys.command("create")
@click.option("--name", required=True, help="A name people recognise, e.g. growth-autocomplete-prod.")
@label_option
@click.option("--limit", "monthly_limit", type=USD, default=None, help="Limit in USD per --period.")
@period_option
@completions_option
@manage_option
@click.option("--policy", default=None, help="Serve all of this key's requests through a policy.")
@config_option
@db_option
@redis_option
def create(name: str, label_pairs: tuple[str, ...], monthly_limit: Decimal | None, period: object,
           completions: str | None, manage: str | None, policy: str | None, config_path: str | None,
           db_url: str | None, redis_url: str | None) -> None:
    """Create a key; prints its secret (last line), which is not stored and cannot be shown again."""
    from tallygate.manage.schemas import KeyCreate

    budget = announcing_budget(load_settings(redis_url=redis_url).redis_url)
    admin, caller, _ = _admin(db_url, config_path, budget)
    req = _validated(KeyCreate, {"name": name, "labels": parse_labels(label_pairs), "monthly_limit": monthly_limit,
                                 "permissions": _permissions(completions, manage), "policy": policy,
                                 **({"period": period} if period is not None else {})})
    record = _run(admin.create, caller, req)
    _run(budget.bump)  # running gateways take the key in with its labels and limit at once
    click.echo(f"created key {record['id']} ({name}) labels={json.dumps(record['labels'])} "
               f"limit={record['monthly_limit']}", err=True)
    click.echo("secret (shown once):", err=True)
    click.echo(record["key"])


@keys.command("list")
@label_option
@config_option
@db_option
def list_keys(label_pairs: tuple[str, ...], config_path: str | None, db_url: str | None) -> None:
    """List keys (never their secrets) with their spend in their limit's current window; --label filters."""
    admin, _, _ = _admin(db_url, config_path)
    cursor = None
    while True:
        page = _run(admin.page, parse_labels(label_pairs), 500, cursor)
        for k in page["data"]:
            state = "revoked" if k["revoked_at"] else "active"
            limit = f"${k['monthly_limit']}" if k["monthly_limit"] is not None else "no limit"
            click.echo(f"{k['id']}  {k['key_prefix']}…  {state:7}  {k['name']}  spend ${k['monthly_spend']} "
                       f"/ {limit} per {period_flag(k['period'])} since {k['window_start']}  {json.dumps(k['labels'])}")
        cursor = page["next_cursor"]
        if not cursor:
            break


@keys.command("show")
@click.argument("key_id")
@config_option
@db_option
def show(key_id: str, config_path: str | None, db_url: str | None) -> None:
    """One key's record as JSON."""
    admin, _, _ = _admin(db_url, config_path)
    _echo_record(_run(admin.get, key_id))


@keys.command("update")
@click.argument("key_id")
@click.option("--name", default=None)
@label_option
@click.option("--clear-labels", is_flag=True, help="Remove every label.")
@click.option("--limit", "monthly_limit", type=USD, default=None, help="Limit in USD per --period.")
@click.option("--no-limit", is_flag=True, help="Remove the limit.")
@period_option
@completions_option
@manage_option
@click.option("--policy", default=None)
@config_option
@db_option
@redis_option
def update(key_id: str, name: str | None, label_pairs: tuple[str, ...], clear_labels: bool,
           monthly_limit: Decimal | None, no_limit: bool, period: object, completions: str | None, manage: str | None,
           policy: str | None, config_path: str | None, db_url: str | None, redis_url: str | None) -> None:
    """Replace the given fields; --label replaces the whole label set."""
    from tallygate.manage.schemas import KeyUpdate

    budget = announcing_budget(load_settings(redis_url=redis_url).redis_url)
    admin, caller, store = _admin(db_url, config_path, budget)
    fields: dict[str, Any] = {}
    if name is not None:
        fields["name"] = name
    if label_pairs or clear_labels:
        fields["labels"] = parse_labels(label_pairs)
    if monthly_limit is not None or no_limit:
        fields["monthly_limit"] = None if no_limit else monthly_limit
    if period is not None:
        fields["period"] = period
    if completions or manage:
        current = _run(admin.get, key_id)["permissions"]
        fields["permissions"] = {**current, **_permissions(completions, manage)}
    if policy is not None:
        fields["policy"] = policy or None
    _echo_record(_run(admin.update, caller, key_id, _validated(KeyUpdate, fields)))


@keys.command("revoke")
@click.argument("key_id")
@db_option
@redis_option
def revoke(key_id: str, db_url: str | None, redis_url: str | None) -> None:
    """Revoke a key: it stops working at once with --redis, else within a second; its history stays."""
    admin, caller, _ = _admin(db_url, None, announcing_budget(load_settings(redis_url=redis_url).redis_url))
    _run(admin.revoke, caller, key_id)
    click.echo(f"revoked {key_id}")


@click.group()
def users() -> None:
    """Users own management keys; `created_by` of a key is the user behind the key that made it."""


@users.command("create")
@click.option("--name", required=True)
@click.option("--manage", type=click.Choice(["write", "read"]), default="write", show_default=True)
@db_option
@redis_option
def create_user(name: str, manage: str, db_url: str | None, redis_url: str | None) -> None:
    """Create a user and a management key that belongs to them (secret on the last line)."""
    from tallygate.manage.schemas import KeyCreate
    from tallygate.types import Principal

    budget = announcing_budget(load_settings(redis_url=redis_url).redis_url)
    admin, caller, store = _admin(db_url, None, budget)
    req = _validated(KeyCreate, {"name": name, "permissions": {"completions": "write", "manage": manage}})
    req.name = f"{name}-management"  # the user's name is checked like a key name, then used in it
    try:
        user = store.create_user(name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    as_user = Principal(key_id=None, name=name, permissions=caller.permissions, user_id=user.id)
    record = _run(admin.create, as_user, req)
    _run(budget.bump)
    click.echo(f"created user {name} ({user.id}) and management key {record['id']}", err=True)
    click.echo("secret (shown once):", err=True)
    click.echo(record["key"])
