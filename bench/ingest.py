"""Ingest benchmark: `POST /api/leads` at saturation and at fixed rates, all verified.

The issue's claim: at least 1,000 leads/s through `POST /api/leads` with `wrk`
on two cores while the drains are idle (and the figure with them running), and
p99 ≤ 50 ms at 500 leads/s. For each backend (SQLite, then PostgreSQL in a fresh
database on the server `ORCH_TEST_POSTGRES_URL` names, dropped afterwards):

1. saturation: `orchestrator api` alone with `ORCH_API_WORKERS` 1 and 2, `wrk`
   (Debian's package) at a few connection counts with `bench/wrk/post_leads.lua`,
   a new person a request; then once more beside the drains: `orchestrator up`
   on the same store, whose `crm_sync` runs drain the outbox to the CRM sandbox.
2. fixed rates: the open-loop generator of `bench.mixed_load` at rising rates;
   latency runs from each request's scheduled moment, so queueing counts.
3. verify: every lead answered 201 is looked up in the store, by id (wrk) or
   by e-mail (fixed rates).
4. stages: in this process, on the same store (filled to `--store-leads`
   first), the intake's own functions timed on the CPU, in groups the size the
   API's group commit made in a measured run, against the API's CPU per lead there.

Everything runs on this machine, on loopback; the load generators share its
cores with the server and the database.

    python -m bench.ingest [--backends sqlite,postgresql] [--quick] [--no-drains]

Exits 1 when a lead answered 201 is missing from the store or a part could not
run; missed targets are reported, not failed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import func
from sqlalchemy import select as sql_select
from sqlalchemy.engine import make_url

import api.routes.leads
import leads.changes
import leads.intake
from api.routes.leads import lead_intake
from bench import headline, machine
from bench.cpu_time import Ledger, Process, RoleOf, Table
from bench.crm_sync import running_stack
from bench.lead_api import lead
from bench.mixed_load import API_ROLE, Roles, Window, measure, stop_leftovers
from bench.server import (
    BENCH_RATE_LIMIT_PER_MINUTE,
    Backend,
    BackendUnavailable,
    Server,
    ServerFailed,
    api_server,
    postgresql_backend,
    sqlite_backend,
    upgrade_store,
)
from leads.collector import collect_less_often
from leads.intake import IntakeResult, _create_many, prepare
from leads.models import LeadInput
from leads.settings import DEFAULT_TENANT, Settings
from leads.store import Store
from leads.store.api_keys import create_key
from leads.store.statistics import refresh_statistics
from leads.store.tables import Lead

RESULTS = Path(__file__).parent / "results" / "ingest-latest.md"
PLOT = Path(__file__).parent / "results" / "ingest_latency.png"
WRK_SCRIPT = Path(__file__).parent / "wrk" / "post_leads.lua"
BACKENDS = ("sqlite", "postgresql")

TARGET_RATE = 1_000
TARGET_P99_MS = 50.0
TARGET_P99_AT = 500
# Documented, not measured here: https://docs.n8n.io/hosting/scaling/performance-benchmarking/
N8N_RATE = 220
P99_TARGET = (
    f"p99 ≤ {TARGET_P99_MS:.0f} ms at {TARGET_P99_AT} leads/s, no errors, "
    "≥ 98 % answered"
)
WRK_MISSING = (
    "wrk not found on the PATH (Debian's package `wrk`; `make bench` "
    "installs it): the saturation runs were skipped."
)

WRK_THREADS = 2
WRK_TIMEOUT_S = 10
WRK_WARMUP_S = 2
WRK_WARMUP_CONNECTIONS = 16
WRK_ROLE = "wrk (load generator)"
DATABASE_ROLE = "PostgreSQL: this database's connections"
# A fixed rate the server answers less than this share of is past saturation:
# the higher rates are not run (they would only pile up timeouts).
SATURATED_SHARE = 0.9
SAMPLE_S = 1.0
SETTLE_S = 2.0
DRAIN_START_TIMEOUT_S = 120.0
LOOKUP_CHUNK = 1_000
FILL_CHUNK = 1_000
GROUP_CLOSE_TIMEOUT_S = 60.0
# Taken in unmeasured first: the rules, the scorer and the statement caches
# load on first use, once per process, which the server has long done.
STAGE_WARMUP_LEADS = 50
NEW_LEAD_OUTCOMES = ("created", "possible_duplicate")
STAGES = ("parse", "validate", "clean", "match", "score", "store")


@dataclass(frozen=True)
class Plan:
    """What each backend is put through."""

    backends: tuple[str, ...]
    # ORCH_API_WORKERS of the saturation runs, and wrk's open connections.
    workers: tuple[int, ...]
    connections: tuple[int, ...]
    wrk_seconds: int
    drains: bool
    rates: tuple[int, ...]
    rate_seconds: int
    rate_workers: int
    store_leads: int
    stage_leads: int


FULL = Plan(
    backends=BACKENDS,
    workers=(1, 2),
    connections=(16, 64),
    wrk_seconds=10,
    drains=True,
    rates=(100, 250, 500, 750, 1000),
    rate_seconds=20,
    rate_workers=2,
    store_leads=50_000,
    stage_leads=2_000,
)
QUICK = Plan(
    backends=BACKENDS,
    workers=(1,),
    connections=(16,),
    wrk_seconds=3,
    drains=True,
    rates=(50, 100),
    rate_seconds=5,
    rate_workers=1,
    store_leads=2_000,
    stage_leads=200,
)


def _progress(message: str) -> None:
    print(f"[bench.ingest] {message}", file=sys.stderr, flush=True)


# wrk ---------------------------------------------------------------------------


class WrkFailed(RuntimeError):
    """wrk exited with an error or printed no result line; the message has why."""


@dataclass(frozen=True)
class WrkResult:
    """What the script's `done()` printed: counts, socket errors, latency in ms."""

    requests: int
    seconds: float
    accepted: int
    refused: int
    socket_errors: dict[str, int]
    latency_ms: dict[str, float]

    @property
    def rate(self) -> float:
        """Leads answered 201 a second."""
        return self.accepted / self.seconds if self.seconds > 0 else math.nan

    @property
    def errors(self) -> int:
        """Answers other than 201, and requests wrk gave up on or could not send."""
        return self.refused + sum(self.socket_errors.values())


RESULT_LINE = "ingest-result"
SOCKET_ERRORS = ("connect", "read", "write", "timeout")
LATENCIES = ("p50", "p90", "p95", "p99", "max")


