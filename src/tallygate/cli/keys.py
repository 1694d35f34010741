"""`tallygate keys ...`: API keys from the command line (the secret is printed once)."""

from __future__ import annotations

import json

import click

from tallygate.cli.options import db_option, load_settings


def _store(db_url: str | None):  # type: ignore[no-untyped-def]
    from tallygate.store.db import migrate, open_engine
    from tallygate.store.keys import KeyStore

    engine = open_engine(load_settings(db_url=db_url).db_url)
    migrate(engine)
    return KeyStore(engine)


def _labels(pairs: tuple[str, ...]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not name=value", param_hint="--label")
        labels[name] = value
    return labels


@click.group()
def keys() -> None:
    """Create, list and revoke API keys."""


@keys.command("create")
@click.option("--name", required=True, help="A name people recognise, e.g. growth-autocomplete-prod.")
@click.option("--label", "label_pairs", multiple=True, metavar="NAME=VALUE", help="Repeatable.")
@db_option
def create(name: str, label_pairs: tuple[str, ...], db_url: str | None) -> None:
    """Create a key; prints its secret, which is not stored and cannot be shown again."""
    labels = _labels(label_pairs)
    store = _store(db_url)
    admin = store.ensure_user("admin")
    record, secret = store.create(name=name, labels=labels, created_by=admin["id"])
    click.echo(f"id:     {record['id']}\nname:   {name}\nlabels: {json.dumps(labels)}", err=True)
    click.echo("secret (shown once):", err=True)
    click.echo(secret)


@keys.command("list")
@db_option
def list_keys(db_url: str | None) -> None:
    """List keys (never their secrets)."""
    for k in _store(db_url).list():
        state = "revoked" if k["revoked_at"] else "active"
        click.echo(f"{k['id']}  {k['key_prefix']}…  {state:7}  {k['name']}  {json.dumps(k['labels'])}")


@keys.command("revoke")
@click.argument("key_id")
@db_option
def revoke(key_id: str, db_url: str | None) -> None:
    """Revoke a key: it stops working within a second; its history stays."""
    if not _store(db_url).revoke(key_id):
        raise click.ClickException(f"no active key with id {key_id}")
    click.echo(f"revoked {key_id}")
