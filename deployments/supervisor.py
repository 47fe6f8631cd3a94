"""`orchestrator up`: the Prefect server, the flow runner and the API as one stack.

Children run in their own process groups (a flow runner's flow-run processes go
down with it), write their output to `<data dir>/logs/`, and are restarted when
they die. SIGINT or SIGTERM stops them all, newest first, and exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from deployments.prefect_env import prefect_environment
from leads.priority import lower_priority
from leads.settings import Settings

logger = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 15
READY_TIMEOUT_SECONDS = 120
MAX_RESTART_DELAY_SECONDS = 30


class StackError(RuntimeError):
    """The stack cannot start; the message says why and what to change."""


@dataclass
class Child:
    """One supervised process and how to tell it is ready."""

    name: str
    argv: list[str]
    url: str
    ready: Callable[[], bool] | None = None
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    log_path: Path | None = field(default=None)
    # Above 0 for background work, which yields the CPU to the API.
    niceness: int = 0


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _answers(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return check


class Stack:
    """Starts, watches and stops the stack's processes."""

    def __init__(self, settings: Settings, executable: str | None = None) -> None:
        self.settings = settings
        self.stopping = False
        self.logs = (settings.data_dir / "logs").resolve()
        bin_dir = Path(executable or sys.executable).parent
        orchestrator = str(bin_dir / "orchestrator")
        prefect = str(bin_dir / "prefect")
        prefect_root = settings.prefect_url.removesuffix("/api")
        api_root = f"http://{settings.api_host}:{settings.api_port}"
        self.env = os.environ | prefect_environment(settings)
        self.children = []
        if settings.prefect_api_url is None:
            self.children.append(self._prefect_server(prefect, prefect_root))
        if settings.crm == "sandbox":
            self.children.append(self._crm_sandbox(orchestrator))
        self.children += [
            # It lowers its own priority (and so its flow runs'); see `serve`.
            Child("flow-runner", [orchestrator, "serve"], url="(polls the server)"),
            Child(
                "api",
                [orchestrator, "api"],
                url=f"{api_root} (docs: {api_root}/api/docs)",
                ready=_answers(f"{api_root}/health"),
            ),
        ]

    def _crm_sandbox(self, orchestrator: str) -> Child:
        root = self.settings.sandbox_url
        # `/` holds counts and links; the records the sync writes are here.
        records = (
            "/_sandbox/hubspot/contacts"
            if self.settings.sandbox_crm == "hubspot"
            else "/_sandbox/salesforce/leads"
        )
        return Child(
            "crm-sandbox",
            [orchestrator, "sandbox"],
            url=f"{root} (records: {root}{records})",
            ready=_answers(f"{root}/"),
        )

    def _prefect_server(self, prefect: str, root: str) -> Child:
        return Child(
            "prefect-server",
            [
                prefect,
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.settings.prefect_port),
                "--analytics-off",
            ],
            url=root,
            ready=_answers(f"{self.settings.prefect_url}/health"),
            niceness=self.settings.background_niceness,
        )

    def check_ports(self) -> None:
        """Raises StackError naming every port in use and its setting, one a line.

        All of them at once, so that a user with several taken ports changes
        them in one go instead of learning of one per attempt.
        """
        wanted = [(self.settings.api_port, self.settings.api_host, "ORCH_API_PORT")]
        if self.settings.prefect_api_url is None:
            wanted.insert(
                0, (self.settings.prefect_port, "127.0.0.1", "ORCH_PREFECT_PORT")
            )
        if self.settings.crm == "sandbox":
            wanted.append(
                (self.settings.sandbox_port, "127.0.0.1", "ORCH_SANDBOX_PORT")
            )
        taken = [
            f"port {port} on {host} is in use; set {setting} to another port"
            for port, host, setting in wanted
            if port_in_use(host, port)
        ]
        if taken:
            raise StackError("\n".join(taken))

    def start(self) -> None:
        """Starts every child in order, each once the one before is ready."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self.settings.prefect_home.mkdir(parents=True, exist_ok=True)
        for child in self.children:
            if self.stopping:
                return
            self._spawn(child)
            self._await_ready(child)

    def _spawn(self, child: Child) -> None:
        child.log_path = self.logs / f"{child.name}.log"
        with child.log_path.open("ab") as log:
            child.process = subprocess.Popen(
                child.argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        if child.niceness:
            # At once, before the server starts its own processes, which inherit it.
            lower_priority(child.niceness, child.process.pid)
        child.started_at = time.monotonic()
        logger.info("started %s (pid %d)", child.name, child.process.pid)

    def _await_ready(self, child: Child) -> None:
        if child.ready is None:
            return
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not child.ready():
            assert child.process is not None
            if child.process.poll() is not None:
                raise StackError(
                    f"{child.name} exited with {child.process.returncode} while "
                    f"starting; see {child.log_path}"
                )
            if self.stopping:
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"{child.name} did not answer within {READY_TIMEOUT_SECONDS} s; "
                    f"see {child.log_path}"
                )
            time.sleep(0.25)

    def describe(self) -> list[str]:
        """One line per child: what it is and where it listens."""
        return [f"{child.name:15} {child.url}" for child in self.children] + [
            f"{'logs':15} {self.logs}"
        ]

    def watch(self, poll_seconds: float = 1.0) -> None:
        """Restarts any child that dies, until `stopping` is set."""
        while not self.stopping:
            for child in self.children:
                assert child.process is not None
                code = child.process.poll()
                if code is None or self.stopping:
                    continue
                child.restarts += 1
                # Back off when a child dies straight after starting, so a
                # broken setting does not spin the machine.
                delay = min(2 ** min(child.restarts, 5), MAX_RESTART_DELAY_SECONDS)
                if time.monotonic() - child.started_at > 60:
                    delay = 1
                logger.warning(
                    "%s exited with %s; restart #%d in %d s (log: %s)",
                    child.name,
                    code,
                    child.restarts,
                    delay,
                    child.log_path,
                )
                # Flow-run processes the dead child started die with it, or
                # they would run on outside the supervisor's reach.
                _signal_group(child.process, signal.SIGKILL)
                _sleep_unless(lambda: self.stopping, delay)
                if not self.stopping:
                    self._spawn(child)
            time.sleep(poll_seconds)

    def stop(self) -> None:
        """Stops every child, newest first: SIGTERM to its group, then SIGKILL."""
        self.stopping = True
        for child in reversed(self.children):
            process = child.process
            if process is None:
                continue
            if process.poll() is not None:
                # Its main process is gone, but what it started may not be.
                _signal_group(process, signal.SIGKILL)
                continue
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                logger.warning("%s ignored SIGTERM; killing it", child.name)
                _signal_group(process, signal.SIGKILL)
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            # Flow-run processes left in the group go with their runner.
            _signal_group(process, signal.SIGKILL)
            logger.info("stopped %s", child.name)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def _sleep_unless(stop: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stop():
        time.sleep(0.2)


def run_stack(settings: Settings, announce: Callable[[str], None]) -> None:
    """Runs the stack until SIGINT or SIGTERM, then stops it cleanly.

    Raises:
        StackError: ports are taken (one a line) or a child could not start.
    """
    stack = Stack(settings)
    stack.check_ports()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s; stopping", signal.Signals(signum).name)
        stack.stopping = True

    previous = {
        signum: signal.signal(signum, request_stop)
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        stack.start()
        if stack.stopping:
            return
        announce("Automation Orchestrator is up:")
        for line in stack.describe():
            announce(f"  {line}")
        announce("Ctrl-C stops everything.")
        stack.watch()
    finally:
        stack.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
