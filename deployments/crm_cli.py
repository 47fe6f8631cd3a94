"""The CRM from a shell: the `sandbox`, `crm check`, `crm test` and `sync` commands."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer

from deployments.key_cli import api_client, not_answering, refused_key
from leads.settings import Settings

# How often `sync` asks how its run is doing, and for how long.
POLL_SECONDS = 1.0
RUN_DEADLINE_SECONDS = 600
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

crm = typer.Typer(no_args_is_help=True)


@crm.callback()
def crm_group() -> None:
    """The CRM account leads are synced to: check its mapping, test the connection."""


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _account(settings: Settings, tenant: str) -> Any:
    from connectors.crm.errors import CrmError
    from connectors.crm.saved_accounts import resolve
    from leads.store import Store

    store = Store(settings.store_url)
    try:
        account = resolve(store, tenant, settings)
    except CrmError as exc:
        _fail(str(exc))
    finally:
        store.dispose()
    if account is None:
        _fail("no CRM is configured: ORCH_CRM is `none` and none was saved via the API")
    return account


@crm.command()
def check(
    mapping: Annotated[
        str | None,
        typer.Option(
            help="A mapping file to check instead of the configured one "
            "(config/crm/<crm>.yaml)."
        ),
    ] = None,
    tenant: Annotated[str, typer.Option(help="Whose CRM account.")] = "default",
) -> None:
    """Checks the field mapping against the live CRM's fields; says what is wrong."""
    from dataclasses import replace

    from connectors.crm.budget import Unlimited
    from connectors.crm.errors import CrmError
    from connectors.crm.mapping import check_mapping, load_mapping
    from deployments.cli import _settings

    account = _account(_settings(), tenant)
    if mapping is not None:
        try:
            account = replace(account, mapping=load_mapping(mapping))
        except CrmError as exc:
            _fail(str(exc))
    connector = account.connect(Unlimited())
    try:
        fields = connector.list_fields()
    except CrmError as exc:
        _fail(f"cannot read the CRM's fields: {exc.code}: {exc}")
    finally:
        connector.close()
    problems = check_mapping(account.mapping, fields, key_field=connector.key_field)
    for problem in problems:
        typer.echo(f"{problem.field}: {problem.message} [{problem.code}]")
    if problems:
        _fail(f"{len(problems)} problems in the {account.provider} mapping")
    typer.echo(
        f"the {account.provider} mapping fits: {len(account.mapping.fields)} fields "
        f"checked against {len(fields)} in the CRM"
    )


@crm.command("test")
def test_connection(
    tenant: Annotated[str, typer.Option(help="Whose CRM account.")] = "default",
) -> None:
    """Logs in to the CRM and makes one cheap call."""
    from connectors.crm.budget import Unlimited
    from connectors.crm.errors import CrmError
    from deployments.cli import _settings

    account = _account(_settings(), tenant)
    connector = account.connect(Unlimited())
    try:
        info = connector.test_connection()
    except CrmError as exc:
        _fail(f"could not connect to {account.provider}: {exc.code}: {exc}")
    finally:
        connector.close()
    typer.echo(f"connected to {info.provider} ({account.origin}): {info.account}")


def sandbox(
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Default: ORCH_SANDBOX_PORT."),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            dir_okay=False,
            help="JSON file the records are loaded from and saved to. "
            "Default: <ORCH_DATA_DIR>/sandbox.json.",
        ),
    ] = None,
    memory: Annotated[
        bool,
        typer.Option(
            "--memory", help="Keep the records in memory only; read and write no file."
        ),
    ] = False,
) -> None:
    """Serves the CRM sandbox (HubSpot- and Salesforce-compatible) until Ctrl-C."""
    from connectors.sandbox.server import serve
    from deployments.cli import _ensure_port_free, _settings

    if memory and state is not None:
        _fail("--memory keeps no file: pass --state or --memory, not both")
    settings = _settings()
    remedy = (
        "pass another --port"
        if port is not None
        else "set ORCH_SANDBOX_PORT to another port"
    )
    port = port or settings.sandbox_port
    _ensure_port_free("127.0.0.1", port, remedy)
    state_file = None if memory else (state or settings.sandbox_state_file).resolve()

    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    kept = "in memory only" if state_file is None else f"kept in {state_file}"
    typer.echo(f"CRM sandbox on http://127.0.0.1:{port} (records at /, {kept})")
    serve("127.0.0.1", port, state_file)


