"""Orchestration overhead: Prefect's seconds and CPU per flow run and per synced lead.

For each Prefect database in turn (SQLite, then PostgreSQL) a Prefect server is
started here on a free loopback port with a temporary `PREFECT_HOME`, and a
flow runner serves deployments the way `orchestrator serve` does (Prefect's
`serve`, every flow run a new process). Measured on each:

1. in-process: a flow that does nothing (`noop`), called N times in one process;
2. deployment: the same flow as a served deployment, N runs one after another;
3. idle: the server and the flow runner with nothing to run, polling;
4. drain: the real `crm_sync` flow draining K leads into the bundled CRM sandbox
   in one run (its default batch size), R times;
5. one run per lead: the same flow started once per lead (`lead_id`), M runs
   created together, as a burst of M leads would if each were its own run.

    python -m bench.orchestration [--databases sqlite,postgresql] [--quick]

The flow runner's runs import this module to find `noop`, so only the standard
library and Prefect are imported at the top (a trivial run must pay for Prefect
alone); what the benchmark itself needs is imported where it is used.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import machine
from bench.cpu_time import TICKS_PER_SECOND, Ledger, Process, Table, ancestors

# Prefect starts its SDK analytics on import; nothing here may call out.
os.environ.setdefault("DO_NOT_TRACK", "1")
from prefect import flow  # noqa: E402 - after DO_NOT_TRACK, on purpose

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun

    from bench.crm_sync import Sandbox
    from bench.headline import Figure
    from bench.server import Backend

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "orchestration-latest.md"
DATABASES = ("sqlite", "postgresql")
PACKAGES = ("prefect", "sqlalchemy", "aiosqlite", "asyncpg", "hubspot-api-client")

FULL = {
    "calls": 10,
    "runs": 10,
    "leads": 1_000,
    "drains": 3,
    "lead_runs": 20,
    "idle_seconds": 5,
}
QUICK = {
    "calls": 4,
    "runs": 3,
    "leads": 200,
    "drains": 1,
    "lead_runs": 6,
    "idle_seconds": 3,
}
# Upper bounds keep a mistyped option from running for hours.
MOST = {
    "calls": 200,
    "runs": 100,
    "leads": 20_000,
    "drains": 10,
    "lead_runs": 200,
    "idle_seconds": 60,
}

NOOP_FLOW = "bench-noop"
NOOP = "noop"
CRM_SYNC = "crm_sync"
PER_LEAD = "crm_sync_per_lead"
# Every measured `crm_sync` run stops as soon as its rows are done: a one-lead
# run has no reason to wait for more, and the comparison is of Prefect's cost.
RUN_PARAMETERS = {"idle_grace_seconds": 0}

SERVER_START_TIMEOUT_S = 120.0
RUNNER_READY_TIMEOUT_S = 120.0
CALLER_TIMEOUT_S = 600.0
RUN_TIMEOUT_S = 180.0
BURST_TIMEOUT_S = 600.0
# How often this process reads the states of the runs it waits for.
POLL_S = 0.25
# How often the CPU ledger reads /proc.
SAMPLE_S = 0.5
# A run is final on the server a moment before its process has exited and been
# reaped by the flow runner (which is when its CPU counts there).
REAP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})

SERVER = "Prefect server"
DATABASE = "PostgreSQL (Prefect's database)"
RUNNER = "flow runner"
RUNS = "flow-run processes"
CALLER = "in-process caller"
SANDBOX = "CRM sandbox"
BENCH = "this benchmark (creates runs, reads their states)"
# What Prefect costs: every role but the CRM sandbox and this benchmark.
PREFECT_SIDE = (SERVER, DATABASE, RUNNER, RUNS, CALLER)

RUNNER_FLAG = "--runner"
CALLER_FLAG = "--in-process"


@flow(name=NOOP_FLOW)
def noop() -> None:
    """Does nothing: whatever a run of it costs is Prefect's."""


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# What is measured ------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """The median of some values, with the smallest and the largest."""

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        """The spread of `values`.

        Raises:
            ValueError: there are no values.
        """
        if not values:
            raise ValueError("a spread needs at least one value")
        return cls(statistics.median(values), min(values), max(values), len(values))

    def shown(self, digits: int = 2) -> str:
        """`median (min – max)`, or the one value when all agree."""
        median = f"{self.median:,.{digits}f}"
        low, high = f"{self.low:,.{digits}f}", f"{self.high:,.{digits}f}"
        return median if low == high else f"{median} ({low} – {high})"


@dataclass(frozen=True)
class RunTimes:
    """When the server saw a flow run created, start running and end."""

    state: str
    created: float
    started: float | None
    ended: float | None

    @property
    def to_done(self) -> float | None:
        """Seconds from creation to the end: what a caller waits for."""
        return None if self.ended is None else self.ended - self.created

    @property
    def running(self) -> float | None:
        """Seconds the run was RUNNING (its process up, the flow called)."""
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started


def run_times(run: FlowRun) -> RunTimes:
    """A flow run as read from the server, as `RunTimes`."""

    def moment(value: datetime | None) -> float | None:
        return None if value is None else value.timestamp()

    return RunTimes(
        run.state.type.value if run.state else "UNKNOWN",
        moment(run.created) or 0.0,
        moment(run.start_time),
        moment(run.end_time),
    )


