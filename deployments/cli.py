"""The `orchestrator` command line."""

from __future__ import annotations

import errno
import logging
import socket
from typing import Annotated

import typer
import uvicorn
from sqlalchemy.engine import make_url

from leads.settings import get_settings
from leads.store.database import create_store_engine
from leads.store.schema import schema_state, upgrade

app = typer.Typer(
    help="Automation Orchestrator: lead automation as code.",
    no_args_is_help=True,
    add_completion=False,
)
db = typer.Typer(help="The lead store's schema.", no_args_is_help=True)
app.add_typer(db, name="db")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _ensure_port_free(host: str, port: int, setting: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                _fail(f"port {port} on {host} is in use; set {setting} to another port")
            _fail(f"cannot listen on {host}:{port}: {exc.strerror}")


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Default: ORCH_API_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Default: ORCH_API_PORT.")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "info",
) -> None:
    """Serves the API (docs at /api/docs) until Ctrl-C."""
    from api.app import StoreNotReady, create_app, open_store

    settings = get_settings()
    host = host or settings.api_host
    port = port or settings.api_port
    try:
        open_store(settings).dispose()
    except StoreNotReady as exc:
        _fail(str(exc))
    _ensure_port_free(host, port, "ORCH_API_PORT")
    logging.basicConfig(
        level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    typer.echo(f"API on http://{host}:{port} (docs: http://{host}:{port}/api/docs)")
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)


@db.command("upgrade")
def db_upgrade() -> None:
    """Applies every migration the lead store has not had yet."""
    settings = get_settings()
    engine = create_store_engine(settings.store_url)
    where = make_url(settings.store_url).render_as_string(hide_password=True)
    try:
        before = schema_state(engine)
        if not before.reachable:
            _fail(f"the lead store at {where} cannot be reached ({before.error})")
        upgrade(engine)
        after = schema_state(engine)
    finally:
        engine.dispose()
    if before.revision == after.revision:
        typer.echo(f"lead store at {where} already at {after.revision}")
    else:
        typer.echo(
            f"lead store at {where} upgraded from {before.revision or 'empty'} "
            f"to {after.revision}"
        )


@db.command("status")
def db_status() -> None:
    """Says which migration the lead store is at; exits 1 when it is behind."""
    settings = get_settings()
    engine = create_store_engine(settings.store_url)
    where = make_url(settings.store_url).render_as_string(hide_password=True)
    try:
        state = schema_state(engine)
    finally:
        engine.dispose()
    typer.echo(f"{where}: {state.label} (at {state.revision}, head {state.head})")
    if not state.current:
        raise typer.Exit(1)
