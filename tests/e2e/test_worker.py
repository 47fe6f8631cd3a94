"""The scaled way: `prefect deploy --all` to a process work pool, and a real worker.

The module runs its own Prefect server: `prefect deploy --all` registers the
same deployment names `orchestrator up` serves, so on the session's server it
would take over deployments other tests serve. The worker is started from a
directory that is not the checkout, as on another machine, and gets the
product's settings (ORCH_*) only through its environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.responses import DeploymentResponse
from sqlalchemy import select

from deployments.definitions import (
    PROJECT_ROOT,
    load_definitions,
    to_runner_deployment,
    work_pool_name,
)
from deployments.prefect_env import HEARTBEAT_SECONDS, RUN_TAG
from leads.intake import submit
from leads.store import Store
from leads.store.schema import upgrade
from leads.store.tables import SequenceStep, TimelineEvent
from tests.conftest import PrefectServer, free_port

pytestmark = pytest.mark.slow

PREFECT = str(Path(sys.executable).with_name("prefect"))
DEFINITIONS = load_definitions()
POOL = work_pool_name(DEFINITIONS)
FINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group, SIGKILL after 20 s; its children go too."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)
    # Flow-run processes a worker started share its group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def crons(schedules: list[Any]) -> list[tuple[str, str | None, bool]]:
    return [(s.schedule.cron, s.schedule.timezone, s.active) for s in schedules]


def outside_environment() -> dict[str, str]:
    """This process's environment without any Prefect or product setting."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ORCH_", "PREFECT_"))
    }


@dataclass
class Server:
    api_url: str
    home: Path

    def client_environment(self, home: Path) -> dict[str, str]:
        return outside_environment() | {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }

    def call(self, request: Callable[[PrefectClient], Any]) -> Any:
        async def run() -> Any:
            async with PrefectClient(api=self.api_url) as client:
                return await request(client)

        return asyncio.run(run())


@pytest.fixture(scope="module")
def server(new_prefect_server: Callable[[], PrefectServer]) -> Iterator[Server]:
    """A Prefect server of this module's own (on PostgreSQL + Redis if scaled).

    Not the session's: `prefect deploy --all` would take over the deployments
    other tests serve there.
    """
    running = new_prefect_server()
    running.start()
    try:
        yield Server(running.api_url, running.home)
    finally:
        running.stop()