def parse_wrk(output: str) -> WrkResult:
    """The result line `bench/wrk/post_leads.lua` prints when wrk is done.

    Raises:
        WrkFailed: no such line, or one without every field.
    """
    for line in output.splitlines():
        words = line.split()
        if words[:1] != [RESULT_LINE]:
            continue
        fields = dict(word.split("=", 1) for word in words[1:] if "=" in word)
        try:
            return WrkResult(
                requests=int(fields["requests"]),
                seconds=int(fields["duration_us"]) / 1e6,
                accepted=int(fields["accepted"]),
                refused=int(fields["refused"]),
                socket_errors={name: int(fields[name]) for name in SOCKET_ERRORS},
                latency_ms={
                    name: float(fields[f"{name}_us"]) / 1000 for name in LATENCIES
                },
            )
        except (KeyError, ValueError) as exc:
            raise WrkFailed(f"unreadable `{RESULT_LINE}` line: {line!r}") from exc
    raise WrkFailed(
        f"wrk printed no `{RESULT_LINE}` line (is {WRK_SCRIPT.name} the script?):\n"
        f"{output[-2000:]}"
    )


def run_wrk(
    wrk: str,
    base_url: str,
    key: str,
    connections: int,
    seconds: int,
    tag: str,
    ids: Path | None = None,
) -> WrkResult:
    """Runs wrk against `POST /api/leads` for `seconds` with `connections` open.

    Args:
        wrk: the wrk executable.
        base_url: the API's loopback address.
        key: a `write` key.
        connections: connections wrk keeps open (split over its threads).
        seconds: how long it sends.
        tag: letters and digits in every e-mail of the run.
        ids: where the script writes the ids of the leads answered 201
            (`<ids><thread>.txt`); none when not given.

    Raises:
        WrkFailed: wrk exited with an error, overran, or printed no result.
    """
    command = [
        wrk,
        f"-t{min(WRK_THREADS, connections)}",
        f"-c{connections}",
        f"-d{seconds}s",
        f"--timeout={WRK_TIMEOUT_S}s",
        f"-s{WRK_SCRIPT}",
        base_url,
        "--",
        key,
        tag,
        *([str(ids)] if ids is not None else []),
    ]
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=seconds + WRK_TIMEOUT_S + 30,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkFailed(f"wrk overran {seconds} s by more than 40 s") from exc
    if done.returncode != 0:
        raise WrkFailed(f"wrk exited with {done.returncode}: {done.stderr[-2000:]}")
    return parse_wrk(done.stdout)


@dataclass
class WrkRun:
    """One saturation run: the set-up, wrk's figures, CPU by role, what was stored."""

    backend: str
    workers: int
    connections: int
    drains: bool
    tag: str
    result: WrkResult | None = None
    load_before: str = ""
    cpu: Counter[str] = field(default_factory=Counter)
    machine_cpu_s: float = 0.0
    wall_s: float = 0.0
    ids: list[str] = field(default_factory=list)
    stored: int | None = None
    transactions: int | None = None
    synced: tuple[int, int] | None = None
    drains_seen: bool = False
    store_before: int = 0

    @property
    def accepted(self) -> int:
        return self.result.accepted if self.result else 0

    def cpu_ms(self, role: str) -> float:
        """CPU ms `role` used per lead answered 201."""
        return 1000 * self.cpu.get(role, 0.0) / self.accepted if self.accepted else 0


def _read_ids(prefix: Path) -> list[str]:
    ids = []
    for path in sorted(prefix.parent.glob(f"{prefix.name}*.txt")):
        ids += path.read_text(encoding="utf-8").split()
    return ids


def _roles(
    database: str, *, api_port: int | None = None, stack: int | None = None
) -> RoleOf:
    """`bench.mixed_load`'s roles, with wrk named too."""
    roles = Roles(database, stack=stack, api_port=api_port)

    def role_of(process: Process, table: Table) -> str | None:
        if WRK_SCRIPT.name in process.command:
            return WRK_ROLE
        return roles(process, table)

    return role_of


@contextmanager
def _sampling(ledger: Ledger) -> Iterator[None]:
    """Reads /proc every second for `ledger` (a no-op while its window is shut)."""
    finished = threading.Event()

    def sample() -> None:
        while not finished.wait(SAMPLE_S):
            ledger.sample()

    sampler = threading.Thread(target=sample, name="cpu sampler", daemon=True)
    sampler.start()
    try:
        yield
    finally:
        finished.set()
        sampler.join(timeout=10)


def wrk_window(
    run: WrkRun,
    wrk: str,
    server: tuple[str, str],
    store_url: str,
    seconds: int,
    role_of: RoleOf,
) -> None:
    """Runs wrk once into `run`: CPU by role, and which leads answered 201 are stored.

    Args:
        run: where the figures go.
        wrk: the wrk executable.
        server: the API's loopback address and a `write` key.
        store_url: the store the API writes to.
        seconds: how long wrk sends.
        role_of: names the processes whose CPU counts.

    Raises:
        WrkFailed: wrk failed.
    """
    base_url, key = server
    ledger = Ledger(role_of)
    run.load_before = machine.load_average()
    run.store_before = count_leads(store_url)
    ids_folder = Path(tempfile.mkdtemp(prefix="orch_bench_wrk_"))
    try:
        prefix = ids_folder / "ids-"
        with _sampling(ledger):
            ledger.start()
            try:
                run.result = run_wrk(
                    wrk, base_url, key, run.connections, seconds, run.tag, prefix
                )
            finally:
                ledger.stop()
        run.cpu, run.machine_cpu_s, run.wall_s = ledger.used()
        run.ids = _read_ids(prefix)
    finally:
        shutil.rmtree(ids_folder, ignore_errors=True)
    run.stored, run.transactions = stored_of(store_url, Lead.id, run.ids)


# The store -----------------------------------------------------------------------


def stored_of(store_url: str, column: Any, values: list[str]) -> tuple[int, int]:
    """How many of `values` (ids or e-mails) name a stored lead of tenant `default`,
    and how many transactions created them (leads created together share one
    `created_at`).
    """
    found: list[Any] = []
    store = Store(store_url)
    try:
        with store.read(DEFAULT_TENANT) as scope:
            for start in range(0, len(values), LOOKUP_CHUNK):
                chunk = values[start : start + LOOKUP_CHUNK]
                found += scope.session.scalars(
                    scope.select(Lead)
                    .with_only_columns(Lead.created_at)
                    .where(column.in_(chunk))
                ).all()
    finally:
        store.dispose()
    return len(found), len(set(found))


def count_leads(store_url: str, synced: bool = False) -> int:
    """Leads in the store (of every tenant), or only those synced to the CRM."""
    query = sql_select(func.count()).select_from(Lead)
    if synced:
        query = query.where(Lead.crm_sync_status == "synced")
    store = Store(store_url)
    try:
        with store.read_across_tenants() as session:
            return int(session.scalar(query) or 0)
    finally:
        store.dispose()


def _database(backend: Backend) -> str:
    return make_url(backend.store_url).database or ""


# The runs ------------------------------------------------------------------------