def sync(
    retry: Annotated[
        bool, typer.Option(help="Put parked leads back in the queue first.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            help="Show, per waiting lead, the CRM's values and what would change; "
            "write nothing."
        ),
    ] = False,
    limit: Annotated[
        int, typer.Option(min=1, max=500, help="Leads shown by --dry-run.")
    ] = 50,
    local: Annotated[
        bool,
        typer.Option(
            help="Sync in this process, without the API and Prefect (not a flow run)."
        ),
    ] = False,
    tenant: Annotated[
        str,
        typer.Option(
            help="Whose leads --dry-run shows and --local --retry requeues; a sync "
            "writes every tenant's waiting leads."
        ),
    ] = "default",
) -> None:
    """Syncs waiting leads to the CRM now: through the running stack, or --local."""
    from deployments.cli import _settings

    settings = _settings()
    if dry_run:
        _preview(settings, tenant, limit)
    elif local:
        _sync_here(settings, tenant, retry)
    else:
        _sync_through_api(settings, retry)


def _preview(settings: Settings, tenant: str, limit: int) -> None:
    from connectors.crm.budget import Unlimited
    from connectors.crm.errors import CrmError
    from connectors.crm.preview import preview_waiting
    from leads.store import Store

    account = _account(settings, tenant)
    store = Store(settings.store_url)
    connector = account.connect(Unlimited())
    try:
        items = preview_waiting(
            store,
            tenant,
            account,
            connector,
            default_zone=settings.default_timezone,
            limit=limit,
        )
    except CrmError as exc:
        _fail(f"{exc.code}: {exc}")
    finally:
        connector.close()
        store.dispose()
    if not items:
        typer.echo("no lead is waiting for the CRM")
    for item in items:
        where = f" {item.crm_id}" if item.crm_id else ""
        typer.echo(f"lead {item.lead_id}: {item.action}{where}")
        if item.reason:
            typer.echo(f"    reason: {item.reason}")
        for change in item.changes:
            typer.echo(f"    {change.field}: {change.current!r} → {change.new!r}")
        for warning in item.warnings:
            typer.echo(f"    warning: {warning}")


def _sync_here(settings: Settings, tenant: str, retry: bool) -> None:
    from connectors.crm.sync import CrmSync, retry_parked
    from leads.store import Store
    from leads.store.outbox import CRM_SYNC
    from tasks.drain import DrainLimits, drain

    # Without a CRM every lead would only be put back for later: say so now.
    _account(settings, tenant)
    store = Store(settings.store_url)
    sync = CrmSync(store, settings, flow_run_id=None)
    try:
        if retry:
            typer.echo(f"requeued {retry_parked(store, tenant)} parked leads")
        sync.follow_accounts()
        totals = drain(
            store,
            CRM_SYNC,
            owner=f"cli-{time.time_ns()}",
            handle=sync.handle,
            limits=DrainLimits(batch_size=200, idle_grace_seconds=0),
        )
    finally:
        sync.close()
        store.dispose()
    typer.echo(
        ", ".join(f"{name}: {count}" for name, count in sorted(totals.items()))
        or "nothing was waiting"
    )


def _sync_through_api(settings: Settings, retry: bool) -> None:
    with api_client(settings) as client:
        try:
            if retry:
                answer = client.post("/api/crm/retry", json={})
            else:
                answer = client.post("/api/crm/sync")
        except httpx.TransportError:
            _fail(not_answering(settings, "sync"))
        if answer.status_code != 202:
            _fail(
                refused_key(answer)
                or f"the API answered {answer.status_code}: {answer.text[:300]}"
            )
        started = answer.json()
        if retry:
            typer.echo(f"requeued {started['requeued']} parked leads")
        typer.echo(f"sync run {started['run_id']}: {started['ui_url']}")
        state = _await_run(client, started["status_url"])
        status = client.get("/api/crm/status").json()
    if state == "CANCELLED":
        # crm_sync runs one at a time: a run asked for while another drains is
        # cancelled, and the running one takes the waiting leads too.
        typer.echo("a sync run was already draining the queue; it takes these leads")
    else:
        typer.echo(f"run {state.lower()}")
    typer.echo(
        f"leads now: synced {status['synced']}, queued {status['pending']} "
        f"(of which retrying {status['retrying']}, parked {status['parked']})"
    )
    if state not in ("COMPLETED", "CANCELLED"):
        raise typer.Exit(1)


def _await_run(client: httpx.Client, status_url: str) -> str:
    """The run's final state; fails with one line when it cannot be told in time."""
    deadline = time.monotonic() + RUN_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        try:
            answer = client.get(status_url)
        except httpx.TransportError:
            _fail("the API stopped answering while the sync ran")
        if answer.status_code != 200:
            _fail(f"the API answered {answer.status_code}: {answer.text[:300]}")
        state = answer.json().get("state")
        if state in TERMINAL:
            return state
    _fail(
        f"the sync run has not finished after {RUN_DEADLINE_SECONDS} s; it goes on "
        f"in the stack: follow it at {status_url}"
    )
