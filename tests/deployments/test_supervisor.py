"""The supervisor with real child processes: restarts, clean stops, busy ports."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from connectors.sandbox.server import running_sandbox
from deployments.supervisor import Child, Stack, StackError
from leads.priority import session_group_niceness
from leads.settings import Settings

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
# A child that starts a grandchild in its own group, as the flow runner starts
# flow-run processes; both must go when the child is stopped.
PARENT = [
    sys.executable,
    "-c",
    "import subprocess, sys, time;"
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
    "open(sys.argv[1], 'w').write(str(p.pid)); time.sleep(60)",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def taken_ports(count: int) -> Iterator[list[int]]:
    """`count` ports on 127.0.0.1 that something listens on, until the block ends."""
    with ExitStack() as held:
        ports = []
        for _ in range(count):
            taken = held.enter_context(socket.socket())
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            ports.append(taken.getsockname()[1])
        yield ports


def stack_of(tmp_path: Path, *children: Child) -> Stack:
    stack = Stack(Settings(data_dir=tmp_path, prefect_api_url="http://127.0.0.1:9/api"))
    stack.children = list(children)
    return stack


def written_pid(marker: Path) -> int:
    """The grandchild's pid, once `PARENT` has written it to `marker`."""
    deadline = time.monotonic() + 20
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return int(marker.read_text())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def test_a_child_that_dies_is_restarted_and_the_restart_logged(tmp_path, caplog):
    child = Child("shortlived", [sys.executable, "-c", "pass"], url="-")
    stack = stack_of(tmp_path, child)
    stack.start()
    watcher = threading.Thread(target=stack.watch, kwargs={"poll_seconds": 0.1})
    caplog.set_level(logging.WARNING)

    watcher.start()
    deadline = time.monotonic() + 20
    while child.restarts < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    stack.stop()
    watcher.join(timeout=10)

    assert child.restarts >= 2
    assert "shortlived exited with 0; restart #1" in caplog.text


def test_stop_ends_every_child_and_the_processes_they_started(tmp_path):
    marker = tmp_path / "grandchild.pid"
    parent = Child("parent", [*PARENT, str(marker)], url="-")
    sleeper = Child("sleeper", SLEEPER, url="-")
    stack = stack_of(tmp_path, parent, sleeper)
    stack.start()
    grandchild = written_pid(marker)

    stack.stop()

    assert parent.process.poll() is not None
    assert sleeper.process.poll() is not None
    deadline = time.monotonic() + 10
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild)