@dataclass
class BackendResults:
    """Everything measured on one backend, and what went wrong on the way."""

    name: str
    label: str = ""
    wrk: list[WrkRun] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    transactions: dict[str, int] = field(default_factory=dict)
    store_before: dict[str, int] = field(default_factory=dict)
    filled: int = 0
    stages: list[Stages] = field(default_factory=list)
    leads_at_end: int | None = None
    leftovers: list[str] = field(default_factory=list)
    # API starts that failed and were tried again: reported, not failures.
    retried: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)

    @property
    def accepted(self) -> int:
        """Leads answered 201 in every measured run."""
        return sum(len(r.ids) for r in self.wrk) + sum(len(w.ok) for w in self.windows)

    @property
    def stored(self) -> int:
        return sum(r.stored or 0 for r in self.wrk) + sum(
            w.stored or 0 for w in self.windows
        )


@contextmanager
def _part(results: BackendResults, name: str) -> Iterator[None]:
    """Times a part; a failure in it is noted and the next part still runs."""
    started = time.monotonic()
    try:
        yield
    except (ServerFailed, WrkFailed) as exc:
        problem = f"{name}: {exc}".replace("\n", " / ")
        _progress(f"[{results.name}] {problem}")
        results.problems.append(problem)
    finally:
        results.durations[name] = time.monotonic() - started


def _started(stack: ExitStack, backend: Backend, results: BackendResults) -> Server:
    """`api_server` on the backend, tried a second time if it does not come up.

    On a busy machine uvicorn's supervisor may take a worker process slow to
    start for dead and start another, until the health check gives up.
    """
    try:
        return stack.enter_context(api_server(backend))
    except ServerFailed as exc:
        first = str(exc).splitlines()[0]
        _progress(f"[{results.name}] the API did not start ({first}); once more")
        results.retried.append(first)
        return stack.enter_context(api_server(backend))


def saturation(
    backend: Backend, plan: Plan, wrk: str, run_id: str, results: BackendResults
) -> None:
    """wrk at each connection count against the API alone, per worker count."""
    for workers in plan.workers:
        backend.settings["ORCH_API_WORKERS"] = str(workers)
        with ExitStack() as stack:
            server = _started(stack, backend, results)
            port = int(server.base_url.rsplit(":", 1)[1])
            run_wrk(
                wrk,
                server.base_url,
                server.key,
                WRK_WARMUP_CONNECTIONS,
                WRK_WARMUP_S,
                f"{run_id}w{workers}",
            )
            for connections in plan.connections:
                run = WrkRun(
                    results.name,
                    workers,
                    connections,
                    False,
                    f"{run_id}a{workers}c{connections}",
                )
                wrk_window(
                    run,
                    wrk,
                    (server.base_url, server.key),
                    backend.store_url,
                    plan.wrk_seconds,
                    _roles(_database(backend), api_port=port),
                )
                results.wrk.append(run)
                rate = run.result.rate if run.result else math.nan
                _progress(
                    f"[{results.name}] wrk, {workers} API processes, "
                    f"{connections} connections: {rate:,.0f} leads/s"
                )


def _await_sync(store_url: str, synced: int) -> bool:
    """Waits until more leads than `synced` are synced to the CRM sandbox."""
    deadline = time.monotonic() + DRAIN_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if count_leads(store_url, synced=True) > synced:
            return True
        time.sleep(SAMPLE_S)
    return False


def beside_drains(
    backend: Backend, plan: Plan, wrk: str, run_id: str, results: BackendResults
) -> None:
    """wrk against `orchestrator up` on the same store while its drains sync."""
    workers, connections = max(plan.workers), max(plan.connections)
    run = WrkRun(results.name, workers, connections, True, f"{run_id}d")
    settings = {
        **backend.settings,
        "ORCH_API_WORKERS": str(workers),
        "ORCH_RATE_LIMIT_PER_MINUTE": str(BENCH_RATE_LIMIT_PER_MINUTE),
    }
    try:
        synced = count_leads(backend.store_url, synced=True)
        with running_stack(backend.data_dir, **settings) as stack:
            base_url = str(stack.api.base_url).rstrip("/")
            _progress(f"[{results.name}] stack up; waiting for the drains to sync")
            # Its leads (and the backlog of the runs before) are owed a sync:
            # their `leads.pending` events start `crm_sync` runs.
            run_wrk(
                wrk,
                base_url,
                stack.key,
                WRK_WARMUP_CONNECTIONS,
                WRK_WARMUP_S,
                f"{run_id}dw",
            )
            run.drains_seen = _await_sync(backend.store_url, synced)
            before = count_leads(backend.store_url, synced=True)
            wrk_window(
                run,
                wrk,
                (base_url, stack.key),
                backend.store_url,
                plan.wrk_seconds,
                _roles(_database(backend), stack=stack.process.pid),
            )
            run.synced = (before, count_leads(backend.store_url, synced=True))
    finally:
        results.leftovers += stop_leftovers(backend.data_dir)
    results.wrk.append(run)
    _progress(
        f"[{results.name}] wrk beside the drains: "
        f"{run.result.rate if run.result else math.nan:,.0f} leads/s"
    )


def saturated(window: Window) -> bool:
    """Whether the server answered clearly less than the rate offered."""
    return not window.achieved >= SATURATED_SHARE * window.rate


def fixed_rates(
    backend: Backend, plan: Plan, run_id: str, results: BackendResults
) -> None:
    """The open-loop generator at each rate in turn, until the server saturates."""
    backend.settings["ORCH_API_WORKERS"] = str(plan.rate_workers)
    with ExitStack() as stack:
        server = _started(stack, backend, results)
        port = int(server.base_url.rsplit(":", 1)[1])
        ledger = Ledger(_roles(_database(backend), api_port=port))
        with _sampling(ledger):
            for rate in plan.rates:
                # The name goes into a file name: no slash.
                window = Window(
                    f"rate{rate}", rate, plan.rate_seconds, f"r{run_id}x{rate}x"
                )
                results.store_before[window.name] = count_leads(backend.store_url)
                measure(window, server.base_url, server.key, ledger, backend.data_dir)
                results.windows.append(window)
                _progress(
                    f"[{results.name}] {rate}/s offered: {window.achieved:,.0f}/s, "
                    f"p99 {window.latency(99):,.1f} ms"
                )
                if saturated(window):
                    break
                time.sleep(SETTLE_S)


def verify(backend: Backend, results: BackendResults) -> None:
    """Looks up every lead the generator was answered 201 for (wrk's are looked up
    after each run); counts the transactions that made them."""
    for window in results.windows:
        emails = [lead(window.prefix, i)["email"] for i in window.ok]
        window.stored, transactions = stored_of(backend.store_url, Lead.email, emails)
        results.transactions[window.name] = transactions
    results.leads_at_end = count_leads(backend.store_url)


# CPU by stage ------------------------------------------------------------------------


