"""`tallygate serve`: run the gateway."""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
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
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes on the one port; more than 1 needs --redis.")
@click.option("--redis", "redis_url", envvar="TALLYGATE_REDIS_URL", default=None, metavar="URL",
              help="redis://host:port/db: budget state shared by every worker and replica. "
                   "Env: TALLYGATE_REDIS_URL.")
@click.option("--budgets-unavailable", type=click.Choice(["closed", "open"]), default=None,
              envvar="TALLYGATE_BUDGETS_UNAVAILABLE",
              help="Redis unreachable: 'closed' (default) refuses requests under a limit with 503, "
                   "'open' serves them unenforced and logs it. Env: TALLYGATE_BUDGETS_UNAVAILABLE.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None, envvar="TALLYGATE_LOG_FORMAT",
              help="json: one JSON line per request and per log message on stderr. Env: TALLYGATE_LOG_FORMAT.")
def serve(config_path: str | None, db_url: str | None, host: str, port: int, workers: int,
          redis_url: str | None, budgets_unavailable: str | None, log_format: str | None) -> None:
    """Start the gateway."""
    import uvicorn

    from tallygate.api.edges import GuardedHttpTools, raise_fd_limit
    from tallygate.app import create_app, prepare_database
    from tallygate.store.db import open_engine
    from tallygate.store.keys import KeyStore

    settings = load_settings(db_url=db_url, redis_url=redis_url, budgets_unavailable=budgets_unavailable,
                             log_format=log_format)
    json_log = None
    if settings.log_format == "json":
        from tallygate.observe.requestlog import JsonLogging

        json_log = JsonLogging()
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            stream=sys.stderr)
    if workers > 1 and not settings.redis_url:
        raise click.ClickException(
            f"--workers {workers} needs --redis (or TALLYGATE_REDIS_URL): without shared budget state each "
            f"worker would enforce limits on its own, and keys could spend {workers} times their limit")
    from tallygate.store.budget_owner import LedgerClaimed, claim

    try:  # held until this process exits: a second one on the ledger without Redis would double every limit
        release_claim = claim(settings.db_url, shared=bool(settings.redis_url))
    except LedgerClaimed as exc:
        raise click.ClickException(str(exc)) from None
    own_metrics_dir = workers > 1 and not settings.metrics_dir
    if own_metrics_dir:  # prometheus_client's multiprocess mode, in every worker
        settings = dataclasses.replace(settings, metrics_dir=tempfile.mkdtemp(prefix="tallygate-metrics-"))
    if settings.metrics_dir:
        _fresh_metrics_dir(settings.metrics_dir)
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
    try:
        app = create_app(config, settings, log_service=json_log)
    except ConfigError as exc:  # found while wiring: a model its price list does not price
        raise click.ClickException(str(exc)) from None
    if settings.redis_url:
        click.echo("budgets: shared through Redis"
                   f" (budgets_unavailable: {settings.budgets_unavailable})", err=True)
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
    GuardedHttpTools.configure(settings)  # workers started by uvicorn read the same settings
    common = dict(host=host, port=port, loop=loop, http=GuardedHttpTools, lifespan="on", access_log=False,
                  log_level="warning", timeout_graceful_shutdown=settings.shutdown_grace_s,
                  server_header=False, date_header=False, timeout_keep_alive=settings.idle_timeout_s,
                  limit_concurrency=settings.max_connections,
                  # X-Forwarded-For names the client only when it comes from a trusted proxy
                  proxy_headers=bool(settings.trusted_proxies), forwarded_allow_ips=list(settings.trusted_proxies))
    if workers > 1:
        app.engine.dispose()
        # Each worker builds its own app (`app_from_env`) from the same settings, passed down here.
        os.environ.update({"TALLYGATE_DB_URL": settings.db_url, "TALLYGATE_REDIS_URL": settings.redis_url or "",
                           "TALLYGATE_LOG_FORMAT": settings.log_format,
                           "PROMETHEUS_MULTIPROC_DIR": settings.metrics_dir or "",
                           "TALLYGATE_BUDGETS_UNAVAILABLE": settings.budgets_unavailable,
                           "TALLYGATE_CONFIG": os.path.abspath(config_path) if config_path else "",
                           "TALLYGATE_SERVE_PID": str(os.getpid())})  # workers stop when this process dies
        click.echo(f"{workers} worker processes", err=True)
        try:
            uvicorn.run("tallygate.app:app_from_env", factory=True, workers=workers, **common)  # type: ignore[arg-type]
        finally:
            release_claim()
            if own_metrics_dir and settings.metrics_dir:
                shutil.rmtree(settings.metrics_dir, ignore_errors=True)
        return
    gc.freeze()  # start-up objects never need collecting: keeps GC pauses off request latency
    try:
        uvicorn.run(app, **common)  # type: ignore[arg-type]
    finally:
        release_claim()


def _fresh_metrics_dir(path: str) -> None:
    """prometheus_client's multiprocess files from an earlier run would add to this run's counts."""
    root = Path(path)
    if root.exists():
        for f in root.glob("*.db"):
            f.unlink()
    else:
        root.mkdir(parents=True)


def _demo_key(keys: KeyStore) -> str | None:
    """On a first start with the demo config: create the demo key and return its secret."""
    if keys.all():
        return None
    admin = keys.ensure_user("admin")
    _, secret = keys.create(name="demo", labels={"team": "demo", "env": "dev"}, created_by=admin.id)
    return secret
