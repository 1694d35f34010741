"""`tallygate ratelimits ...`: requests per second and minute, tokens per minute and requests in flight, on keys,
label groups, tag subtrees and models.

Commands act on the database directly as the bootstrap `admin` user. With `--redis` (or
TALLYGATE_REDIS_URL) a change binds every running gateway from the moment the command returns,
as budgets' and keys' do; without it, they pick it up within about a second.
"""

from __future__ import annotations

import json
from typing import Any

import click

from tallygate.cli.budgets import key_option, label_option, tag_option
from tallygate.cli.keys import _run, _validated
from tallygate.cli.options import announcing_budget, db_option, load_settings, open_database, parse_labels, redis_option


def _admin(db_url: str | None, redis_url: str | None = None):  # type: ignore[no-untyped-def]
    """A RateLimitAdmin on the database, acting as `admin`, plus the admin principal; its changes
    are announced through the running gateways' Redis when `redis_url` is given."""
    from tallygate.manage.ratelimits import RateLimitAdmin
    from tallygate.pipeline.auth import ADMIN_PERMISSIONS
    from tallygate.pipeline.ratelimit_rules import RuleRegistry
    from tallygate.pipeline.scopes import BudgetSet
    from tallygate.store.keys import KeyStore
    from tallygate.store.ratelimits import RateLimitStore
    from tallygate.types import Principal

    engine = open_database(db_url)
    keys, store = KeyStore(engine), RateLimitStore(engine)
    admin_user = keys.ensure_user("admin")
    registry = RuleRegistry(store)
    registry.reload()
    principal = Principal(key_id=None, name="admin", permissions=ADMIN_PERMISSIONS, user_id=admin_user.id)
    return RateLimitAdmin(store, keys, registry, BudgetSet, announcing_budget(redis_url).bump), principal


def _scope(label_pairs: tuple[str, ...], tag: str | None, key: str | None, model: str | None) -> dict[str, Any] | None:
    given = [x for x in (label_pairs, tag, key, model) if x]
    if len(given) > 1:
        raise click.UsageError("give one of --label (repeatable), --tag, --key or --model")
    if label_pairs:
        return {"label": parse_labels(label_pairs)}
    for name, value in (("tag", tag), ("key", key), ("model", model)):
        if value:
            return {name: value}
    return None


def _limits(rpm: int | None, tpm: int | None, concurrent: int | None, rps: int | None = None) -> dict[str, int]:
    given = {"requests_per_second": rps, "requests_per_minute": rpm, "tokens_per_minute": tpm,
             "max_concurrent": concurrent}
    return {k: v for k, v in given.items() if v is not None}


def _echo(record: dict[str, Any]) -> None:
    click.echo(json.dumps(record, indent=2))


model_option = click.option("--model", default=None, metavar="NAME",
                            help="Scope: requests naming this model (or policy/NAME).")
rps_option = click.option("--rps", type=click.IntRange(min=1), default=None, help="Requests per second.")
rpm_option = click.option("--rpm", type=click.IntRange(min=1), default=None, help="Requests per minute.")
tpm_option = click.option("--tpm", type=click.IntRange(min=1), default=None,
                          help="Input + output tokens per minute.")
concurrent_option = click.option("--concurrent", type=click.IntRange(min=1), default=None,
                                 help="Requests in flight at once.")


@click.group()
def ratelimits() -> None:
    """Create, list, show, update and delete rate limits on keys, label groups, tag subtrees and models."""


@ratelimits.command("create")
@click.option("--name", required=True)
@label_option
@tag_option
@key_option
@model_option
@rps_option
@rpm_option
@tpm_option
@concurrent_option
@db_option
@redis_option
def create(name: str, label_pairs: tuple[str, ...], tag: str | None, key: str | None, model: str | None,
           rps: int | None, rpm: int | None, tpm: int | None, concurrent: int | None, db_url: str | None,
           redis_url: str | None) -> None:
    """Create a rate limit: e.g. --name growth --label team=growth --rpm 600 --concurrent 20."""
    from tallygate.manage.ratelimit_schemas import RateLimitCreate

    scope = _scope(label_pairs, tag, key, model)
    if scope is None:
        raise click.UsageError("give the scope: --label NAME=VALUE (repeatable), --tag PATH, --key KEY_ID "
                               "or --model NAME")
    admin, caller = _admin(db_url, load_settings(redis_url=redis_url).redis_url)
    _echo(_run(admin.create, caller, _validated(RateLimitCreate, {"name": name, "scope": scope,
                                                                  **_limits(rpm, tpm, concurrent, rps)})))


@ratelimits.command("list")
@db_option
def list_ratelimits(db_url: str | None) -> None:
    """Every rate limit."""
    from tallygate.manage.ratelimit_schemas import LIMITS
    from tallygate.pipeline.ratelimit_rules import limit_scope_text

    admin, _ = _admin(db_url)
    for r in _run(admin.page)["data"]:
        limits = ", ".join(f"{k} {r[k]}" for k in LIMITS if r[k] is not None)
        click.echo(f"{r['id']}  {r['name']}  {limit_scope_text(r['scope'])}  {limits}")


@ratelimits.command("show")
@click.argument("limit_id")
@db_option
def show(limit_id: str, db_url: str | None) -> None:
    """One rate limit as JSON."""
    admin, _ = _admin(db_url)
    _echo(_run(admin.get, limit_id))


@ratelimits.command("update")
@click.argument("limit_id")
@click.option("--name", default=None)
@label_option
@tag_option
@key_option
@model_option
@rps_option
@rpm_option
@tpm_option
@concurrent_option
@click.option("--unset", "unset", multiple=True, type=click.Choice(["rps", "rpm", "tpm", "concurrent"]),
              help="Stop applying this limit (repeatable).")
@db_option
@redis_option
def update(limit_id: str, name: str | None, label_pairs: tuple[str, ...], tag: str | None, key: str | None,
           model: str | None, rps: int | None, rpm: int | None, tpm: int | None, concurrent: int | None,
           unset: tuple[str, ...], db_url: str | None, redis_url: str | None) -> None:
    """Replace the given fields (a scope option replaces the whole scope)."""
    from tallygate.manage.ratelimit_schemas import RateLimitUpdate

    fields: dict[str, Any] = _limits(rpm, tpm, concurrent, rps)
    names = {"rps": "requests_per_second", "rpm": "requests_per_minute", "tpm": "tokens_per_minute",
             "concurrent": "max_concurrent"}
    fields.update({names[u]: None for u in unset})
    if name is not None:
        fields["name"] = name
    if (scope := _scope(label_pairs, tag, key, model)) is not None:
        fields["scope"] = scope
    admin, caller = _admin(db_url, load_settings(redis_url=redis_url).redis_url)
    _echo(_run(admin.update, caller, limit_id, _validated(RateLimitUpdate, fields)))


@ratelimits.command("delete")
@click.argument("limit_id")
@db_option
@redis_option
def delete(limit_id: str, db_url: str | None, redis_url: str | None) -> None:
    """Delete a rate limit (with --redis it stops applying at once, else within a second)."""
    admin, caller = _admin(db_url, load_settings(redis_url=redis_url).redis_url)
    _run(admin.delete, caller, limit_id)
    click.echo(f"deleted {limit_id}")