@dataclass
class Stages:
    """The intake's CPU per lead by stage, in groups like those of one measured run.

    `cpu_us` holds this process's CPU (µs a lead) in each stage; `api_us` the
    API's CPU per lead in the run it is set beside, `database_us` what the
    PostgreSQL connections used per lead while the groups were written.
    """

    reference: str
    group: int
    leads: int
    store_leads: int
    cpu_us: dict[str, float] = field(default_factory=dict)
    api_us: float | None = None
    database_us: float | None = None
    groups_written: float = 0.0
    refused: int = 0
    reference_store: int = 0

    @property
    def total_us(self) -> float:
        return sum(self.cpu_us.get(stage, 0.0) for stage in STAGES)

    @property
    def framework_us(self) -> float | None:
        """The API's CPU per lead less the stages: HTTP, routing, auth, answer."""
        return None if self.api_us is None else self.api_us - self.total_us


Function = TypeVar("Function", bound=Callable[..., Any])


def _stopwatch(spent: Counter[str], stage: str, function: Function) -> Function:
    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent[stage] += time.thread_time() - started

    return timed  # type: ignore[return-value]


# Where the intake looks each stage's function up when it calls it: timed
# there, the product's code runs unchanged. `write` is a group's whole work
# (`lead_intake`'s), so `store` is it less `match` and `score`.
TIMED = (
    (api.routes.leads, "submit_together", "write"),
    (leads.intake, "_without_matches", "match"),
    (leads.changes, "apply_score", "score"),
    (leads.changes, "derive_warnings", "score"),
)


@contextmanager
def _timing(spent: Counter[str]) -> Iterator[None]:
    with ExitStack() as undo:
        for module, name, stage in TIMED:
            original = getattr(module, name)
            setattr(module, name, _stopwatch(spent, stage, original))
            undo.callback(setattr, module, name, original)
        yield


@contextmanager
def _cpu(spent: Counter[str], stage: str) -> Iterator[None]:
    started = time.thread_time()
    yield
    spent[stage] += time.thread_time() - started


async def _submit_in_groups(
    store: Store, key: tuple[str, str], values: list[dict[str, Any]], group: int
) -> tuple[list[Any], float]:
    """Hands `values` to the API's group commit `group` at a time, as requests would.

    Returns:
        Each lead's outcome, and the leads the group commit wrote a group.
    """
    intake = lead_intake(store)
    outcomes: list[Any] = []
    for start in range(0, len(values), group):
        chunk = values[start : start + group]
        outcomes += await asyncio.gather(
            *(intake.submit(key, item) for item in chunk), return_exceptions=True
        )
    await intake.aclose(GROUP_CLOSE_TIMEOUT_S)
    return outcomes, intake.items / max(intake.groups, 1)


def fill_store(store_url: str, target: int, tag: str) -> int:
    """Adds invented people until the store holds `target` leads; how many now.

    They go in the way the intake inserts leads it found new (`_create_many`:
    the leads, their blocking keys, timeline events and outbox rows), without
    matching each against the store first: they are all new people, and
    matching every one would take minutes the measured runs need. The
    planner's statistics are then refreshed as after a batch.
    """
    region = Settings.model_fields["default_region"].default
    have = count_leads(store_url)
    store = Store(store_url)
    try:
        for chunk in range(math.ceil(max(target - have, 0) / FILL_CHUNK)):
            size = min(FILL_CHUNK, target - have - chunk * FILL_CHUNK)
            items = [
                (None, prepare(lead(f"{tag}f{chunk}x", i), region)) for i in range(size)
            ]
            with store.write(DEFAULT_TENANT) as scope:
                _create_many(scope, items, "batch", [None] * size, [None] * size)
        refresh_statistics(store)
    finally:
        store.dispose()
    return count_leads(store_url)


def measure_stages(backend: Backend, count: int, group: int, tag: str) -> Stages:
    """Times each stage of `count` new leads' intake, `group` at a time, in here.

    Parse, validate and clean run in a loop over all the leads, as the API runs
    them once per request; the rest runs inside the group commit's worker
    thread, timed by `time.thread_time()` around the product's own functions.
    """
    # The server's region: it runs without the developer's ORCH_* settings.
    region = Settings.model_fields["default_region"].default
    # And its cycle collector, which the API sets as it starts.
    collect_less_often()
    bodies = [json.dumps(lead(tag, i)).encode() for i in range(count)]
    spent: Counter[str] = Counter()
    store = Store(backend.store_url)
    try:
        key = create_key(store, DEFAULT_TENANT, "write", "bench-stages").info.id
        warm = [prepare(lead(f"{tag}w", i), region) for i in range(STAGE_WARMUP_LEADS)]
        asyncio.run(_submit_in_groups(store, (DEFAULT_TENANT, key), warm, group))
        stages = Stages("", group, count, count_leads(backend.store_url))
        with _cpu(spent, "parse"):
            parsed = [json.loads(body) for body in bodies]
        with _cpu(spent, "validate"):
            inputs = [LeadInput.model_validate(item) for item in parsed]
        with _cpu(spent, "clean"):
            values = [prepare(item, region) for item in inputs]
        ledger = Ledger(_roles(_database(backend)))
        with _timing(spent):
            ledger.start()
            outcomes, stages.groups_written = asyncio.run(
                _submit_in_groups(store, (DEFAULT_TENANT, key), values, group)
            )
            ledger.stop()
    finally:
        store.dispose()
    if not spent["write"]:
        raise ServerFailed(
            "lead_intake did not call submit_together: the intake changed; "
            "update bench.ingest.TIMED"
        )
    stages.refused = sum(
        not (isinstance(o, IntakeResult) and o.outcome in NEW_LEAD_OUTCOMES)
        for o in outcomes
    )
    spent["store"] = spent["write"] - spent["match"] - spent["score"]
    stages.cpu_us = {stage: 1e6 * spent[stage] / count for stage in STAGES}
    database = ledger.used()[0].get(DATABASE_ROLE)
    stages.database_us = 1e6 * database / count if database is not None else None
    return stages


class Reference(NamedTuple):
    """A run the stages are set beside: what it was, the leads its transactions
    held, the API's CPU per lead in it (µs) and the leads the store held first."""

    name: str
    group: int
    api_us: float
    store_before: int


def rate_reference(results: BackendResults) -> Reference | None:
    """The fixed rate of the latency target, or the lowest one run."""
    paced = [w for w in results.windows if w.ok]
    if not paced:
        return None
    window = next((w for w in paced if w.rate == TARGET_P99_AT), paced[0])
    transactions = results.transactions.get(window.name) or len(window.ok)
    return Reference(
        f"{window.rate:,.0f}/s fixed rate",
        round(len(window.ok) / transactions),
        1e6 * window.cpu.get(API_ROLE, 0.0) / len(window.ok),
        results.store_before.get(window.name, 0),
    )


def wrk_reference(results: BackendResults) -> Reference | None:
    """The saturation run of one API process at the most connections."""
    alone = [r for r in results.wrk if not r.drains and r.workers == 1 and r.accepted]
    if not alone:
        return None
    run = max(alone, key=lambda r: r.connections)
    return Reference(
        f"wrk, 1 API process, {run.connections} connections",
        round(len(run.ids) / max(run.transactions or 1, 1)),
        1000 * run.cpu_ms(API_ROLE),
        run.store_before,
    )


