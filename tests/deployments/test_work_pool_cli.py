"""What `orchestrator deploy` and `orchestrator worker` give Prefect."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import PrefectClient
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.prefect_env import HEARTBEAT_SECONDS
from deployments.work_pool_cli import (
    ensure_work_pool,
    worker_command,
    worker_environment,
)
from leads.settings import Settings


def test_a_worker_talks_to_the_products_server_and_polls_like_the_flow_runner(
    tmp_path: Path,
):
    settings = Settings(
        data_dir=tmp_path,
        prefect_api_url="http://10.0.0.5:4200/api",
        flow_runner_poll_seconds=3,
    )

    environment = worker_environment(settings)

    assert environment["PREFECT_API_URL"] == "http://10.0.0.5:4200/api"
    assert environment["PREFECT_WORKER_QUERY_SECONDS"] == "3"
    assert environment["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(HEARTBEAT_SECONDS)
    assert environment["DO_NOT_TRACK"] == "1"


def test_a_worker_takes_at_most_the_limit_of_runs_from_the_process_pool():
    command = worker_command("prefect", "orchestrator", 4)

    assert command[:3] == ["prefect", "worker", "start"]
    assert command[command.index("--pool") + 1] == "orchestrator"
    assert command[command.index("--type") + 1] == "process"
    assert command[command.index("--limit") + 1] == "4"
    assert "--with-healthcheck" not in command


def test_a_health_port_serves_prefects_worker_health_check_on_loopback(
    tmp_path: Path,
):
    settings = Settings(data_dir=tmp_path, worker_health_port=8181)

    environment = worker_environment(settings)
    command = worker_command("prefect", "orchestrator", 4, health=True)

    assert command[-1] == "--with-healthcheck"
    assert environment["PREFECT_WORKER_WEBSERVER_HOST"] == "127.0.0.1"
    assert environment["PREFECT_WORKER_WEBSERVER_PORT"] == "8181"


def test_without_a_health_port_the_worker_serves_nothing(tmp_path: Path):
    environment = worker_environment(Settings(data_dir=tmp_path))

    assert "PREFECT_WORKER_WEBSERVER_PORT" not in environment


@pytest.mark.slow
def test_the_pool_is_created_once_with_the_process_workers_template(prefect_server):
    name = f"orchestrator-test-{uuid.uuid4().hex[:8]}"

    async def twice() -> tuple[bool, bool]:
        return await ensure_work_pool(name), await ensure_work_pool(name)

    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        first, second = asyncio.run(twice())

    async def read():
        async with PrefectClient(api=prefect_server.api_url) as client:
            pool = await client.read_work_pool(name)
            await client.delete_work_pool(name)
            return pool

    pool = asyncio.run(read())
    assert (first, second) == (True, False)
    assert pool.type == "process"
    # Deployments' job variables (the heartbeat's env) fill this template.
    assert "env" in pool.base_job_template["variables"]["properties"]
