"""The `orchestrator` command as a user runs it, in real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from leads.store.schema import head_revision

ORCHESTRATOR = str(Path(sys.executable).with_name("orchestrator"))


def run(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ORCHESTRATOR, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    return clean | {"ORCH_DATA_DIR": str(tmp_path / "data")}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_db_upgrade_creates_the_sqlite_store_in_the_data_dir(env, tmp_path):
    first = run("db", "upgrade", env=env)
    second = run("db", "upgrade", env=env)
    status = run("db", "status", env=env)

    assert first.returncode == 0, first.stderr
    assert f"upgraded from empty to {head_revision()}" in first.stdout
    assert (tmp_path / "data" / "orchestrator.db").exists()
    assert f"already at {head_revision()}" in second.stdout
    assert status.returncode == 0 and ": ok" in status.stdout


def test_db_upgrade_on_postgresql(env, new_store_url, postgres_server):
    env["ORCH_DATABASE_URL"] = new_store_url("postgresql")

    result = run("db", "upgrade", env=env)

    assert result.returncode == 0, result.stderr
    assert "postgresql+psycopg" in result.stdout


def test_db_status_before_upgrade_says_so_and_creates_nothing(env, tmp_path):
    result = run("db", "status", env=env)

    assert result.returncode == 1
    assert "no store yet" in result.stdout
    assert not (tmp_path / "data").exists()


def test_a_bad_setting_is_one_line_naming_the_variable(env):
    result = run("db", "status", env=env | {"ORCH_API_PORT": "abc"})

    assert result.returncode == 1
    assert result.stderr.startswith("error: ORCH_API_PORT:")
    assert result.stderr.strip().count("\n") == 0


def test_api_refuses_an_unmigrated_store_in_one_line(env):
    result = run("api", "--port", str(free_port()), env=env)

    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "run `orchestrator db upgrade`" in result.stderr


def test_api_names_the_port_in_use_and_the_setting(env):
    run("db", "upgrade", env=env)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        by_setting = run("api", env=env | {"ORCH_API_PORT": str(port)})
        by_option = run("api", "--port", str(port), env=env)

    assert by_setting.returncode == by_option.returncode == 1
    assert f"port {port}" in by_setting.stderr
    assert "set ORCH_API_PORT to another port" in by_setting.stderr
    assert "pass another --port" in by_option.stderr


def test_unreachable_database_is_a_clear_error(env):
    env["ORCH_DATABASE_URL"] = (
        "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2"
    )

    result = run("db", "upgrade", env=env)

    assert result.returncode == 1
    assert "cannot be reached" in result.stderr
    assert "connection" in result.stderr.lower(), "the driver's reason is shown"
    assert "Traceback" not in result.stderr


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (
                entry.name.isdigit()
                and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                == pid
            ):
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_api_serves_leads_until_terminated(env, tmp_path, workers):
    run("db", "upgrade", env=env)
    key = run("keys", "create", "--tenant", "default", "--scope", "write", env=env)
    headers = {"Authorization": f"Bearer {key.stdout.strip()}"}
    port = free_port()
    env["ORCH_API_PORT"] = str(port)
    env["ORCH_API_WORKERS"] = str(workers)
    log = tmp_path / "api.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [ORCHESTRATOR, "api"], env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the API did not come up"
            assert server.poll() is None, log.read_text()
            time.sleep(0.2)

        if workers > 1:
            # uvicorn's manager, and under it a process per worker (besides
            # multiprocessing's own resource tracker).
            deadline = time.monotonic() + 30
            while len(serving := children_of(server.pid)) < workers:
                assert time.monotonic() < deadline, serving
                time.sleep(0.2)
        for n in range(4):
            lead = {"email": f"cli{n}@example.com"}
            created = httpx.post(f"{base}/api/leads", json=lead, headers=headers)
            assert created.status_code == 201
            found = httpx.get(f"{base}{created.headers['location']}", headers=headers)
            assert found.status_code == 200
        serving = children_of(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=15)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in serving):
        assert time.monotonic() < deadline, "a worker outlived the API"
        time.sleep(0.1)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status
    # tells the supervisor why it stopped.
    assert server.returncode in (0, -15)
    assert log.read_text().count("Application shutdown complete") == workers
