"""The `orchestrator` command line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from deployments.crm_cli import crm, sandbox, sync
from deployments.email_cli import mailbox
from deployments.import_cli import import_file
from deployments.key_cli import keys
from deployments.score_cli import score
from deployments.webhook_cli import webhooks
from deployments.work_pool_cli import deploy, worker
from leads.settings import Settings, get_settings
from leads.store.database import create_store_engine
from leads.store.schema import schema_state, upgrade

# Seconds an API worker process may take to answer uvicorn's health ping.
WORKER_HEALTHCHECK_S = 30

app = typer.Typer(
    help="Automation Orchestrator: lead automation as code.",
    no_args_is_help=True,
    add_completion=False,
)
db = typer.Typer(help="The lead store's schema.", no_args_is_help=True)
app.add_typer(db, name="db")
app.command("import")(import_file)
app.add_typer(score, name="score")
app.add_typer(crm, name="crm")
app.add_typer(webhooks, name="webhooks")
app.add_typer(keys, name="keys")
app.command()(sandbox)
app.command()(sync)
app.command()(mailbox)
app.command()(deploy)
app.command()(worker)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _settings() -> Settings:
    """The settings, or one line per bad variable and exit 1."""
    try:
        return get_settings()
    except ValidationError as exc:
        for error in exc.errors():
            name = "ORCH_" + "_".join(str(part) for part in error["loc"]).upper()
            typer.echo(f"error: {name}: {error['msg']}", err=True)
        raise typer.Exit(1) from None


def _ensure_port_free(host: str, port: int, remedy: str) -> None:
    from deployments.supervisor import port_in_use

    if port_in_use(host, port):
        _fail(f"port {port} on {host} is in use; {remedy}")


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Default: ORCH_API_HOST.")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Default: ORCH_API_PORT.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "info",
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, max=64, help="Processes serving. Default: ORCH_API_WORKERS."
        ),
    ] = None,
) -> None:
    """Serves the API (docs at /api/docs) until Ctrl-C."""
    from api.app import StoreNotReady, open_store

    settings = _settings()
    host = host if host is not None else settings.api_host
    remedy = (
        "pass another --port"
        if port is not None
        else "set ORCH_API_PORT to another port"
    )
    port = port if port is not None else settings.api_port
    workers = workers or settings.api_workers
    try:
        open_store(settings).dispose()
    except StoreNotReady as exc:
        _fail(str(exc))
    _ensure_port_free(host, port, remedy)
    processes = f", {workers} processes" if workers > 1 else ""
    typer.echo(
        f"API on http://{host}:{port}{processes} (docs: http://{host}:{port}/api/docs)"
    )
    # Each process builds the app from the environment's settings, as this
    # one read them. Our AccessLog replaces uvicorn's, which would log query
    # strings.
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        log_config=_log_config(log_level),
        access_log=False,
        # uvicorn kills a worker that misses a health ping for this long: its
        # default of 5 s killed workers still starting on a busy two-core
        # machine, again and again.
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
    )


def _log_config(level: str) -> dict[str, Any]:
    """Logging for every API process: one format, our loggers and uvicorn's."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(levelname)s %(name)s: %(message)s"},
        },
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "plain"},
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
    }


@app.command()
def up() -> None:
    """Starts the whole stack (Prefect, CRM sandbox, flow runner, API) until Ctrl-C."""
    from deployments.supervisor import Stack, StackError, run_stack

    settings = _settings()
    try:
        # Before anything is written: a busy port is the commonest failure.
        Stack(settings).check_ports()
        db_upgrade()
        _announce_development_key(settings)
        logging.basicConfig(
            level="INFO", format="%(asctime)s %(levelname)s %(message)s"
        )
        logging.getLogger("httpx").setLevel(logging.WARNING)
        run_stack(settings, typer.echo)
    except StackError as exc:
        # One problem a line, as each busy port is.
        for line in str(exc).splitlines():
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(1) from None


def _announce_development_key(settings: Settings) -> None:
    from deployments.key_cli import development_key, development_key_file
    from leads.store import Store

    store = Store(settings.store_url)
    try:
        made = development_key(settings, store)
    finally:
        store.dispose()
    kept = development_key_file(settings)
    if made is not None:
        typer.echo(f"API key (admin, tenant default), also kept in {kept}:")
        typer.echo(f"  {made}")
        typer.echo(f'  curl -H "Authorization: Bearer $(cat {kept})" …')
    elif settings.env == "development" and kept.exists():
        typer.echo(f"API key: in {kept}")


@app.command()
def serve() -> None:
    """Runs the flow runner: serves every deployment in prefect.yaml until stopped."""
    from deployments.prefect_env import apply_runner_defaults

    settings = _settings()
    apply_runner_defaults(settings)
    from deployments.runner import serve_all
    from leads.priority import lower_priority

    # Every flow run this starts is a child: the whole background yields to the API.
    lower_priority(settings.background_niceness)

    # Prefect configures logging when imported; our own lines need a handler.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for name in ("deployments", "flows", "tasks"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)

    serve_all(limit=settings.flow_runner_limit)


@db.command("upgrade")
def db_upgrade() -> None:
    """Applies every migration the lead store has not had yet."""
    settings = _settings()
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
    settings = _settings()
    where = make_url(settings.store_url).render_as_string(hide_password=True)
    sqlite_file = make_url(settings.store_url).database
    if settings.store_url.startswith("sqlite") and not Path(sqlite_file or "").exists():
        typer.echo(f"{where}: no store yet; `orchestrator db upgrade` creates it")
        raise typer.Exit(1)
    engine = create_store_engine(settings.store_url)
    try:
        state = schema_state(engine)
    finally:
        engine.dispose()
    if not state.reachable:
        typer.echo(f"{where}: unreachable ({state.error})")
    else:
        typer.echo(
            f"{where}: {state.label} (at {state.revision or 'no revision'}, "
            f"code needs {state.head})"
        )
    if not state.current:
        raise typer.Exit(1)
