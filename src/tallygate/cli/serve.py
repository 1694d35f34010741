"""`tallygate serve`: run the gateway."""

from __future__ import annotations

import gc
import logging
import sys
from typing import TYPE_CHECKING

import click

from tallygate.cli.options import db_option, load_settings
from tallygate.settings import ConfigError, load_config

if TYPE_CHECKING:
    from tallygate.store.keys import KeyStore


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="TALLYGATE_CONFIG",
              default=None, help="tallygate.yaml (default: the built-in demo config on the mock "
                                 "provider). Env: TALLYGATE_CONFIG.")
@db_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8400, show_default=True, type=click.IntRange(0, 65535))
def serve(config_path: str | None, db_url: str | None, host: str, port: int) -> None:
    """Start the gateway (one worker process)."""
    import uvicorn

    from tallygate.api.edges import GuardedHttpTools, raise_fd_limit
    from tallygate.app import create_app, prepare_database
    from tallygate.store.db import open_engine
    from tallygate.store.keys import KeyStore

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    settings = load_settings(db_url=db_url)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    prepare_database(settings.db_url)
    demo_secret = None
    if config_path is None:
        engine = open_engine(settings.db_url)
        demo_secret = _demo_key(KeyStore(engine))
        engine.dispose()
    app = create_app(config, settings)
    base = f"http://{host}:{port}/v1"
    click.echo(f"Tallygate on {base}  (config: {config_path or 'built-in demo, mock provider'}; "
               f"ledger: {settings.db_url})", err=True)
    click.echo("models: " + ", ".join(m["id"] for m in app.catalog.listing()["data"]), err=True)
    if demo_secret:
        click.echo(f"demo API key (shown once): {demo_secret}", err=True)
    elif config_path is None:
        click.echo("API keys: the demo key printed at the first start, or a new one from "
                   "`tallygate keys create --name NAME`", err=True)
    if not settings.admin_key:
        click.echo("TALLYGATE_ADMIN_KEY is not set: logs and management need it.", err=True)
    click.echo(f"try: curl {base}/chat/completions -H 'Authorization: Bearer <key>' "
               "-H 'Content-Type: application/json' "
               "-d '{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
               "\"request_tags\":[\"team/demo\"]}'", err=True)
    loop = "uvloop" if sys.platform != "win32" else "asyncio"
    files = raise_fd_limit(settings.max_connections + 256)  # sockets, plus the DB, journal, upstreams
    if files < settings.max_connections + 64:
        click.echo(f"warning: the open-file limit is {files}; fewer than TALLYGATE_MAX_CONNECTIONS="
                   f"{settings.max_connections} connections can be served", err=True)
    protocol = GuardedHttpTools.configure(max_head_bytes=settings.max_head_bytes,
                                          header_timeout_s=settings.header_timeout_s,
                                          body_timeout_s=settings.body_timeout_s)
    gc.freeze()  # start-up objects never need collecting: keeps GC pauses off request latency
    uvicorn.run(app, host=host, port=port, loop=loop, http=protocol, lifespan="on",
                access_log=False, log_level="warning", timeout_graceful_shutdown=settings.shutdown_grace_s,
                timeout_keep_alive=settings.idle_timeout_s, limit_concurrency=settings.max_connections,
                proxy_headers=False, server_header=False, date_header=False)


def _demo_key(keys: KeyStore) -> str | None:
    """On a first start with the demo config: create the demo key and return its secret."""
    if keys.all():
        return None
    admin = keys.ensure_user("admin")
    _, secret = keys.create(name="demo", labels={"team": "demo", "env": "dev"}, created_by=admin.id)
    return secret