NO_REFERENCE = Reference("no run to compare", 1, math.nan, 0)


def stages_part(
    backend: Backend, plan: Plan, tag: str, results: BackendResults, found: Reference
) -> None:
    """Measures the stages in groups the size `found` had, beside its API CPU.

    Run right after the reference run's part, so the store has grown little
    since (matching's candidates grow with it).
    """
    stages = measure_stages(backend, plan.stage_leads, max(found.group, 1), tag)
    stages.reference, stages.reference_store = found.name, found.store_before
    stages.api_us = None if math.isnan(found.api_us) else found.api_us
    results.stages.append(stages)
    _progress(
        f"[{results.name}] stages beside {found.name}: {stages.total_us:,.0f} µs a lead"
    )


# The plot and the report -------------------------------------------------------------


def plot(results: list[BackendResults], path: Path) -> str:
    """Draws p50 and p99 against the offered rate, a line per backend; says what."""
    drawn = [(r.name, r.windows) for r in results if r.windows]
    if not drawn:
        return "no plot: no fixed-rate window ran"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not installed (`pip install -e '.[bench]'`)"
    figure, axes = plt.subplots(figsize=(7.5, 4.5))
    for (name, windows), colour in zip(drawn, ("tab:blue", "tab:orange"), strict=False):
        offered = [w.rate for w in windows]
        for share, style in ((50, "--"), (99, "-")):
            axes.plot(
                offered,
                [w.latency(share) for w in windows],
                style,
                marker="o",
                color=colour,
                label=f"{name} p{share}",
            )
    axes.axhline(
        TARGET_P99_MS,
        color="tab:red",
        linewidth=1,
        label=f"p99 target ({TARGET_P99_MS:.0f} ms)",
    )
    axes.set_yscale("log")
    axes.set_xlabel("offered load (leads/s, open loop)")
    axes.set_ylabel("latency from scheduled send (ms)")
    axes.set_title("POST /api/leads: latency against offered load")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return f"plot: `{path.name}` (p50 dashed, p99 solid; the red line is the target)"


def _ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:,.1f}"


def _verdict(met: bool) -> str:
    return "**met**" if met else "**missed**"


def best_idle(results: BackendResults) -> WrkRun | None:
    """The wrk run against the API alone that answered the most leads a second."""
    idle = [run for run in results.wrk if not run.drains and run.result]
    if not idle:
        return None
    return max(idle, key=lambda run: run.accepted / run.result.seconds)


def p99_target_met(window: Window) -> bool:
    """The latency target: p99 within it, no errors, the rate answered in full."""
    return (
        window.latency(99) <= TARGET_P99_MS
        and not window.errors
        and window.achieved >= 0.98 * window.rate
    )


def targets_table(results: list[BackendResults]) -> list[str]:
    """Each target per backend, with the figure that decides it."""
    lines = [
        "| Target | Backend | Measured | Verdict |",
        "| --- | --- | --- | --- |",
    ]
    for r in results:
        best = best_idle(r)
        if best is not None:
            rate = best.result.rate if best.result else math.nan
            lines.append(
                f"| ≥ {TARGET_RATE:,} leads/s with wrk, drains idle | {r.name} "
                f"| {rate:,.0f} leads/s (`ORCH_API_WORKERS={best.workers}`, "
                f"{best.connections} connections) | {_verdict(rate >= TARGET_RATE)} |"
            )
        else:
            lines.append(
                f"| ≥ {TARGET_RATE:,} leads/s with wrk, drains idle | {r.name} "
                "| not measured | – |"
            )
        beside = [run for run in r.wrk if run.drains and run.result]
        for run in beside:
            rate = run.result.rate if run.result else math.nan
            lines.append(
                f"| (the same, drains running: no figure set) | {r.name} "
                f"| {rate:,.0f} leads/s | {_verdict(rate >= TARGET_RATE)} against "
                f"{TARGET_RATE:,} |"
            )
        window = next((w for w in r.windows if w.rate == TARGET_P99_AT), None)
        if window is None:
            lines.append(
                f"| p99 ≤ {TARGET_P99_MS:.0f} ms at {TARGET_P99_AT} leads/s "
                f"| {r.name} | not measured | – |"
            )
            continue
        errors = sum(window.errors.values())
        lines.append(
            f"| p99 ≤ {TARGET_P99_MS:.0f} ms at {TARGET_P99_AT} leads/s | {r.name} "
            f"| p99 {_ms(window.latency(99))} ms, {window.achieved:,.0f}/s answered, "
            f"{errors} errors | {_verdict(p99_target_met(window))} |"
        )
    return lines