@dataclass
class Measured:
    """One way of running flows on one Prefect database, and what it cost.

    `durations` are seconds per run (per call in process); `cpu` is CPU
    seconds by role over the whole window, which lasts `wall_s`.
    """

    database: str
    how: str
    runs: int
    leads: int = 0
    durations: list[float] = field(default_factory=list)
    running: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    states: Counter[str] = field(default_factory=Counter)
    load: str = ""

    def cpu_per(self, units: int, roles: tuple[str, ...] = PREFECT_SIDE) -> float:
        """CPU seconds of `roles` together, per run or per lead."""
        return sum(self.cpu.get(role, 0.0) for role in roles) / max(units, 1)

    @property
    def all_completed(self) -> bool:
        return self.states == Counter({"COMPLETED": self.runs})


def ratio(numerator: float, denominator: float) -> float | None:
    """`numerator / denominator`, or None when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else None


# CPU -------------------------------------------------------------------------


def lifetime_cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds a process has used, and those of every child it waited for.

    The flow runner waits for each run's process, so its children's seconds
    (`cutime`, `cstime`) hold every run it executed, however short: sampling
    /proc would miss the last moments of each.

    Raises:
        OSError: the process is gone.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) is in parentheses and may hold spaces.
    fields = stat[stat.rfind(")") + 2 :].split()
    user, system, children_user, children_system = map(int, fields[11:15])
    return (
        (user + system) / TICKS_PER_SECOND,
        (children_user + children_system) / TICKS_PER_SECOND,
    )


@dataclass(frozen=True)
class Roles:
    """Names the role of each long-lived process the ledger samples.

    The flow runner and the in-process caller are counted exactly instead
    (`lifetime_cpu_s`, `time.process_time`), so they have no role here.
    """

    server: int
    sandbox_port: int
    database: str | None

    def __call__(self, process: Process, table: Table) -> str | None:
        if process.pid == os.getpid():
            return BENCH
        command = process.command
        if self.database and command.startswith("postgres:"):
            return DATABASE if f" {self.database} " in command else None
        chain = ancestors(table, process.pid)
        if self.server in chain:
            return SERVER
        if any(
            f"sandbox --port {self.sandbox_port}" in table[pid].command for pid in chain
        ):
            return SANDBOX
        return None


class Sampler:
    """Feeds a ledger from a thread, every `SAMPLE_S`, until closed."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.ledger.sample()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@contextmanager
def window(
    sampler: Sampler, measured: Measured, runner: int | None = None
) -> Iterator[None]:
    """Counts CPU by role and the wall time of the block into `measured`."""
    measured.load = machine.load_average()
    before = (0.0, 0.0)
    if runner is not None:
        # A run's process is counted whole when reaped: one from before the
        # window must not be reaped inside it.
        _await_reaped(runner)
        before = lifetime_cpu_s(runner)
    sampler.ledger.start()
    started = time.monotonic()
    yield
    if runner is not None:
        _await_reaped(runner)
    measured.wall_s = time.monotonic() - started
    sampler.ledger.stop()
    used, _, _ = sampler.ledger.used()
    measured.cpu = {role: seconds for role, seconds in used.items() if role}
    if runner is not None:
        after = lifetime_cpu_s(runner)
        measured.cpu[RUNNER] = after[0] - before[0]
        measured.cpu[RUNS] = after[1] - before[1]


def _await_reaped(runner: int) -> None:
    """Waits until the runner has reaped every flow-run process it started.

    A run's CPU reaches the runner's `cutime` only when the runner has waited
    for its process; an exited one not yet waited for is a zombie, with no
    command line. Only multiprocessing's resource tracker, should `serve` have
    started one, stays a child for good.

    Raises:
        ServerFailed: a run's process was still there after `REAP_TIMEOUT_S`.
    """
    from bench.cpu_time import processes
    from bench.server import ServerFailed

    deadline = time.monotonic() + REAP_TIMEOUT_S
    while True:
        left = [
            p
            for p in processes().values()
            if p.parent == runner and "resource_tracker" not in p.command
        ]
        if not left:
            return
        if time.monotonic() > deadline:
            raise ServerFailed(
                f"the flow runner had not reaped {len(left)} run processes "
                f"{REAP_TIMEOUT_S:.0f} s after their runs ended"
            )
        time.sleep(0.1)


# Processes ---------------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    """A Prefect database to measure on, and where its server keeps its files."""

    name: str
    label: str
    data_dir: Path
    # The server's database URL; None for SQLite in its home.
    url: str | None

    @property
    def shown(self) -> str:
        return "SQLite" if self.url is None else "PostgreSQL"

    @property
    def pg_name(self) -> str | None:
        """The PostgreSQL database's name, which its connections show in `ps`."""
        if self.url is None:
            return None
        from sqlalchemy.engine import make_url

        return make_url(self.url).database


@contextmanager
def opened(name: str) -> Iterator[Database]:
    """A fresh Prefect database with a temporary data dir, both removed afterwards.

    Raises:
        BackendUnavailable: PostgreSQL at `ORCH_TEST_POSTGRES_URL` cannot be used.
    """
    from bench.server import postgresql_backend, sqlite_backend
    from leads.settings import Settings

    opener = (
        sqlite_backend()
        if name == "sqlite"
        else postgresql_backend(Settings().test_postgres_url)
    )
    with opener as backend:
        yield _database(backend)


def _database(backend: Backend) -> Database:
    url = backend.settings.get("ORCH_DATABASE_URL")
    label = (
        "SQLite file in the server's fresh PREFECT_HOME (WAL)"
        if url is None
        else backend.label
    )
    return Database(backend.name, label, backend.data_dir, url)


