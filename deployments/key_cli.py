"""API keys from a shell: create, list and revoke; the development key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import httpx
import typer

from leads.settings import DEFAULT_TENANT, Settings
from leads.store import Store

keys = typer.Typer(
    help="API keys: each acts for one tenant with one scope (read, write, admin).",
    no_args_is_help=True,
)

DEVELOPMENT_KEY_FILE = "api-key"


def _store() -> Store:
    from deployments.cli import _settings
    from leads.store.schema import schema_state

    settings = _settings()
    store = Store(settings.store_url)
    state = schema_state(store.engine)
    if not state.current:
        store.dispose()
        typer.echo(
            "error: the lead store is not ready "
            f"({state.error or 'revision ' + str(state.revision)}): "
            "run `orchestrator db upgrade`",
            err=True,
        )
        raise typer.Exit(1)
    return store


@keys.command("create")
def create(
    tenant: Annotated[
        str, typer.Option(help="The tenant the key acts for; new names need no set-up.")
    ],
    scope: Annotated[
        str, typer.Option(help="read: GET only; write: also changes; admin: also keys.")
    ],
    name: Annotated[str, typer.Option(help="What the key is for.")] = "",
) -> None:
    """Creates a key and prints it once; only its digest is kept."""
    from leads.store.api_keys import KeyRefused, create_key

    store = _store()
    try:
        issued = create_key(store, tenant, scope, name)
    except KeyRefused as exc:
        typer.echo(f"error: --{exc.field}: {exc.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        store.dispose()
    typer.echo(issued.secret)
    typer.echo(
        f"key {issued.info.id}: tenant {issued.info.tenant_id}, scope "
        f"{issued.info.scope}. Shown once: store it now.",
        err=True,
    )


@keys.command("list")
def list_all(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
) -> None:
    """Lists keys (never their secrets), oldest first."""
    from leads.store.api_keys import list_keys

    store = _store()
    try:
        found = list_keys(store, tenant)
    finally:
        store.dispose()
    if not found:
        typer.echo("no keys")
        return
    for info in found:
        state = "active"
        if info.revoked_at is not None:
            state = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}Z"
        typer.echo(
            f"{info.id}  {info.tenant_id:<16} {info.scope:<6} {state:<24} "
            f"{info.created_at:%Y-%m-%d}  {info.name}"
        )


@keys.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id from `list`.")],
) -> None:
    """Revokes a key; the API refuses it within seconds."""
    from api.auth import CACHE_SECONDS
    from leads.store.api_keys import revoke_key

    store = _store()
    try:
        info = revoke_key(store, key_id)
    finally:
        store.dispose()
    if info is None:
        typer.echo(f"error: no key {key_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"key {info.id} (tenant {info.tenant_id}) revoked; running APIs refuse it "
        f"within {CACHE_SECONDS:.0f} s"
    )


def development_key(settings: Settings, store: Store) -> str | None:
    """In development, the first start's admin key for the default tenant.

    Made only when no key was ever issued, and written to `<data dir>/api-key`
    (readable by its owner only) so it can be found again. Production makes
    none: its first key comes from `orchestrator keys create`.

    Returns:
        The key when this call made it, else None.
    """
    from leads.store.api_keys import any_keys, create_key

    if settings.env != "development" or any_keys(store):
        return None
    issued = create_key(
        store, DEFAULT_TENANT, "admin", "development key made by orchestrator up"
    )
    path = development_key_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole beside it, then renamed: the file is never seen empty.
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(issued.secret + "\n")
    os.replace(partial, path)
    return issued.secret


def api_client(settings: Settings, timeout: float = 60) -> httpx.Client:
    """A client of the stack's API sending `ORCH_API_KEY`, else the development key."""
    headers = {}
    if settings.api_key is not None:
        headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
    elif development_key_file(settings).exists():
        key = development_key_file(settings).read_text().strip()
        headers["Authorization"] = f"Bearer {key}"
    return httpx.Client(
        base_url=f"http://{settings.api_host}:{settings.api_port}",
        timeout=timeout,
        headers=headers,
    )


def not_answering(settings: Settings, doing: str) -> str:
    """What to do when the stack's API did not answer a command that `doing`s."""
    return (
        f"the API at http://{settings.api_host}:{settings.api_port} is not "
        "answering; start the stack with `make run` (one started on other ports "
        "is reached with the same ORCH_API_HOST and ORCH_API_PORT), or pass "
        f"--local to {doing} in this process"
    )


def refused_key(answer: httpx.Response) -> str | None:
    """What to do when the API refused the command's key, else None."""
    if answer.status_code not in (401, 403):
        return None
    return (
        f"the API refused the key ({answer.status_code}): set ORCH_API_KEY to a "
        "key of scope write (`orchestrator keys create --tenant default --scope "
        "write`)"
    )


def development_key_file(settings: Settings) -> Path:
    """Where `orchestrator up` keeps the development key it made."""
    return settings.data_dir.resolve() / DEVELOPMENT_KEY_FILE