def wrk_table(results: list[BackendResults]) -> list[str]:
    """One row per wrk run: throughput, latency, errors, CPU per lead."""
    lines = [
        "| Backend | API processes | Drains | Connections | Requests | Leads/s "
        "(201) | p50 ms | p90 ms | p95 ms | p99 ms | max ms | Non-201 "
        "| Socket errors | API CPU ms/lead | PostgreSQL CPU ms/lead "
        "| Leads a transaction | Store before | Load before |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        for run in r.wrk:
            if run.result is None:
                continue
            w = run.result
            errors = ", ".join(
                f"{n} {name}" for name, n in w.socket_errors.items() if n
            )
            database = run.cpu_ms(DATABASE_ROLE) if r.name == "postgresql" else None
            per_transaction = (
                f"{len(run.ids) / run.transactions:.1f}" if run.transactions else "–"
            )
            lines.append(
                f"| {r.name} | {run.workers} | {'running' if run.drains else 'idle'} "
                f"| {run.connections} | {w.requests:,} | {w.rate:,.0f} | "
                + " | ".join(_ms(w.latency_ms[name]) for name in LATENCIES)
                + f" | {w.refused} | {errors or 0} | {run.cpu_ms(API_ROLE):.2f} "
                f"| {'–' if database is None else f'{database:.2f}'} "
                f"| {per_transaction} | {run.store_before:,} | {run.load_before} |"
            )
    return lines


def drains_section(results: list[BackendResults]) -> list[str]:
    """What ran beside the drains run, and who used the CPU in it."""
    lines: list[str] = []
    for r in results:
        for run in r.wrk:
            if not run.drains or run.result is None:
                continue
            before, after = run.synced or (0, 0)
            span = max(run.wall_s, 1e-9)
            lines += [
                "",
                f"{r.name}: leads synced to the CRM sandbox {before:,} → {after:,} "
                f"during the {run.wall_s:.0f} s window "
                f"({(after - before) / span:,.0f}/s; drains seen syncing before "
                f"it began: {'yes' if run.drains_seen else 'NO'}).",
                "",
                "| Process | CPU s | Cores busy |",
                "| --- | ---: | ---: |",
                *(
                    f"| {role} | {seconds:.1f} | {seconds / span:.2f} |"
                    for role, seconds in run.cpu.most_common()
                ),
                f"| **machine, all cores** | {run.machine_cpu_s:.1f} "
                f"| {run.machine_cpu_s / span:.2f} |",
            ]
    return lines


def rates_table(results: list[BackendResults]) -> list[str]:
    """One row per fixed-rate window."""
    lines = [
        "| Backend | Offered | Sent | 201 | Achieved | p50 ms | p95 ms | p99 ms "
        "| max ms | Errors | Sent late p99 ms | API CPU ms/lead "
        "| Leads a transaction | Store before | Load before |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: "
        "| ---: | ---: | ---: | --- |",
    ]
    for r in results:
        for w in r.windows:
            errors = ", ".join(f"{n} {kind}" for kind, n in w.errors.items()) or "0"
            transactions = r.transactions.get(w.name)
            api = 1000 * w.cpu.get(API_ROLE, 0.0) / len(w.ok) if w.ok else math.nan
            lines.append(
                f"| {r.name} | {w.rate:,.0f}/s × {w.seconds:.0f} s | {len(w.shots):,} "
                f"| {len(w.ok):,} | {w.achieved:,.1f}/s | {_ms(w.latency(50))} "
                f"| {_ms(w.latency(95))} | {_ms(w.latency(99))} "
                f"| {_ms(w.latency(100))} | {errors} | {_ms(w.late(99))} "
                f"| {_ms(api)} "
                f"| {len(w.ok) / transactions if transactions else math.nan:.1f} "
                f"| {r.store_before.get(w.name, 0):,} | {w.load_before} |"
            )
    return lines


def stored_lines(results: list[BackendResults]) -> list[str]:
    """Accepted against stored, per backend and run."""
    lines = []
    for r in results:
        runs = [
            f"wrk {run.tag}: {len(run.ids):,}/{run.stored or 0:,}"
            for run in r.wrk
            if run.result
        ] + [f"{w.rate:,.0f}/s: {len(w.ok):,}/{w.stored or 0:,}" for w in r.windows]
        unlisted = [
            f"wrk {run.tag} counted {run.accepted:,} answers 201 but listed "
            f"{len(run.ids):,} ids"
            for run in r.wrk
            if run.result and run.accepted != len(run.ids)
        ]
        lines.append(
            f"- {r.name}: accepted {r.accepted:,}, stored {r.stored:,}, missing "
            f"{r.accepted - r.stored:,}; the store held {r.leads_at_end or 0:,} "
            f"leads after the runs. Per run (accepted/stored): {'; '.join(runs)}."
            + (f" Mismatch: {'; '.join(unlisted)}." if unlisted else "")
        )
    return lines


def stages_table(stages: list[Stages]) -> list[str]:
    """µs of CPU per lead by stage, a column per reference run."""
    if not stages:
        return ["Not measured."]
    lines = [
        "| Stage | "
        + " | ".join(
            f"{s.reference} (store {s.reference_store:,}): groups of {s.group} "
            f"({s.groups_written:.1f} written), store {s.store_leads:,}"
            for s in stages
        )
        + " |",
        "| --- |" + " ---: |" * len(stages),
    ]
    rows: list[tuple[str, Callable[[Stages], float | None]]] = [
        *((stage, functools.partial(_stage_us, stage=stage)) for stage in STAGES),
        ("**sum of the stages**", lambda s: s.total_us),
        ("HTTP and framework (API measured − sum)", lambda s: s.framework_us),
        ("**API process, measured in the run**", lambda s: s.api_us),
        ("PostgreSQL connections (another process)", lambda s: s.database_us),
    ]
    for label, value in rows:
        cells = []
        for s in stages:
            found = value(s)
            cells.append("–" if found is None else f"{found:,.0f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _stage_us(stages: Stages, stage: str) -> float:
    return stages.cpu_us.get(stage, 0.0)


def report(
    argv: list[str],
    plan: Plan,
    results: list[BackendResults],
    loads: dict[str, str],
    notes: list[str],
) -> str:
    """The Markdown report: command, machine, method, tables, targets."""
    stages = [s for r in results for s in r.stages]
    lines = [
        *machine.heading("Ingest benchmark", "bench.ingest", argv),
        *(f"- {label}: {value}" for label, value in machine.describe()),
        "- Load average (1, 5, 15 min): "
        + "; ".join(f"{when} {value}" for when, value in loads.items())
        + "; before each run in its row. Other work shares this machine.",
        *(f"- Store, {r.name}: {r.label}" for r in results if r.label),
        "- Durations: "
        + "; ".join(
            f"{r.name} "
            + ", ".join(f"{part} {s:.0f} s" for part, s in r.durations.items())
            for r in results
        ),
        "",
        "## Method",
        "",
        "- Server: `orchestrator api --host 127.0.0.1 --port <free port>` after "
        "`orchestrator db upgrade`, `ORCH_API_WORKERS` as in each row, "
        f"`ORCH_RATE_LIMIT_PER_MINUTE={BENCH_RATE_LIMIT_PER_MINUTE}` (the limiter "
        "still runs and charges each request), other settings at their defaults; "
        "every request sends a `write` key of tenant `default`. One store per "
        f"backend, filled first to {plan.store_leads:,} invented people (made "
        "like wrk's; inserted 1,000 a transaction the way the intake inserts new "
        "leads, with blocking keys, timeline and outbox rows, but not matched "
        "against each other), so every run meets a store at least that big; it "
        "grows through the runs ('Store before'). Every invented address is at "
        "example.com, so the surname-and-domain blocking key gives each new lead "
        "candidates that grow with the store, as a common mail domain would.",
        f"- Saturation: `wrk -t{WRK_THREADS} -c<connections> -d{plan.wrk_seconds}s "
        f"--timeout={WRK_TIMEOUT_S}s -s bench/wrk/post_leads.lua` after a "
        f"{WRK_WARMUP_S} s warm-up at {WRK_WARMUP_CONNECTIONS} connections; each "
        "request a new person (e-mail unique by run tag, thread and count; names "
        "and companies invented letters). wrk is closed loop: its latencies are "
        "per answered request at that concurrency. Leads/s counts answers 201.",
        "- Drains idle: only the API runs. Drains running: `orchestrator up` on "
        "the same store (Prefect server on SQLite, flow runner, API, the CRM "
        "sandbox as HubSpot); after a warm-up the window began once its "
        "`crm_sync` runs were seen syncing leads (the runs before left a backlog "
        "in the outbox).",
        "- CPU: /proc of every process before, during (every second) and after "
        "each window, by role (`bench.cpu_time`, `bench.mixed_load.Roles`); the "
        "API is the server and its worker processes. Per lead = CPU s ÷ answers "
        "201. 'Leads a transaction': leads answered 201 ÷ distinct `created_at` "
        "among them (leads the group commit inserts together share one).",
        f"- Fixed rates: `bench.mixed_load`'s open-loop generator in a process of "
        f"its own (`ORCH_API_WORKERS={plan.rate_workers}`), new leads "
        "(`bench.lead_api.lead`) at each rate for "
        f"{plan.rate_seconds} s after 5 s of unmeasured warm-up at the same rate; "
        "latency from each request's scheduled moment to its full answer (no "
        "coordinated omission); errors are anything but 201, timeouts (30 s) "
        f"included. The ladder stops after a rate answered below "
        f"{SATURATED_SHARE:.0%} of the offer. The generator shares the two cores "
        "with the server and the database.",
        "- Stored: each id wrk was answered 201 with, and each e-mail the "
        "generator was answered 201 for, looked up in the store afterwards.",
        "- Stages: in the benchmark's process (its cycle collector set as the "
        "API sets its own), right after the reference run's "
        "part (the wrk runs; the fixed rates), on the same store with the "
        f"servers stopped: {STAGE_WARMUP_LEADS} leads unmeasured, then "
        f"{plan.stage_leads:,} new leads timed with `time.thread_time()`: "
        "parse = `json.loads` of the body; validate = `LeadInput.model_validate` "
        "(FastAPI does both its own way in the server: the nearest "
        "equivalent); clean = `prepare`; then the API's own group commit "
        "(`api.routes.leads.lead_intake`) given the leads a group at a time, the "
        "size the reference run's transactions had; match = `_without_matches` "
        "(fuzzy candidates, their queries, the comparisons); score = "
        "`apply_score` + `derive_warnings`; store = the rest of "
        "`submit_together`: e-mail key lookups and locks, the multi-row INSERTs "
        "(leads, blocking keys, timeline, outbox), the calls' audit rows and the "
        "commit. On PostgreSQL the database's own CPU is another process, shown "
        "apart. 'HTTP and framework' is the API's CPU per lead in the reference "
        "run less the stages: uvicorn, routing, the key check, the rate limiter, "
        "the answer, the thread hop, logging.",
        "",
        "## Targets",
        "",
        *targets_table(results),
        "",
        f"Reference, documented and not measured here: n8n's documentation gives "
        f"about {N8N_RATE} workflow executions/s for a webhook workflow on one "
        "instance of 2 vCPUs (AWS c5a.large), "
        "https://docs.n8n.io/hosting/scaling/performance-benchmarking/.",
        "",
        "## Saturation (wrk)",
        "",
        *(wrk_table(results) if any(r.wrk for r in results) else ["Not measured."]),
        *drains_section(results),
        "",
        "## Fixed rates (open loop)",
        "",
        *(
            rates_table(results)
            if any(r.windows for r in results)
            else ["Not measured."]
        ),
        "",
        notes[0] if notes else "",
        "",
        "## Every accepted lead stored?",
        "",
        *stored_lines(results),
        "",
        "## CPU per lead by stage (µs)",
    ]
    for r in results:
        lines += [
            "",
            f"{r.name} (each column: the run it is set beside, the leads the "
            "store held when that run began, the group size, and the leads the "
            "store held when the stages were timed):",
            "",
            *stages_table(r.stages),
        ]
    if any(s.refused for s in stages):
        lines += [
            "",
            "Leads not created as new in the stage runs: "
            + ", ".join(f"{s.reference}: {s.refused}" for s in stages if s.refused),
        ]
    problems = [
        *notes[1:],
        *(f"{r.name}: {p}" for r in results for p in r.problems),
        *(
            f"{r.name}: still running after the stack stopped, stopped by pid: {p}"
            for r in results
            for p in r.leftovers
        ),
        *(
            f"{r.name}: an API start failed and was tried again: {p}"
            for r in results
            for p in r.retried
        ),
    ]
    if problems:
        lines += ["", "## Problems", "", *(f"- {p}" for p in problems)]
    return "\n".join(lines) + "\n"


# Headlines ----------------------------------------------------------------------------


def _why(results: BackendResults, part: str, otherwise: str) -> str:
    """What went wrong in `part` of a backend's run, else `otherwise`."""
    return next((p for p in results.problems if p.startswith(f"{part}: ")), otherwise)


def saturation_figures(
    plan: Plan, results: BackendResults, wrk_found: bool
) -> list[headline.Figure]:
    """Leads/s with wrk at the best set-up with the drains idle, then beside them."""
    label = f"{results.name}: leads/s with wrk, drains idle"
    target = (
        f"≥ {TARGET_RATE:,} leads/s (n8n documents about {N8N_RATE} workflow "
        "executions/s on 2 vCPUs: not measured here)"
    )
    best = best_idle(results)
    not_run = WRK_MISSING if not wrk_found else "no wrk run was answered"
    if best is None or best.result is None:
        idle = headline.skipped(
            label, _why(results, "saturation", not_run), unit="leads/s", target=target
        )
    else:
        tried = sum(1 for run in results.wrk if not run.drains and run.result)
        idle = headline.measured(
            label,
            "leads/s",
            [best.result.rate],
            target=target,
            met=best.result.rate >= TARGET_RATE,
            note=f"`ORCH_API_WORKERS={best.workers}`, {best.connections} "
            f"connections: the best of {tried} set-ups, one {plan.wrk_seconds} s "
            "run each",
        )
    label = f"{results.name}: leads/s with wrk, drains running"
    beside = [run for run in results.wrk if run.drains and run.result]
    if not beside:
        why = "--no-drains" if not plan.drains else not_run
        return [
            idle,
            headline.skipped(
                label, _why(results, "beside the drains", why), unit="leads/s"
            ),
        ]
    run = beside[-1]
    before, after = run.synced or (0, 0)
    synced = (after - before) / max(run.wall_s, 1e-9)
    seen = "" if run.drains_seen else "; the drains were NOT seen syncing before it"
    return [
        idle,
        headline.measured(
            label,
            "leads/s",
            [done.result.rate for done in beside if done.result],
            note=f"beside `orchestrator up`, `ORCH_API_WORKERS={run.workers}`, "
            f"{run.connections} connections, {synced:,.0f} leads/s synced to the "
            f"CRM sandbox meanwhile; one run{seen}",
        ),
    ]


def rate_figures(plan: Plan, results: BackendResults) -> list[headline.Figure]:
    """p99 at each fixed rate run; the one at the target's rate is judged by it."""
    figures = []
    for window in results.windows:
        label = f"{results.name}: p99 at {window.rate:,.0f} leads/s offered, open loop"
        judged = window.rate == TARGET_P99_AT
        p99 = window.latency(99)
        if math.isnan(p99):
            figures.append(
                headline.skipped(
                    label,
                    "no request was answered",
                    unit="ms",
                    target=P99_TARGET if judged else None,
                )
            )
            continue
        stopped = "; saturated: the ladder stopped here" if saturated(window) else ""
        figures.append(
            headline.measured(
                label,
                "ms",
                [p99],
                target=P99_TARGET if judged else None,
                met=p99_target_met(window) if judged else None,
                note=f"{window.achieved:,.0f}/s answered, "
                f"{sum(window.errors.values())} errors; one {window.seconds:.0f} s "
                f"run{stopped}",
            )
        )
    if any(window.rate == TARGET_P99_AT for window in results.windows):
        return figures
    last = results.windows[-1] if results.windows else None
    if TARGET_P99_AT not in plan.rates:
        why = f"{TARGET_P99_AT}/s is not among --rates"
    elif last is not None and saturated(last) and last.rate < TARGET_P99_AT:
        why = (
            f"not reached, so missed: offered {last.rate:,.0f}/s the server "
            f"answered {last.achieved:,.0f}/s (under {SATURATED_SHARE:.0%}), and "
            "the ladder stopped there"
        )
    else:
        why = _why(
            results, "fixed rates", f"the fixed rates stopped before {TARGET_P99_AT}/s"
        )
    label = f"{results.name}: p99 at {TARGET_P99_AT} leads/s offered, open loop"
    figures.append(headline.skipped(label, why, unit="ms", target=P99_TARGET))
    return figures


def headlines(
    plan: Plan, results: list[BackendResults], notes: list[str]
) -> list[headline.Figure]:
    """Per backend: leads/s with wrk (drains idle, then running), p99 at each rate."""
    figures = []
    for name in plan.backends:
        ran = next((r for r in results if r.name == name), None)
        # No part ran: the backend could not be opened or its store upgraded.
        if ran is None or not ran.durations:
            why = next(
                (note for note in notes if note.startswith(f"{name} skipped")),
                "; ".join(ran.problems) if ran else "not run",
            )
            figures.append(headline.skipped(f"{name}: ingest", why))
            continue
        figures += saturation_figures(plan, ran, WRK_MISSING not in notes)
        figures += rate_figures(plan, ran)
    return figures


# Command line ---------------------------------------------------------------------


def _numbers(low: int, high: int) -> Callable[[str], tuple[int, ...]]:
    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(part) for part in text.split(",") if part.strip())
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                "expected numbers, comma-separated"
            ) from exc
        if not values or not all(low <= value <= high for value in values):
            raise argparse.ArgumentTypeError(
                f"expected numbers from {low:,} to {high:,}, comma-separated"
            )
        return values

    return parse