@pytest.fixture(scope="module")
def deployed(server: Server, tmp_path_factory) -> dict[str, DeploymentResponse]:
    """The README's commands: create the pool, then `prefect deploy --all`."""
    environment = server.client_environment(tmp_path_factory.mktemp("deployer"))
    created = subprocess.run(
        [PREFECT, "work-pool", "create", POOL, "--type", "process"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    deploy = subprocess.run(
        [PREFECT, "--no-prompt", "deploy", "--all"],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
        check=False,
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr

    async def read(client: PrefectClient) -> list[DeploymentResponse]:
        return await client.read_deployments()

    return {d.name: d for d in server.call(read)}


def test_deploy_all_registers_every_deployment_as_served_but_on_the_pool(
    deployed, server
):
    assert set(deployed) == {d.name for d in DEFINITIONS}

    async def automations(client: PrefectClient) -> dict[str, Any]:
        return {a.name: a for a in await client.read_automations()}

    triggers = server.call(automations)
    for definition in DEFINITIONS:
        on_pool = deployed[definition.name]
        served = to_runner_deployment(definition)

        assert on_pool.work_pool_name == POOL
        assert sorted(on_pool.tags) == sorted(served.tags) and RUN_TAG in on_pool.tags
        assert on_pool.parameters == served.parameters
        assert on_pool.description == served.description
        assert crons(on_pool.schedules) == crons(served.schedules)
        limit = on_pool.global_concurrency_limit
        assert limit is not None and limit.limit == served.concurrency_limit
        assert on_pool.concurrency_options == served.concurrency_options
        mine = [t for name, t in triggers.items() if name.startswith(definition.name)]
        assert [(t.trigger.match, t.trigger.expect) for t in mine] == [
            (t.match, t.expect) for t in served.triggers
        ]
        # Runs change to the checkout, named when deploying, not in the file.
        [step] = on_pool.pull_steps
        directory = step["prefect.deployments.steps.set_working_directory"]
        assert Path(directory["directory"]) == PROJECT_ROOT
        env = on_pool.job_variables["env"]
        assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(HEARTBEAT_SECONDS)


def test_a_worker_started_elsewhere_runs_the_drain_from_its_environment(
    deployed, server, tmp_path, new_store_url
):
    store_url = new_store_url()
    store = Store(store_url)
    upgrade(store.engine)
    lead = submit(
        store,
        "default",
        {"email": "grace@example.com", "first_name": "Grace"},
        channel="api",
        region="US",
    ).lead
    dispatcher = deployed["sequence_dispatcher"]
    # Only the run created below may drain: the every-minute schedule's runs
    # would take the lead, or have it cancelled (one at a time, CANCEL_NEW).
    for schedule in dispatcher.schedules:
        server.call(
            lambda client, s=schedule: client.update_deployment_schedule(
                dispatcher.id, s.id, active=False
            )
        )
    anywhere = tmp_path / "elsewhere"
    anywhere.mkdir()
    environment = server.client_environment(tmp_path / "worker-home") | {
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "ORCH_DATA_DIR": str(tmp_path / "data"),
        "ORCH_DATABASE_URL": store_url,
        "ORCH_CRM": "none",
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("ab") as log:
        worker = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", POOL, "--limit", "2"],
            cwd=anywhere,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        run = server.call(
            lambda client: client.create_flow_run_from_deployment(
                dispatcher.id, parameters={"idle_grace_seconds": 0}
            )
        )

        def final() -> Any:
            assert worker.poll() is None, log_path.read_text()[-3000:]
            current = server.call(lambda client: client.read_flow_run(run.id))
            return current if current.state_type in FINAL else None

        finished = wait_for(final, 180, "the drain run to finish on the worker")
        assert finished.state_type == StateType.COMPLETED, log_path.read_text()[-3000:]
    finally:
        stop(worker)

    with store.read("default") as scope:
        sent = scope.session.scalars(
            select(SequenceStep.flow_run_id).where(
                SequenceStep.lead_id == lead.id, SequenceStep.status == "sent"
            )
        ).all()
        events = scope.session.scalars(
            select(TimelineEvent.flow_run_id).where(
                TimelineEvent.lead_id == lead.id, TimelineEvent.kind == "email.sent"
            )
        ).all()
    store.dispose()
    assert [UUID(run_id) for run_id in sent] == [run.id], "one step, by this run"
    assert [UUID(run_id) for run_id in events] == [run.id]
    written = list((tmp_path / "data" / "outbox").glob("*.eml"))
    assert len(written) == 1, "the worker's ORCH_DATA_DIR got the e-mail"
    message = email.message_from_bytes(written[0].read_bytes())
    assert message["To"] == "grace@example.com"


def test_orchestrator_deploy_and_worker_do_the_same_with_the_products_settings(
    deployed, server, tmp_path
):
    orchestrator = str(Path(sys.executable).with_name("orchestrator"))
    health_port = free_port()
    environment = outside_environment() | {
        "ORCH_DATA_DIR": str(tmp_path / "data"),
        "ORCH_PREFECT_API_URL": server.api_url,
        "ORCH_WORKER_HEALTH_PORT": str(health_port),
    }

    again = subprocess.run(
        [orchestrator, "deploy"],
        env=environment,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
        check=False,
    )

    assert again.returncode == 0, again.stdout + again.stderr
    assert f"work pool {POOL!r} already there" in again.stdout

    async def read(client: PrefectClient) -> tuple[list[Any], list[str]]:
        automations = await client.read_automations()
        return await client.read_deployments(), [a.name for a in automations]

    redeployed, automations = server.call(read)
    assert {d.id for d in redeployed} == {d.id for d in deployed.values()}
    assert {
        "orchestrator: crash runs that stopped heartbeating",
        "orchestrator: crash runs stuck in pending",
    } <= set(automations)

    log_path = tmp_path / "worker.log"
    started = datetime.now(UTC)
    with log_path.open("ab") as log:
        worker = subprocess.Popen(
            [orchestrator, "worker", "--limit", "3"],
            cwd=tmp_path,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:

        def online() -> list[Any]:
            assert worker.poll() is None, log_path.read_text()[-3000:]
            workers = server.call(
                lambda client: client.read_workers_for_work_pool(POOL)
            )
            # Not the earlier test's worker, which may still count as online.
            return [w for w in workers if w.last_heartbeat_time > started]

        wait_for(online, 60, "`orchestrator worker` to poll the pool")
        # What compose.yaml's health check asks.
        health = httpx.get(f"http://127.0.0.1:{health_port}/health", timeout=5)
        assert health.status_code == 200, health.text
    finally:
        stop(worker)
    assert f"worker for pool {POOL!r} on {server.api_url}" in log_path.read_text()