def stack_environment(
    database: Database, prefect_port: int, sandbox_port: int
) -> dict[str, str]:
    """The environment of the server, the runner and the caller: the product's.

    Prefect's variables are what `orchestrator up` gives its children
    (`prefect_environment`); the flows read the lead store in the data dir
    (SQLite, whatever Prefect's database) and sync to the sandbox.
    """
    from bench.crm_sync import clean_environment
    from deployments.prefect_env import prefect_environment
    from leads.settings import Settings

    settings = Settings(
        data_dir=database.data_dir,
        prefect_port=prefect_port,
        prefect_database_url=database.url,
        crm="sandbox",
        sandbox_port=sandbox_port,
    )
    return clean_environment(
        **prefect_environment(settings),
        ORCH_DATA_DIR=str(database.data_dir),
        ORCH_CRM="sandbox",
        ORCH_SANDBOX_PORT=str(sandbox_port),
    )


@contextmanager
def started(
    command: list[str], environment: dict[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Runs `command` in its own process group, stopped with it afterwards."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            env=environment,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group (the runner's run processes go too), then KILL."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_S)


@contextmanager
def prefect_server(
    environment: dict[str, str], port: int, folder: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`prefect server start` on 127.0.0.1:`port`, healthy, stopped afterwards.

    Raises:
        ServerFailed: it exited or its health check stayed silent.
    """
    from bench.server import LOOPBACK, wait_until_answers

    prefect = str(Path(sys.executable).with_name("prefect"))
    command = [prefect, "server", "start", "--host", LOOPBACK, "--port", str(port)]
    log_path = folder / "prefect-server.log"
    with started([*command, "--analytics-off"], environment, log_path) as process:
        wait_until_answers(
            process,
            f"http://{LOOPBACK}:{port}",
            "/api/health",
            log_path,
            name="prefect server start",
            timeout=SERVER_START_TIMEOUT_S,
        )
        yield process


@contextmanager
def prefect_client(api_url: str, home: Path) -> Iterator[SyncPrefectClient]:
    """Prefect's synchronous client of the server at `api_url`."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    updates = {PREFECT_API_URL: api_url, PREFECT_HOME: str(home)}
    with temporary_settings(updates=updates), get_client(sync_client=True) as client:
        yield client


# The flow runner ---------------------------------------------------------------


def runner_main() -> int:
    """Serves `crm_sync`, one run per lead, and `noop`, as `orchestrator serve` does.

    The deployments come from `prefect.yaml` through `deployments.definitions`,
    with the product's automations installed first; only what would start runs
    behind the benchmark's back (the schedule, the event trigger) is left out.
    """
    import asyncio

    from prefect import serve

    from deployments import automations
    from deployments.definitions import (
        DeploymentDefinition,
        load_definitions,
        to_runner_deployment,
    )
    from deployments.prefect_env import RUN_TAG
    from leads.settings import get_settings

    asyncio.run(automations.install())
    [drain] = [d for d in load_definitions() if d.name == CRM_SYNC]
    drain = replace(drain, schedules=[], triggers=[])
    # Were each lead its own run, its deployment could not cancel the new
    # runs (CANCEL_NEW): the flow runner's own limit is what bounds them.
    per_lead = replace(drain, name=PER_LEAD, concurrency_limit=None)
    trivial = DeploymentDefinition(
        name=NOOP, entrypoint="bench/orchestration.py:noop", tags=[RUN_TAG]
    )
    serve(
        *(to_runner_deployment(d) for d in (drain, per_lead, trivial)),
        limit=get_settings().flow_runner_limit,
        pause_on_shutdown=False,
        print_starting_message=False,
    )
    return 0


@contextmanager
def flow_runner(
    environment: dict[str, str], folder: Path, client: SyncPrefectClient
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, Any]]]:
    """The runner process, its deployments registered and one run of each done.

    Yields:
        The process and the deployment ids by name.

    Raises:
        ServerFailed: it exited, or its deployments or first runs did not come.
    """
    command = [sys.executable, "-m", "bench.orchestration", RUNNER_FLAG]
    log_path = folder / "runner.log"
    with started(command, environment, log_path) as process:
        ids = _await_deployments(client, process, log_path)
        # The first runs pay once for what later ones find ready (the flows'
        # registration, the sandbox's first connection).
        for name in (NOOP, CRM_SYNC):
            parameters = RUN_PARAMETERS if name == CRM_SYNC else {}
            [run] = run_together(client, ids[name], [parameters], RUN_TIMEOUT_S)
            if run.state != "COMPLETED":
                raise _failed(f"the first {name} run ended {run.state}", log_path)
        yield process, ids


def _await_deployments(
    client: SyncPrefectClient, process: subprocess.Popen[bytes], log_path: Path
) -> dict[str, Any]:
    from prefect.exceptions import ObjectNotFound

    names = {
        NOOP: f"{NOOP_FLOW}/{NOOP}",
        CRM_SYNC: f"crm-sync/{CRM_SYNC}",
        PER_LEAD: f"crm-sync/{PER_LEAD}",
    }
    deadline = time.monotonic() + RUNNER_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise _failed(f"the flow runner exited with {process.returncode}", log_path)
        try:
            return {
                key: client.read_deployment_by_name(name).id
                for key, name in names.items()
            }
        except ObjectNotFound:
            time.sleep(0.5)
    raise _failed("the flow runner's deployments did not appear", log_path)


def _failed(message: str, log_path: Path) -> Exception:
    from bench.server import ServerFailed, tail

    return ServerFailed(f"{message}:\n{tail(log_path)}")