def test_a_port_in_use_names_the_port_and_its_setting(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack = Stack(Settings(data_dir=tmp_path, prefect_port=port))

        with pytest.raises(StackError) as caught:
            stack.check_ports()

    assert str(caught.value) == (
        f"port {port} on 127.0.0.1 is in use; set ORCH_PREFECT_PORT to another port"
    )


def up_with(tmp_path: Path, **settings: object) -> subprocess.CompletedProcess[str]:
    """`orchestrator up` on a fresh data dir with these ORCH_* settings; it must end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    return subprocess.run(
        [str(Path(sys.executable).with_name("orchestrator")), "up"],
        env=env
        | {"ORCH_DATA_DIR": str(tmp_path), "ORCH_PREFECT_PORT": str(free_port())}
        | {f"ORCH_{name.upper()}": str(value) for name, value in settings.items()},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_up_reports_a_port_in_use_in_one_line(tmp_path):
    with taken_ports(1) as (port,):
        result = up_with(tmp_path, api_port=port)

    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: port {port} on 127.0.0.1 is in use; set ORCH_API_PORT to another port"
    )


def test_every_port_in_use_is_named_with_its_setting_on_a_line_of_its_own(tmp_path):
    with taken_ports(2) as (prefect, api):
        settings = Settings(
            data_dir=tmp_path,
            prefect_port=prefect,
            api_port=api,
            crm="sandbox",
            sandbox_port=free_port(),
        )

        with pytest.raises(StackError) as caught:
            Stack(settings).check_ports()

    assert str(caught.value).splitlines() == [
        f"port {prefect} on 127.0.0.1 is in use; set ORCH_PREFECT_PORT to another port",
        f"port {api} on 127.0.0.1 is in use; set ORCH_API_PORT to another port",
    ]


def test_up_reports_every_port_in_use_at_once_one_a_line(tmp_path):
    with taken_ports(2) as (api, sandbox):
        result = up_with(tmp_path, crm="sandbox", api_port=api, sandbox_port=sandbox)

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: port {api} on 127.0.0.1 is in use; set ORCH_API_PORT to another port",
        f"error: port {sandbox} on 127.0.0.1 is in use; "
        "set ORCH_SANDBOX_PORT to another port",
    ]
    assert not (tmp_path / "orchestrator.db").exists(), "checked before writing"


def test_sigterm_during_watch_stops_the_stack(tmp_path, monkeypatch):
    from deployments.supervisor import run_stack

    settings = Settings(
        data_dir=tmp_path,
        prefect_api_url="http://127.0.0.1:9/api",
        api_port=free_port(),
        # The stack checks the sandbox's port too (ORCH_CRM=sandbox by default).
        sandbox_port=free_port(),
    )
    original_init = Stack.__init__
    started: list[Stack] = []

    def with_a_sleeper_only(self: Stack, *args, **kwargs) -> None:
        original_init(self, *args, **kwargs)
        self.children = [Child("sleeper", SLEEPER, url="-")]
        started.append(self)

    monkeypatch.setattr(Stack, "__init__", with_a_sleeper_only)
    lines: list[str] = []

    def announce(line: str) -> None:
        lines.append(line)
        if line.startswith("Ctrl-C"):
            # Only once the stack is up and its handler installed.
            os.kill(os.getpid(), signal.SIGTERM)

    run_stack(settings, announce)

    assert "Automation Orchestrator is up:" in lines
    assert started[0].children[0].process.poll() is not None


class TestCrmSandboxChild:
    def test_the_stack_runs_a_crm_sandbox_before_the_runner_and_the_api(self, tmp_path):
        stack = Stack(Settings(data_dir=tmp_path, crm="sandbox", sandbox_port=8177))

        names = [child.name for child in stack.children]

        assert names == ["prefect-server", "crm-sandbox", "flow-runner", "api"]
        sandbox = stack.children[1]
        assert sandbox.argv[1:] == ["sandbox"]
        assert sandbox.url.startswith("http://127.0.0.1:8177 ")
        assert any(line.startswith("crm-sandbox ") for line in stack.describe())

    @pytest.mark.parametrize(
        ("vendor", "seed_path", "seed"),
        [
            (
                "hubspot",
                "/_sandbox/hubspot/contacts/seed",
                {"contacts": [{"properties": {"email": "ada@example.com"}}]},
            ),
            (
                "salesforce",
                "/_sandbox/salesforce/records/Lead",
                [{"Email": "ada@example.com", "LastName": "Lovelace", "Company": "AE"}],
            ),
        ],
    )
    def test_the_banner_points_at_the_records_of_the_vendor_in_use(
        self, tmp_path, vendor, seed_path, seed
    ):
        port = free_port()
        settings = Settings(
            data_dir=tmp_path, crm="sandbox", sandbox_crm=vendor, sandbox_port=port
        )
        [line] = [
            line
            for line in Stack(settings).describe()
            if line.startswith("crm-sandbox ")
        ]
        records_url = line.split("(records: ", 1)[1].removesuffix(")")

        with running_sandbox(port=port) as (base_url, _state):
            httpx.post(f"{base_url}{seed_path}", json=seed).raise_for_status()
            records = httpx.get(records_url).json()

        # The record itself, not `/`'s counts and links.
        assert len(records) == 1
        assert "ada@example.com" in json.dumps(records)

    @pytest.mark.parametrize("crm", ["none", "hubspot", "salesforce"])
    def test_no_sandbox_runs_when_the_crm_is_not_the_sandbox(self, tmp_path, crm):
        stack = Stack(Settings(data_dir=tmp_path, crm=crm))

        assert "crm-sandbox" not in [child.name for child in stack.children]

    def test_a_busy_sandbox_port_names_the_port_and_its_setting(self, tmp_path):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            settings = Settings(
                data_dir=tmp_path,
                prefect_port=free_port(),
                api_port=free_port(),
                sandbox_port=port,
            )

            with pytest.raises(StackError) as caught:
                Stack(settings).check_ports()
            # Without the sandbox, its port is none of the stack's business.
            Stack(settings.model_copy(update={"crm": "none"})).check_ports()

        assert str(caught.value) == (
            f"port {port} on 127.0.0.1 is in use; set ORCH_SANDBOX_PORT to another port"
        )

    def test_up_refuses_a_busy_sandbox_port_in_one_line(self, tmp_path):
        with taken_ports(1) as (port,):
            result = up_with(
                tmp_path, crm="sandbox", sandbox_port=port, api_port=free_port()
            )

        assert result.returncode == 1
        assert result.stderr.strip() == (
            f"error: port {port} on 127.0.0.1 is in use; "
            "set ORCH_SANDBOX_PORT to another port"
        )
        assert not (tmp_path / "orchestrator.db").exists(), "checked before writing"

    def test_the_sandbox_child_answers_before_the_stack_goes_on(
        self, tmp_path, monkeypatch
    ):
        port = free_port()
        # The child reads its port from the environment, as under `up`.
        monkeypatch.setenv("ORCH_SANDBOX_PORT", str(port))
        stack = Stack(Settings(data_dir=tmp_path, crm="sandbox"))
        stack.children = [c for c in stack.children if c.name == "crm-sandbox"]
        [child] = stack.children

        try:
            stack.start()
            answered = child.ready()
        finally:
            stack.stop()

        assert answered
        assert child.process.poll() is not None
        assert child.log_path == (tmp_path / "logs" / "crm-sandbox.log").resolve()


class TestPriority:
    def test_a_background_child_and_what_it_starts_run_at_its_niceness(self, tmp_path):
        marker = tmp_path / "grandchild.pid"
        parent = Child("parent", [*PARENT, str(marker)], url="-", niceness=7)
        sleeper = Child("sleeper", SLEEPER, url="-")
        stack = stack_of(tmp_path, parent, sleeper)
        try:
            stack.start()
            grandchild = written_pid(marker)
            ours = os.getpriority(os.PRIO_PROCESS, 0)

            assert os.getpriority(os.PRIO_PROCESS, parent.process.pid) == max(7, ours)
            assert os.getpriority(os.PRIO_PROCESS, grandchild) == max(7, ours)
            assert os.getpriority(os.PRIO_PROCESS, sleeper.process.pid) == ours
            if session_group_niceness() is not None:
                # Each child leads a session; the kernel weighs sessions first.
                assert session_group_niceness(parent.process.pid) == 7
                assert session_group_niceness(grandchild) == 7
                assert session_group_niceness(sleeper.process.pid) == 0
        finally:
            stack.stop()

    def test_the_prefect_server_is_background_and_the_api_is_not(self, tmp_path):
        stack = Stack(Settings(data_dir=tmp_path, background_niceness=12))

        niceness = {child.name: child.niceness for child in stack.children}

        assert niceness["prefect-server"] == 12
        # The flow runner lowers its own priority (see test_priority).
        assert niceness["api"] == niceness["flow-runner"] == 0