def _number(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        values = _numbers(low, high)(text)
        if len(values) != 1:
            raise argparse.ArgumentTypeError("expected one number")
        return values[0]

    return parse


def _backend_list(text: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part))
    if not chosen or any(name not in BACKENDS for name in chosen):
        raise argparse.ArgumentTypeError(f"choose from {','.join(BACKENDS)}")
    return chosen


def parse_plan(argv: list[str]) -> Plan:
    """The plan from the command line; `--quick` is a smoke run of every part."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description="POST /api/leads at saturation (wrk) and at fixed rates on "
        "SQLite and PostgreSQL; writes bench/results/ingest-latest.md and "
        f"{PLOT.name}.",
    )
    parser.add_argument("--backends", type=_backend_list, help="default both")
    parser.add_argument(
        "--workers", type=_numbers(1, 16), help="API processes of the wrk runs"
    )
    parser.add_argument("--connections", type=_numbers(1, 1_000))
    parser.add_argument("--seconds", type=_number(1, 120), help="of each wrk run")
    parser.add_argument("--rates", type=_numbers(1, 2_000), help="leads/s offered")
    parser.add_argument("--rate-seconds", type=_number(1, 120))
    parser.add_argument("--rate-workers", type=_number(1, 16))
    parser.add_argument("--store-leads", type=_number(0, 1_000_000))
    parser.add_argument("--stage-leads", type=_number(1, 100_000))
    parser.add_argument(
        "--no-drains", action="store_true", help="skip the run beside the drains"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    chosen = {
        "backends": args.backends,
        "workers": args.workers,
        "connections": args.connections,
        "wrk_seconds": args.seconds,
        "rates": args.rates,
        "rate_seconds": args.rate_seconds,
        "rate_workers": args.rate_workers,
        "store_leads": args.store_leads,
        "stage_leads": args.stage_leads,
    }
    given = {name: value for name, value in chosen.items() if value is not None}
    return Plan(**{**base.__dict__, **given, "drains": not args.no_drains})


def _open_backend(name: str) -> AbstractContextManager[Backend]:
    if name == "sqlite":
        return sqlite_backend()
    return postgresql_backend(Settings().test_postgres_url)


def _interrupted(signum: int, _frame: object) -> None:
    # SIGTERM ends the run as Ctrl-C does: through every `finally`, so each
    # server stops and the database is dropped.
    raise KeyboardInterrupt(f"signal {signum}")


def run_backend(name: str, plan: Plan, wrk: str | None) -> BackendResults:
    """Every part on one fresh store of the backend; all stopped when it returns."""
    results = BackendResults(name)
    run_id = secrets.token_hex(3)
    with _open_backend(name) as backend:
        results.label = backend.label
        _progress(f"[{name}] {upgrade_store(backend)}")
        with _part(results, "filling the store"):
            results.filled = fill_store(
                backend.store_url, plan.store_leads, f"t{run_id}"
            )
            _progress(f"[{name}] the store holds {results.filled:,} leads")
        if wrk is not None:
            with _part(results, "saturation"):
                saturation(backend, plan, wrk, run_id, results)
            found = wrk_reference(results)
            if found is not None:
                with _part(results, "stages"):
                    stages_part(backend, plan, f"s{run_id}a", results, found)
            if plan.drains:
                with _part(results, "beside the drains"):
                    beside_drains(backend, plan, wrk, run_id, results)
        with _part(results, "fixed rates"):
            fixed_rates(backend, plan, run_id, results)
        with _part(results, "verify"):
            verify(backend, results)
        found = rate_reference(results)
        if found is not None or not results.stages:
            with _part(results, "stages beside the fixed rate"):
                stages_part(
                    backend, plan, f"s{run_id}b", results, found or NO_REFERENCE
                )
    return results


def main(argv: list[str]) -> int:
    """Runs the benchmark, writes the report and the plot to `bench/results/`.

    Returns:
        1 when a lead answered 201 is not in the store or a part failed; else 0.
    """
    plan = parse_plan(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    wrk = shutil.which("wrk")
    notes = []
    if wrk is None:
        print(f"SKIPPED: {WRK_MISSING}", flush=True)
        notes.append(WRK_MISSING)
    loads = {"at the start": machine.load_average()}
    results: list[BackendResults] = []
    for name in plan.backends:
        try:
            results.append(run_backend(name, plan, wrk))
        except BackendUnavailable as exc:
            skipped = f"{name} skipped: {exc}"
            print(skipped, flush=True)
            notes.append(skipped)
        except ServerFailed as exc:
            results.append(BackendResults(name, problems=[str(exc)]))
    loads["at the end"] = machine.load_average()
    notes.insert(0, plot(results, PLOT))
    machine.save(RESULTS, report(argv, plan, results, loads, notes))
    headline.record(
        "ingest",
        argv,
        headlines(plan, results, notes),
        report=RESULTS,
        smoke="--quick" in argv,
    )
    failed = any(r.problems or r.accepted != r.stored for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