def run_together(
    client: SyncPrefectClient,
    deployment_id: Any,
    parameters: list[dict[str, Any]],
    timeout: float,
) -> list[RunTimes]:
    """Creates one run per parameter set, back to back, and waits for all to end.

    Runs are created as the API creates them (`create_flow_run_from_deployment`).

    Raises:
        ServerFailed: a run had not ended within `timeout` seconds.
    """
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from bench.server import ServerFailed

    ids = [
        client.create_flow_run_from_deployment(deployment_id, parameters=p).id
        for p in parameters
    ]
    wanted = FlowRunFilter(id=FlowRunFilterId(any_=ids))
    deadline = time.monotonic() + timeout
    while True:
        runs = [
            run_times(run)
            for run in client.read_flow_runs(flow_run_filter=wanted, limit=len(ids))
        ]
        if len(runs) == len(ids) and all(run.state in FINAL for run in runs):
            return sorted(runs, key=lambda run: run.created)
        if time.monotonic() > deadline:
            states = Counter(run.state for run in runs)
            raise ServerFailed(
                f"{len(ids)} runs not all ended within {timeout:.0f} s: {dict(states)}"
            )
        time.sleep(POLL_S)


# The in-process caller ------------------------------------------------------------


def caller_main(calls: int) -> int:
    """Calls `noop` once to warm up, then `calls` times, timing each call.

    Waits for `go` on stdin after the warm-up, so the CPU window opens on the
    calls alone; prints one JSON line: the calls' seconds and this process's
    CPU seconds over them.
    """
    noop()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 2
    durations = []
    cpu_before = time.process_time()
    for _ in range(calls):
        began = time.perf_counter()
        noop()
        durations.append(time.perf_counter() - began)
    cpu = time.process_time() - cpu_before
    print(json.dumps({"durations": durations, "cpu_s": cpu}), flush=True)
    return 0


