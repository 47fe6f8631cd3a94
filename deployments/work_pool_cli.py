"""`orchestrator deploy` and `orchestrator worker`: the deployments on a work pool.

The scaled way to run the flows `orchestrator up` serves from one process:
`deploy` registers every deployment on a process work pool once, and `worker`
runs them on any number of machines. Both are thin wrappers of the plain
Prefect commands (`prefect deploy --all`, `prefect worker start`) with the
product's Prefect environment applied.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import httpx
import typer

from deployments.definitions import (
    PROJECT_ROOT,
    DefinitionError,
    load_definitions,
    work_pool_name,
)
from deployments.prefect_env import prefect_environment
from leads.priority import lower_priority
from leads.settings import Settings

WORKER_TYPE = "process"


def worker_environment(settings: Settings) -> dict[str, str]:
    """Prefect's environment for `prefect deploy` and `prefect worker start`.

    The stack's, plus the worker's poll interval: a worker asks for due runs as
    often as `orchestrator up`'s flow runner does (ORCH_FLOW_RUNNER_POLL_SECONDS).
    """
    environment = prefect_environment(settings) | {
        "PREFECT_WORKER_QUERY_SECONDS": str(settings.flow_runner_poll_seconds),
    }
    if settings.worker_health_port is not None:
        # Prefect's own default is every address, port 8080.
        environment |= {
            "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1",
            "PREFECT_WORKER_WEBSERVER_PORT": str(settings.worker_health_port),
        }
    return environment


def worker_command(
    prefect: str, pool: str, limit: int, *, health: bool = False
) -> list[str]:
    """The `prefect worker start` command line `orchestrator worker` runs.

    With `health`, Prefect's health server too (where: `worker_environment`).
    """
    command = [
        prefect,
        "worker",
        "start",
        "--pool",
        pool,
        "--type",
        WORKER_TYPE,
        # Prefect's default is unlimited; a burst would start a process per run.
        "--limit",
        str(limit),
    ]
    return [*command, "--with-healthcheck"] if health else command


async def ensure_work_pool(name: str) -> bool:
    """Creates the process work pool unless it exists; True when it was created.

    An existing pool is left as it is, with any limit an operator gave it.

    Raises:
        TimeoutError: the Prefect server did not finish within
            `automations.SETUP_SECONDS`.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    from deployments.automations import SETUP_SECONDS

    async with asyncio.timeout(SETUP_SECONDS), get_client() as client:
        try:
            await client.read_work_pool(name)
        except ObjectNotFound:
            await client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type=WORKER_TYPE,
                    # Without the worker type's template, the deployments'
                    # job variables (the heartbeat's env) would not apply.
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                )
            )
            return True
    return False


def _prefect_executable() -> str:
    return str(Path(sys.executable).with_name("prefect"))


def _settings_and_pool() -> tuple[Settings, str]:
    """The settings and prefect.yaml's work pool, or an error line and exit 1."""
    from deployments.cli import _fail, _settings

    settings = _settings()
    try:
        pool = work_pool_name(load_definitions())
    except DefinitionError as exc:
        _fail(str(exc))
    settings.prefect_home.mkdir(parents=True, exist_ok=True)
    return settings, pool


def deploy() -> None:
    """Registers every deployment in prefect.yaml on the work pool, for workers."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments import automations
    from deployments.cli import _fail

    settings, pool = _settings_and_pool()

    async def prepare() -> tuple[bool, list[str]]:
        created = await ensure_work_pool(pool)
        return created, await automations.install()

    try:
        with temporary_settings(updates={PREFECT_API_URL: settings.prefect_url}):
            created, installed = asyncio.run(prepare())
    except httpx.TransportError as exc:
        _fail(f"the Prefect server at {settings.prefect_url} cannot be reached: {exc}")
    except TimeoutError:
        _fail(
            f"the Prefect server at {settings.prefect_url} did not answer within "
            f"{automations.SETUP_SECONDS:g} s"
        )
    typer.echo(f"work pool {pool!r} {'created' if created else 'already there'}")
    typer.echo(f"automations installed: {', '.join(installed)}")

    # From the project root: prefect.yaml's entrypoints and its build step (the
    # directory workers run the flows from) are taken from there.
    deployed = subprocess.run(
        [_prefect_executable(), "--no-prompt", "deploy", "--all"],
        cwd=PROJECT_ROOT,
        env=os.environ | worker_environment(settings),
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if deployed.returncode != 0:
        _fail(f"prefect deploy --all exited with {deployed.returncode}")
    typer.echo(
        f"deployed; start workers with `orchestrator worker` (pool {pool!r}, "
        f"server {settings.prefect_url})"
    )


def worker(
    limit: Annotated[
        int | None,
        typer.Option(
            min=1, max=64, help="Most runs at once. Default: ORCH_FLOW_RUNNER_LIMIT."
        ),
    ] = None,
) -> None:
    """Runs flow runs from the work pool on this machine until stopped."""
    settings, pool = _settings_and_pool()
    environment = os.environ | worker_environment(settings)
    health = settings.worker_health_port
    command = worker_command(
        _prefect_executable(),
        pool,
        limit or settings.flow_runner_limit,
        health=health is not None,
    )
    typer.echo(f"worker for pool {pool!r} on {settings.prefect_url}")
    if health is not None:
        typer.echo(f"health check: http://127.0.0.1:{health}/health")
    # Kept across exec, and by every flow run the worker starts.
    lower_priority(settings.background_niceness)
    sys.stdout.flush()  # exec drops what is still buffered
    # The worker's environment, ORCH_* included, is every flow run's.
    os.execve(command[0], command, environment)