def measure_in_process(
    environment: dict[str, str],
    folder: Path,
    sampler: Sampler,
    database: Database,
    calls: int,
) -> Measured:
    """`calls` in-process runs of `noop` from a process of their own.

    Raises:
        ServerFailed: the caller failed or overran its time.
    """
    from bench.server import ServerFailed, stop, tail

    measured = Measured(database.shown, "in-process", calls)
    log_path = folder / "caller.log"
    command = [sys.executable, "-m", "bench.orchestration", CALLER_FLAG, str(calls)]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            env=environment,
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        if _read_line(process, RUN_TIMEOUT_S) != "ready":
            raise ServerFailed(
                f"the in-process caller did not start:\n{tail(log_path)}"
            )
        with window(sampler, measured):
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
            output, _ = process.communicate(timeout=CALLER_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ServerFailed("the in-process caller overran its time") from exc
    finally:
        stop(process)  # type: ignore[arg-type]  # text mode; stop() only signals
    if process.returncode != 0:
        raise ServerFailed(
            f"the in-process caller exited with {process.returncode}:\n{tail(log_path)}"
        )
    result = json.loads(output.strip().splitlines()[-1])
    measured.durations = result["durations"]
    measured.cpu[CALLER] = result["cpu_s"]
    measured.states = Counter({"COMPLETED": calls})
    return measured


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline().strip() if ready else ""


# The measurements on a served flow runner ------------------------------------------


@dataclass(frozen=True)
class Served:
    """What the measurements on the runner share."""

    database: Database
    client: SyncPrefectClient
    sampler: Sampler
    runner: int
    deployments: dict[str, Any]
    store_path: Path

    def measured(self, how: str, runs: int, leads: int = 0) -> Measured:
        return Measured(self.database.shown, how, runs, leads)

    def record(self, measured: Measured, runs: list[RunTimes]) -> Measured:
        measured.durations = [r.to_done for r in runs if r.to_done is not None]
        measured.running = [r.running for r in runs if r.running is not None]
        measured.states = Counter(run.state for run in runs)
        return measured


def measure_idle(served: Served, seconds: int) -> Measured:
    """The server and the runner with nothing to do, for `seconds`."""
    measured = served.measured("idle", 0)
    with window(served.sampler, measured, served.runner):
        time.sleep(seconds)
    return measured


def measure_deployment_runs(served: Served, count: int) -> Measured:
    """`count` runs of the `noop` deployment, each created once the last ended."""
    measured = served.measured("deployment", count)
    runs: list[RunTimes] = []
    with window(served.sampler, measured, served.runner):
        for _ in range(count):
            runs += run_together(
                served.client, served.deployments[NOOP], [{}], RUN_TIMEOUT_S
            )
    return served.record(measured, runs)


def queue_leads(served: Served, count: int, prefix: str) -> list[str]:
    """Takes `count` new leads into the store; returns the ids of those waiting."""
    from sqlalchemy import select as sql_select

    from bench.crm_sync import fill_store
    from leads.store import Store
    from leads.store.tables import Lead

    fill_store(served.store_path, count, prefix)
    store = Store(f"sqlite:///{served.store_path}")
    try:
        with store.engine.connect() as connection:
            waiting = connection.scalars(
                sql_select(Lead.id).where(Lead.crm_sync_status == "pending")
            ).all()
    finally:
        store.dispose()
    return [str(lead_id) for lead_id in waiting]


def measure_drains(served: Served, leads: int, drains: int, run_id: str) -> Measured:
    """`drains` times: `leads` new leads queued, then one `crm_sync` run for all."""
    measured = served.measured("drain", drains, leads * drains)
    runs: list[RunTimes] = []
    for number in range(drains):
        queue_leads(served, leads, f"o{run_id}d{number}")
        one = served.measured("drain", 1)
        with window(served.sampler, one, served.runner):
            runs += run_together(
                served.client,
                served.deployments[CRM_SYNC],
                [RUN_PARAMETERS],
                RUN_TIMEOUT_S,
            )
        measured.wall_s += one.wall_s
        for role, seconds in one.cpu.items():
            measured.cpu[role] = measured.cpu.get(role, 0.0) + seconds
        measured.load = measured.load or one.load
    return served.record(measured, runs)


def measure_lead_runs(served: Served, count: int, run_id: str) -> Measured:
    """`count` new leads, then one `crm_sync` run per lead, created together."""
    waiting = queue_leads(served, count, f"o{run_id}l")
    measured = served.measured("per-lead", len(waiting), len(waiting))
    parameters = [{**RUN_PARAMETERS, "lead_id": lead_id} for lead_id in waiting]
    with window(served.sampler, measured, served.runner):
        runs = run_together(
            served.client, served.deployments[PER_LEAD], parameters, BURST_TIMEOUT_S
        )
    return served.record(measured, runs)


def synced_exactly_once(served: Served) -> str | None:
    """None when every lead of the store is synced once; else what is wrong."""
    from bench.crm_sync import store_outcome

    outcome = store_outcome(f"sqlite:///{served.store_path}")
    if outcome.exactly_once:
        return None
    return (
        f"{outcome.synced} of {outcome.leads} leads synced, "
        f"{outcome.synced_events} CRM result events, {outcome.not_once} leads "
        f"not synced exactly once, {outcome.outbox_left} CRM rows left"
    )


# One Prefect database, everything on it ---------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What the run measures and how much of it."""

    databases: tuple[str, ...]
    calls: int
    runs: int
    leads: int
    drains: int
    lead_runs: int
    idle_seconds: int


@dataclass
class Results:
    """Everything measured, and what went wrong on the way."""

    measured: list[Measured] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def measure_database(
    name: str, plan: Plan, sandbox: Sandbox, results: Results, run_id: str
) -> None:
    """Every measurement on a fresh Prefect server on database `name`."""
    from bench.crm_sync import fill_store
    from bench.server import LOOPBACK, free_port

    with opened(name) as database:
        results.labels[database.shown] = database.label
        port = free_port()
        environment = stack_environment(database, port, sandbox.port)
        store_path = database.data_dir / "orchestrator.db"
        fill_store(store_path, 0, "none")
        sandbox.reset()
        with prefect_server(environment, port, database.data_dir) as server:
            ledger = Ledger(Roles(server.pid, sandbox.port, database.pg_name))
            sampler = Sampler(ledger)
            try:
                _progress(f"[{name}] server up; in-process calls")
                results.measured.append(
                    measure_in_process(
                        environment, database.data_dir, sampler, database, plan.calls
                    )
                )
                api_url = f"http://{LOOPBACK}:{port}/api"
                home = database.data_dir / "client-home"
                with prefect_client(api_url, home) as client:
                    runner = flow_runner(environment, database.data_dir, client)
                    with runner as (process, deployments):
                        served = Served(
                            database,
                            client,
                            sampler,
                            process.pid,
                            deployments,
                            store_path,
                        )
                        _measure_served(served, plan, results, run_id)
            finally:
                sampler.close()


def _measure_served(served: Served, plan: Plan, results: Results, run_id: str) -> None:
    name = served.database.name
    steps: list[tuple[str, Callable[[], Measured]]] = [
        ("idle", lambda: measure_idle(served, plan.idle_seconds)),
        ("deployment runs", lambda: measure_deployment_runs(served, plan.runs)),
        ("drains", lambda: measure_drains(served, plan.leads, plan.drains, run_id)),
        ("one run per lead", lambda: measure_lead_runs(served, plan.lead_runs, run_id)),
    ]
    for label, step in steps:
        _progress(f"[{name}] {label}")
        measured = step()
        results.measured.append(measured)
        if not measured.all_completed and measured.runs:
            results.problems.append(
                f"{served.database.shown}, {label}: runs ended {dict(measured.states)}"
            )
    wrong = synced_exactly_once(served)
    if wrong:
        results.problems.append(f"{served.database.shown}: {wrong}")


def run(plan: Plan, results: Results) -> None:
    """Measures on each database in turn; every process stops before it returns."""
    import secrets

    from bench.crm_sync import sandbox_process
    from bench.server import BackendUnavailable, ServerFailed

    run_id = secrets.token_hex(3)
    with (
        tempfile.TemporaryDirectory(prefix="bench-orchestration-") as scratch,
        sandbox_process(Path(scratch)) as sandbox,
    ):
        for name in plan.databases:
            began = time.monotonic()
            try:
                measure_database(name, plan, sandbox, results, run_id)
            except (BackendUnavailable, ServerFailed) as exc:
                results.problems.append(f"{name}: {exc}".replace("\n", " / "))
            results.durations[name] = time.monotonic() - began


# Report -------------------------------------------------------------------------------


HOW = {
    "in-process": "`noop()` called in one process",
    "deployment": "`noop` deployment run, one after another",
    "idle": "idle: server and runner polling, per second",
    "drain": "`crm_sync`: one run drains all",
    "per-lead": "`crm_sync_per_lead`: one run per lead, created together",
}


CPU_HEADINGS = {
    SERVER: "server",
    DATABASE: "PostgreSQL",
    RUNNER: "runner",
    RUNS: "run processes",
    CALLER: "in-process caller",
}


def cpu_cells(measured: Measured, units: float, scale: float, digits: int) -> str:
    """The CPU of each Prefect role and their total, per unit, as table cells."""
    per = {role: scale * measured.cpu.get(role, 0.0) / units for role in PREFECT_SIDE}
    cells = [
        "–"
        if role == DATABASE and measured.database == "SQLite"
        else f"{value:,.{digits}f}"
        for role, value in per.items()
    ]
    return " | ".join([*cells, f"{sum(per.values()):,.{digits}f}"])


def _cpu_headings(unit: str) -> tuple[str, str]:
    names = list(CPU_HEADINGS.values())
    heading = f"CPU {unit}: {names[0]} | " + " | ".join(names[1:]) + " | Prefect total"
    return heading, " | ".join(["---:"] * (len(names) + 1))


def _seconds(measured: Measured) -> tuple[str, str]:
    """Seconds per run (creation to end) and the median time RUNNING, as cells."""
    seconds = Spread.of(measured.durations).shown() if measured.durations else "–"
    running = Spread.of(measured.running).shown() if measured.running else "–"
    return seconds, running


def runs_table(measured: list[Measured]) -> list[str]:
    """Seconds and CPU seconds per run of the trivial flow, and when idle."""
    cpu, aligned = _cpu_headings("s per run")
    lines = [
        "| Prefect DB | How | Runs | Seconds per run, median (min – max) "
        f"| Running | Runs/s | {cpu} |",
        f"| --- | --- | ---: | ---: | ---: | ---: | {aligned} |",
    ]
    for m in measured:
        if m.how not in ("in-process", "deployment", "idle"):
            continue
        # Idle is shown per second of the window.
        units = m.runs if m.runs else max(m.wall_s, 1e-9)
        seconds, running = _seconds(m)
        rate = f"{m.runs / m.wall_s:.2f}" if m.runs and m.wall_s else "–"
        lines.append(
            f"| {m.database} | {HOW[m.how]} | {m.runs or f'{m.wall_s:.0f} s'} "
            f"| {seconds} | {running} | {rate} | {cpu_cells(m, units, 1, 3)} |"
        )
    return lines


def leads_table(measured: list[Measured]) -> list[str]:
    """Seconds and CPU per synced lead: one drain against one run per lead."""
    cpu, aligned = _cpu_headings("ms per lead")
    lines = [
        "| Prefect DB | How | Runs | Leads | Seconds per run, median (min – max) "
        f"| Running | Wall s | ms per lead | {cpu} | sandbox |",
        f"| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | {aligned} | ---: |",
    ]
    for m in measured:
        if m.how not in ("drain", "per-lead") or not m.leads:
            continue
        seconds, running = _seconds(m)
        sandbox = 1000 * m.cpu.get(SANDBOX, 0.0) / m.leads
        lines.append(
            f"| {m.database} | {HOW[m.how]} | {m.runs} | {m.leads:,} | {seconds} "
            f"| {running} | {m.wall_s:.1f} | {1000 * m.wall_s / m.leads:,.1f} "
            f"| {cpu_cells(m, m.leads, 1000, 1)} | {sandbox:.1f} |"
        )
    return lines


def per_lead_comparison(drain: Measured, per_lead: Measured, cores: int) -> str | None:
    """One run per lead against one drain: the ratios, and what the cores allow.

    None when either measured no lead or no CPU.
    """
    if not drain.leads or not per_lead.leads:
        return None
    drain_cpu, alone_cpu = drain.cpu_per(drain.leads), per_lead.cpu_per(per_lead.leads)
    seconds = ratio(per_lead.wall_s / per_lead.leads, drain.wall_s / drain.leads)
    cpu = ratio(alone_cpu, drain_cpu)
    if seconds is None or cpu is None or alone_cpu <= 0:
        return None
    return (
        f"a lead synced in a run of its own took {seconds:,.0f}× the seconds and "
        f"{cpu:,.0f}× the Prefect-side CPU of a lead synced in a drain of "
        f"{drain.leads // max(drain.runs, 1):,} ({1000 * alone_cpu:,.0f} against "
        f"{1000 * drain_cpu:,.1f} CPU-ms); with {cores} cores and nothing else "
        f"running, that CPU alone caps one run per lead at "
        f"{cores / alone_cpu:,.2f} leads/s, and drains at {cores / drain_cpu:,.0f}"
    )


def conclusions(measured: list[Measured], cores: int) -> list[str]:
    """One line per database: a run's cost, and one run per lead against a drain."""
    lines = []
    for database in dict.fromkeys(m.database for m in measured):
        mine = {m.how: m for m in measured if m.database == database}
        served, called = mine.get("deployment"), mine.get("in-process")
        drain, per_lead = mine.get("drain"), mine.get("per-lead")
        parts = []
        if served and served.durations and served.running:
            parts.append(
                "a served run of a flow that does nothing takes "
                f"{Spread.of(served.durations).median:.1f} s from creation to its "
                f"end, of which it is RUNNING "
                f"{Spread.of(served.running).median:.2f} s (the rest is the "
                "runner's poll and a new Python process starting), and "
                f"{served.cpu_per(served.runs):.1f} CPU-s, "
                f"{served.cpu_per(served.runs, (RUNS,)):.1f} of them the run's "
                "process"
            )
        if called and called.durations:
            parts.append(
                f"an in-process call takes {Spread.of(called.durations).median:.2f}"
                " s, mostly waiting (a sync flow ends by joining its heartbeat "
                "thread, which sleeps in 1 s steps: `prefect.flow_engine`), and "
                f"{called.cpu_per(called.runs):.2f} CPU-s"
            )
        if drain and per_lead:
            compared = per_lead_comparison(drain, per_lead, cores)
            if compared:
                parts.append(compared)
        if parts:
            lines.append(f"- {database}: " + "; ".join(parts) + ".")
    busiest = max((_one_minute(m.load) for m in measured), default=0.0)
    if busiest > cores:
        lines.append(
            f"- Other work shared the {cores} cores: the 1-minute load average "
            f"reached {busiest:.1f} as measurements began. Wall-clock figures "
            "are therefore upper bounds; CPU seconds are what each process "
            "used, whatever the contention, and are the firmer figures."
        )
    return lines


def _one_minute(load: str) -> float:
    """The 1-minute figure of `machine.load_average()`, or 0 when unknown."""
    try:
        return float(load.split(",")[0])
    except ValueError:
        return 0.0


def report(argv: list[str], plan: Plan, results: Results) -> list[str]:
    """The Markdown report; `machine.publish` adds the commit and the machine."""
    import prefect

    from deployments.prefect_env import HEARTBEAT_SECONDS
    from leads.settings import Settings

    settings = Settings()
    loads = "; ".join(
        f"{m.database} {m.how} {m.load}" for m in results.measured if m.load
    )
    lines = [
        *machine.heading(
            "Orchestration overhead benchmark", "bench.orchestration", argv
        ),
        f"- Packages: {machine.package_versions(PACKAGES)}",
        f"- Load average (1, 5, 15 min) as each measurement began: {loads}",
        "- Duration, servers included: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in results.durations.items()),
        f"- Prefect {prefect.__version__}: `prefect server start --host 127.0.0.1 "
        "--port <free port> --analytics-off` with a fresh `PREFECT_HOME` in a "
        "temporary data dir and the environment `orchestrator up` gives its "
        "children (`deployments.prefect_env`: heartbeat every "
        f"{HEARTBEAT_SECONDS} s, the runner polling every "
        f"{settings.flow_runner_poll_seconds} s). Databases: "
        + "; ".join(f"{k}: {v}" for k, v in results.labels.items())
        + ". Everything ran on 127.0.0.1.",
        "- Flow runner: `python -m bench.orchestration --runner`, which does what "
        "`orchestrator serve` does (installs the product's automations, then "
        f"Prefect's `serve` with `limit={settings.flow_runner_limit}`, the "
        "default `ORCH_FLOW_RUNNER_LIMIT`) for three deployments built from "
        "`prefect.yaml` by `deployments.definitions`: `crm_sync` without its "
        "schedule and trigger (so nothing starts runs behind the benchmark's "
        "back), the same flow as `crm_sync_per_lead` without the deployment's "
        "concurrency limit, and `noop`, a flow that does nothing (in this module, "
        "which imports only Prefect at the top). Every flow run is a new "
        "process, `python -m prefect.engine`, importing its flow by module path.",
        "- Runs are created by this process through Prefect's client "
        "(`create_flow_run_from_deployment`, as the API does) and their states "
        f"read every {POLL_S} s. Seconds per run are the server's: creation to "
        'end ("Running": start to end). `crm_sync` runs are given '
        "`idle_grace_seconds=0` and the default batch size (200).",
        "- CRM: the bundled sandbox as HubSpot (`orchestrator sandbox` on a free "
        "loopback port); the lead store is SQLite in the data dir whatever "
        "Prefect's database, fed with `leads.intake.submit_batch` (not measured).",
        "- CPU: `bench/cpu_time.py`'s ledger samples /proc every "
        f"{SAMPLE_S} s for the Prefect server's process tree, the PostgreSQL "
        "connections to Prefect's database and the sandbox. The flow runner "
        "is counted exactly from /proc before and after each window: its own "
        "CPU (polling, starting runs) and, as run processes, that of every "
        "run process it waited for (`cutime`, `cstime`), whole however short "
        "they lived; each window opens once the previous runs' processes are "
        "reaped. The in-process caller counts its own CPU over the calls "
        '(`time.process_time`). "Prefect total" is all of these; the '
        "sandbox (the CRM's side) is apart, and the run processes' share "
        "includes the flow's own work (for `crm_sync`, the sync itself).",
        "- Note: the machine's 2 cores are shared by all of these processes and "
        "by whatever else ran on the machine (see the load averages).",
        "",
        "## Per flow run: a flow that does nothing",
        "",
        *runs_table(results.measured),
        "",
        "## Per synced lead: one drain against one run per lead",
        "",
        *leads_table(results.measured),
        "",
        "## Conclusion",
        "",
        *conclusions(results.measured, os.cpu_count() or 1),
        "- So the outboxes are drained in batches: a flow run costs a new "
        "Python process (Prefect and the flow's connectors imported) and the "
        "server's bookkeeping of its states, logs and events, once per run "
        "whatever it syncs. A drain pays that once for a whole batch; one run "
        "per lead would pay it for every lead.",
    ]
    if results.problems:
        lines += ["", "## Problems", "", *(f"- {p}" for p in results.problems)]
    return lines


# Headlines --------------------------------------------------------------------------


def _ended(measured: Measured) -> str:
    """How the runs ended when not every one completed; else nothing."""
    if measured.all_completed or not measured.runs:
        return ""
    return f"; runs ended {dict(measured.states)}"


def headlines(plan: Plan, results: Results) -> list[Figure]:
    """Per Prefect database: a served `noop` run's seconds and CPU, CPU per lead.

    CPU is counted over each measurement's whole window, so it is one figure
    per measurement, divided by its runs or leads; seconds are each run's.
    """
    # Imported here: the flow runs import this module (see its docstring).
    from bench import headline

    figures = []
    for name in plan.databases:
        # `Measured.database` is the database as shown: SQLite, PostgreSQL.
        mine = {m.how: m for m in results.measured if m.database.lower() == name}
        why = next(
            (p for p in results.problems if p.startswith(f"{name}: ")), "not measured"
        )
        shown = next(iter(mine.values())).database if mine else name
        served = mine.get("deployment")
        label = f"{shown}: a served `noop` flow run, creation to end"
        cpu_label = f"{shown}: Prefect CPU per served `noop` flow run"
        if served is None or not served.durations:
            figures += [
                headline.skipped(label, why, unit="s"),
                headline.skipped(cpu_label, why, unit="CPU-s"),
            ]
        else:
            running = (
                f"RUNNING {statistics.median(served.running):.2f} s of it (median); "
                if served.running
                else ""
            )
            figures += [
                headline.measured(
                    label,
                    "s",
                    served.durations,
                    note=f"{running}{served.runs} runs one after another"
                    + _ended(served),
                ),
                headline.measured(
                    cpu_label,
                    "CPU-s",
                    [served.cpu_per(served.runs)],
                    note=f"the {served.runs} runs' window ÷ runs; "
                    f"{served.cpu_per(served.runs, (RUNS,)):.2f} of it the run's "
                    "process" + _ended(served),
                ),
            ]
        drain, alone = mine.get("drain"), mine.get("per-lead")
        per_drain = drain.leads // max(drain.runs, 1) if drain else plan.leads
        label = f"{shown}: Prefect CPU per synced lead, one `crm_sync` run per "
        if drain is None or not drain.leads:
            figures.append(headline.skipped(label + "drain", why, unit="CPU-ms"))
        else:
            figures.append(
                headline.measured(
                    f"{label}drain of {per_drain:,}",
                    "CPU-ms",
                    [1000 * drain.cpu_per(drain.leads)],
                    note=f"{drain.runs} drains' windows ÷ {drain.leads:,} leads"
                    + _ended(drain),
                )
            )
        if alone is None or not alone.leads:
            figures.append(headline.skipped(label + "lead", why, unit="CPU-ms"))
        else:
            figures.append(
                headline.measured(
                    label + "lead",
                    "CPU-ms",
                    [1000 * alone.cpu_per(alone.leads)],
                    note=f"{alone.runs} runs created together; their window ÷ "
                    f"{alone.leads:,} leads" + _ended(alone),
                )
            )
        times = (
            ratio(alone.cpu_per(alone.leads), drain.cpu_per(drain.leads))
            if drain and alone and drain.leads and alone.leads
            else None
        )
        label = f"{shown}: Prefect CPU per synced lead, one run per lead ÷ one drain"
        if times is None:
            figures.append(headline.skipped(label, why, unit="×"))
        else:
            figures.append(
                headline.measured(
                    label, "×", [times], note=f"drains of {per_drain:,} leads"
                )
            )
    return figures


# Command line ----------------------------------------------------------------------


def parse_plan(argv: list[str]) -> Plan:
    """The plan from the command line; `--quick` lowers every default size."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.orchestration",
        description="Measures Prefect's cost per flow run and per synced lead on "
        f"loopback and writes {RESULTS.relative_to(REPO_ROOT)}.",
    )
    parser.add_argument(
        "--databases",
        default=",".join(DATABASES),
        help=f"comma-separated, in order (default {','.join(DATABASES)})",
    )
    for name, most in MOST.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=int, metavar=f"1..{most}"
        )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: "
        + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in QUICK.items()),
    )
    args = parser.parse_args(argv)

    databases = tuple(dict.fromkeys(filter(None, args.databases.split(","))))
    if not databases or not set(databases) <= set(DATABASES):
        parser.error(f"--databases: choose from {','.join(DATABASES)}")
    sizes = QUICK if args.quick else FULL
    chosen = {}
    for name, most in MOST.items():
        given = getattr(args, name)
        if given is not None and not 1 <= given <= most:
            parser.error(f"--{name.replace('_', '-')} must be between 1 and {most:,}")
        chosen[name] = sizes[name] if given is None else given
    return Plan(databases=databases, **chosen)


def main(argv: list[str]) -> int:
    """Runs the benchmark, prints the report and writes it to `bench/results/`.

    Returns:
        0 when every run completed and every lead synced once, else 1.
    """
    if argv[:1] == [RUNNER_FLAG]:
        return runner_main()
    if argv[:1] == [CALLER_FLAG]:
        return caller_main(int(argv[1]))
    # A developer's own `ORCH_*` settings would change what is measured; only
    # where the test PostgreSQL is stays (the benchmark's database is made there).
    for name in [name for name in os.environ if name.startswith("ORCH_")]:
        if name != "ORCH_TEST_POSTGRES_URL":
            del os.environ[name]
    plan = parse_plan(argv)
    results = Results()
    run(plan, results)
    machine.publish(RESULTS, report(argv, plan, results))
    from bench import headline

    headline.record(
        "orchestration",
        argv,
        headlines(plan, results),
        report=RESULTS,
        smoke="--quick" in argv,
    )
    return 1 if results.problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
