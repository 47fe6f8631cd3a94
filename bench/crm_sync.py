"""CRM sync benchmark: API calls per lead, sync at HubSpot's limit, intake to CRM.

Three measurements against the bundled CRM sandbox, each on servers started
here on 127.0.0.1 and stopped before the report is written:

1. calls: leads queued in a fresh SQLite store are synced by the engine
   (`CrmSync` + `drain`, as a `crm_sync` run does) into `orchestrator sandbox`;
   the sandbox's request counts give the API calls per lead.
2. sustained: the sandbox held to HubSpot Professional's 190 calls per 10 s,
   two worker processes (each a drain) share the store-backed rate budget;
   throughput, 429s, and that every lead reached the sandbox exactly once.
3. latency: `orchestrator up` (Prefect, flow runner, API, sandbox), leads
   posted to `POST /api/leads`, the time until each is a sandbox contact.

    python -m bench.crm_sync [--parts calls,sustained,latency] [--quick]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import os
import pstats
import secrets
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import event, func
from sqlalchemy import select as sql_select

from bench import headline, machine
from bench.lead_api import lead, percentile
from bench.server import (
    LOOPBACK,
    Backend,
    ServerFailed,
    bearer,
    free_port,
    issue_key,
    orchestrator_command,
    stop,
    tail,
    upgrade_store,
    wait_until_answers,
)
from connectors.crm.accounts import CrmAccount, account_from_settings, mapping_file
from connectors.crm.mapping import load_mapping_document
from connectors.crm.sync import CrmSync
from leads.intake import submit_batch
from leads.settings import Settings
from leads.store import Store
from leads.store.outbox import CRM_SYNC
from leads.store.schema import upgrade
from leads.store.tables import Lead, OutboxItem, TimelineEvent
from tasks.drain import DrainLimits, drain

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "crm_sync-latest.md"
PARTS = ("calls", "sustained", "latency")
PACKAGES = (
    "hubspot-api-client",
    "simple-salesforce",
    "urllib3",
    "sqlalchemy",
    "fastapi",
    "uvicorn",
    "prefect",
)

FULL = {
    "leads": 10_000,
    "repeats": 2,
    "sustained_leads": 20_000,
    "sustained_repeats": 3,
    "small_leads": 4_000,
    "latency_leads": 50,
    "bursts": 5,
    "burst_size": 10,
}
QUICK = {
    "leads": 1_000,
    "repeats": 2,
    "sustained_leads": 4_000,
    "sustained_repeats": 1,
    "small_leads": 1_000,
    "latency_leads": 10,
    "bursts": 2,
    "burst_size": 5,
}
# Upper bounds keep a mistyped option from running for hours.
MAX_LEADS = 200_000
MAX_REPEATS = 20
MAX_WORKERS = 8
MAX_LATENCY_LEADS = 1_000

# HubSpot Professional and Enterprise private apps: 190 calls per 10 s
# (https://developers.hubspot.com/docs/api/usage-details); a batch upsert
# carries 100 contacts, so the limit allows 1,900 leads/s at one call per 100.
HUBSPOT_PER_TEN_SECONDS = 190
HUBSPOT_BATCH = 100
WINDOW_S = 10.0
SUSTAINED_CEILING = HUBSPOT_PER_TEN_SECONDS / WINDOW_S * HUBSPOT_BATCH
SUSTAINED_TARGET_SHARE = 0.90
# Low enough that the engine outruns it, so the shared budget has to pace.
PRESSURE_LIMIT = 20
LATENCY_TARGET_P95_S = 5.0

INTAKE_CHUNK = 1_000
SYNC_TIMEOUT_S = 300.0
WORKER_TIMEOUT_S = 360.0
SANDBOX_START_TIMEOUT_S = 30.0
STACK_READY_TIMEOUT_S = 180.0
STACK_STOP_TIMEOUT_S = 90.0
ARRIVAL_TIMEOUT_S = 120.0
ARRIVAL_POLL_S = 0.5
STOP_TIMEOUT_S = 10.0
RUN_ID = "00000000-0000-0000-0000-00000000b001"


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def clean_environment(**settings: str) -> dict[str, str]:
    """This process's environment without any `ORCH_*` or `PREFECT_*` variable.

    A developer's own settings (another CRM, a tier, a Prefect server) would
    change what is measured, so only the benchmark's are passed on.
    """
    base = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ORCH_", "PREFECT_"))
    }
    return base | settings


# Scenarios -------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One CRM account set-up the engine syncs to, and its calls-per-lead target."""

    name: str
    provider: str
    label: str
    target: float

    def account(self, settings: Settings) -> CrmAccount:
        """The sandbox account of this scenario, from the shipped mapping files.

        Raises:
            ServerFailed: the settings name no CRM at all.
        """
        account = account_from_settings(settings)
        if account is None:
            raise ServerFailed("ORCH_CRM resolved to none; expected the sandbox")
        if self.name == "hubspot-always":
            document = yaml.safe_load(mapping_file(settings, "hubspot").read_text())
            for spec in document["fields"].values():
                spec.pop("policy", None)
            mapping = load_mapping_document(
                document, origin="config/crm/hubspot.yaml, every policy `always`"
            )
            return replace(account, mapping=mapping)
        if self.name == "salesforce-email":
            credentials = account.credentials.model_copy(
                update={"external_id_field": None}
            )
            return replace(account, credentials=credentials)
        return account


# The targets: one call per vendor batch of a drain batch, plus the one field
# list a run reads (1 in 10,000 leads).
SCENARIOS = (
    Scenario(
        "hubspot-shipped",
        "hubspot",
        "HubSpot, shipped mapping (`lifecyclestage` never_overwrite: a batch "
        "read before each upsert)",
        0.0201,
    ),
    Scenario(
        "hubspot-always",
        "hubspot",
        "HubSpot, shipped mapping with every policy `always` (upsert only)",
        0.0101,
    ),
    Scenario(
        "salesforce-external-id",
        "salesforce",
        "Salesforce, upsert by external id `Web_Lead_Id__c`",
        0.0051,
    ),
    Scenario(
        "salesforce-email",
        "salesforce",
        "Salesforce, no external id (`external_id_field=None`): found by e-mail",
        0.0101,
    ),
)
SUSTAINED_SCENARIO = SCENARIOS[1]
BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


def engine_settings(data_dir: Path, sandbox_port: int, provider: str) -> Settings:
    """Settings that point the engine at the sandbox as `provider`."""
    return Settings(
        data_dir=data_dir,
        crm="sandbox",
        sandbox_port=sandbox_port,
        sandbox_crm=provider,
    )


# The sandbox -------------------------------------------------------------------


@dataclass(frozen=True)
class Sandbox:
    """A running `orchestrator sandbox` process: its port and an HTTP client."""

    port: int
    http: httpx.Client

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def reset(self, per_ten_seconds: int = HUBSPOT_PER_TEN_SECONDS) -> None:
        """Forgets every record and count; HubSpot held to `per_ten_seconds`."""
        self.http.post("/_sandbox/reset").raise_for_status()
        self.http.put(
            "/_sandbox/hubspot/limits", json={"per_ten_seconds": per_ten_seconds}
        ).raise_for_status()
        self.http.delete("/_sandbox/hubspot/requests").raise_for_status()
        self.http.delete("/_sandbox/salesforce/requests").raise_for_status()

    def requests(self, provider: str) -> Counter[str]:
        """How many requests each of `provider`'s routes received since the reset."""
        answer = self.http.get(f"/_sandbox/{provider}/requests")
        answer.raise_for_status()
        body = answer.json()
        return Counter(body["counts"] if provider == "hubspot" else body)

    def keys(self, provider: str) -> list[str]:
        """The key of every record held: a contact's e-mail, a Lead's e-mail."""
        if provider == "hubspot":
            contacts = self.http.get("/_sandbox/hubspot/contacts").json()
            return [str(c["properties"].get("email")) for c in contacts]
        leads = self.http.get("/_sandbox/salesforce/leads").json()
        return [str(record.get("Email") or "").lower() for record in leads]

    def hubspot_refusals(self) -> int:
        """Requests the HubSpot routes received but did not admit (429s).

        The sandbox counts requests per route but not its answers; what it
        admitted shows in `X-HubSpot-RateLimit-Daily-Remaining` (counted from
        the last reset), read here with one more admitted call.
        """
        from connectors.sandbox.hubspot import SANDBOX_TOKEN

        # Right after a run the ten-second window may be full: the probe waits
        # its turn, and its own refusals are not the engine's.
        refused_probes = 0
        deadline = time.monotonic() + 2 * WINDOW_S
        while True:
            probe = self.http.get(
                "/crm/v3/properties/contacts/email",
                headers={"authorization": f"Bearer {SANDBOX_TOKEN}"},
            )
            if probe.status_code != 429 or time.monotonic() > deadline:
                break
            refused_probes += 1
            time.sleep(float(probe.headers.get("Retry-After", "1")))
        probe.raise_for_status()
        admitted = int(probe.headers["X-HubSpot-RateLimit-Daily"]) - int(
            probe.headers["X-HubSpot-RateLimit-Daily-Remaining"]
        )
        received = sum(self.requests("hubspot").values())
        return received - admitted - refused_probes


@contextmanager
def sandbox_process(folder: Path) -> Iterator[Sandbox]:
    """`orchestrator sandbox` on a free loopback port, stopped afterwards.

    Raises:
        ServerFailed: it exited, or did not answer within the start timeout.
    """
    port = free_port()
    log_path = folder / "sandbox.log"
    command = [orchestrator_command(), "sandbox", "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            env=clean_environment(ORCH_DATA_DIR=str(folder)),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    # trust_env=False: a proxy from the environment must not see loopback traffic.
    http = httpx.Client(
        base_url=f"http://{LOOPBACK}:{port}", timeout=60.0, trust_env=False
    )
    try:
        wait_until_answers(
            process,
            f"http://{LOOPBACK}:{port}",
            "/",
            log_path,
            name="orchestrator sandbox",
            timeout=SANDBOX_START_TIMEOUT_S,
        )
        yield Sandbox(port, http)
    finally:
        http.close()
        stop(process)


# Stores --------------------------------------------------------------------------


def fill_store(path: Path, count: int, prefix: str) -> int:
    """A new SQLite store at `path` with `count` new leads queued for CRM sync.

    Returns:
        How many `crm_sync` rows are queued (one per lead taken in).
    """
    store = Store(f"sqlite:///{path}")
    try:
        upgrade(store.engine)
        for start in range(0, count, INTAKE_CHUNK):
            end = min(count, start + INTAKE_CHUNK)
            items = [lead(prefix, i) for i in range(start, end)]
            submit_batch(store, "default", items, channel="api", region="US")
        with store.engine.begin() as connection:
            queued = connection.scalar(
                sql_select(func.count())
                .select_from(OutboxItem)
                .where(OutboxItem.topic == CRM_SYNC)
            )
    finally:
        store.dispose()
    return int(queued or 0)


def copy_store(template: Path, data_dir: Path) -> Path:
    """A copy of the template store as `data_dir`'s `orchestrator.db`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    target = data_dir / "orchestrator.db"
    shutil.copyfile(template, target)
    # Closing the last connection normally folds the WAL into the file; a
    # WAL left behind holds committed rows, so it comes along.
    wal = template.with_name(template.name + "-wal")
    if wal.exists():
        shutil.copyfile(wal, target.with_name(target.name + "-wal"))
    return target


@dataclass(frozen=True)
class StoreOutcome:
    """What the store says the sync did, lead by lead."""

    leads: int
    synced: int
    synced_events: int
    not_once: int
    outbox_left: int

    @property
    def exactly_once(self) -> bool:
        """Every lead synced, with one CRM result event, none left queued."""
        return (
            self.synced == self.leads
            and self.synced_events == self.leads
            and self.not_once == 0
            and self.outbox_left == 0
        )


def store_outcome(store_url: str) -> StoreOutcome:
    """Counts leads by sync status, their CRM result events and open CRM rows."""
    store = Store(store_url)
    try:
        with store.engine.connect() as connection:
            leads = connection.scalar(sql_select(func.count()).select_from(Lead))
            synced = connection.scalar(
                sql_select(func.count())
                .select_from(Lead)
                .where(Lead.crm_sync_status == "synced")
            )
            per_lead = connection.execute(
                sql_select(TimelineEvent.lead_id, func.count())
                .where(TimelineEvent.kind.in_(("crm.created", "crm.updated")))
                .group_by(TimelineEvent.lead_id)
            ).all()
            left = connection.scalar(
                sql_select(func.count())
                .select_from(OutboxItem)
                .where(OutboxItem.topic == CRM_SYNC, OutboxItem.status != "done")
            )
    finally:
        store.dispose()
    return StoreOutcome(
        leads=int(leads or 0),
        synced=int(synced or 0),
        synced_events=sum(int(n) for _, n in per_lead),
        not_once=sum(1 for _, n in per_lead if n != 1),
        outbox_left=int(left or 0),
    )


@dataclass(frozen=True)
class SandboxOutcome:
    """The records the sandbox holds after a run."""

    records: int
    distinct: int

    @property
    def duplicates(self) -> int:
        return self.records - self.distinct


def sandbox_outcome(sandbox: Sandbox, provider: str) -> SandboxOutcome:
    keys = sandbox.keys(provider)
    return SandboxOutcome(len(keys), len(set(keys)))


# Summaries -----------------------------------------------------------------------


def spread(values: list[float], digits: int = 0) -> str:
    """`median (min – max)` of the runs, or the one value when all runs agree."""
    if not values:
        return "–"
    median = f"{statistics.median(values):,.{digits}f}"
    if min(values) == max(values):
        return median
    return f"{median} ({min(values):,.{digits}f} – {max(values):,.{digits}f})"


def verdict(met: bool, how: str = "") -> str:
    """`met` or `missed`, with how far when given."""
    return "met" if met else f"missed{f' ({how})' if how else ''}"


def routes(counts: Counter[str]) -> str:
    """`n × route` for every route called, most called first."""
    return ", ".join(f"{n:,} × `{route}`" for route, n in counts.most_common())


# Part 1: API calls per synced lead -------------------------------------------------


@dataclass
class CallsRun:
    """One sync of the queued leads into the sandbox, in this process."""

    scenario: Scenario
    leads: int
    seconds: float
    waited_s: float
    totals: dict[str, int]
    requests: Counter[str]
    store: StoreOutcome
    sandbox: SandboxOutcome

    @property
    def calls(self) -> int:
        """Every request the vendor's API routes received."""
        return sum(self.requests.values())

    @property
    def api_calls(self) -> int:
        """As `calls`, less Salesforce's OAuth token request (not an API call)."""
        return self.calls - self.requests.get("token", 0)

    @property
    def rate(self) -> float:
        return self.leads / self.seconds if self.seconds > 0 else 0.0

    @property
    def correct(self) -> bool:
        return (
            self.store.exactly_once
            and self.sandbox.records == self.leads
            and self.sandbox.duplicates == 0
            and self.totals.get("created", 0) == self.leads
        )


class _Timed:
    """A drain handler noting when the first batch was claimed and the last ended."""

    def __init__(self, handle: Callable[[list[Any]], dict[str, int]]) -> None:
        self._handle = handle
        self.first: float | None = None
        self.last: float | None = None

    def __call__(self, claims: list[Any]) -> dict[str, int]:
        if self.first is None:
            self.first = time.time()
        counts = self._handle(claims)
        self.last = time.time()
        return counts


class _Waits:
    """The engine's sleep (rate budget, back-off), adding up what it spent."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._lock = threading.Lock()

    def __call__(self, seconds: float) -> None:
        with self._lock:
            self.seconds += seconds
        time.sleep(seconds)


def sync_in_process(
    scenario: Scenario, settings: Settings, batch_size: int
) -> tuple[dict[str, int], float, float]:
    """Drains the store's CRM rows as one `crm_sync` run would.

    Returns:
        The drain's counts, the seconds from the first claim to the end of the
        last batch, and the seconds spent waiting on the budget or back-off.
    """
    store = Store(settings.store_url)
    account = scenario.account(settings)
    waits = _Waits()
    sync = CrmSync(store, settings, RUN_ID, accounts=lambda _: account, sleep=waits)
    started = time.time()
    timed = _Timed(sync.handle)
    try:
        totals = drain(
            store,
            CRM_SYNC,
            owner="bench-crm-sync",
            handle=timed,
            limits=DrainLimits(
                batch_size=batch_size,
                idle_grace_seconds=0,
                lease=timedelta(minutes=5),
                max_seconds=SYNC_TIMEOUT_S,
            ),
        )
    finally:
        sync.close()
        store.dispose()
    seconds = (timed.last or time.time()) - started
    return totals, seconds, waits.seconds


def measure_calls(
    sandbox: Sandbox, folder: Path, template: Path, leads: int, plan: Plan
) -> list[CallsRun]:
    """Each scenario synced `plan.repeats` times from a copy of the template store."""
    runs = []
    for scenario in SCENARIOS:
        for repeat in range(plan.repeats):
            data_dir = folder / f"{scenario.name}-{repeat}"
            copy_store(template, data_dir)
            settings = engine_settings(data_dir, sandbox.port, scenario.provider)
            sandbox.reset()

            totals, seconds, waited = sync_in_process(
                scenario, settings, plan.batch_size
            )

            run = CallsRun(
                scenario,
                leads,
                seconds,
                waited,
                totals,
                sandbox.requests(scenario.provider),
                store_outcome(settings.store_url),
                sandbox_outcome(sandbox, scenario.provider),
            )
            runs.append(run)
            _progress(
                f"[calls] {scenario.name} run {repeat + 1}: {run.calls} calls, "
                f"{run.calls / leads:.4f} per lead, {run.rate:,.0f} leads/s, "
                f"{'ok' if run.correct else 'WRONG'}"
            )
            shutil.rmtree(data_dir, ignore_errors=True)
    return runs


def calls_table(runs: list[CallsRun], plan: Plan) -> list[str]:
    """One row per scenario: calls per lead against its target, leads/s."""
    lines = [
        "| CRM account | Leads | Runs | Calls per run | Calls per lead | Target "
        "| Leads/s, median (min – max) | Budget waits | Synced once |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for scenario in SCENARIOS:
        mine = [run for run in runs if run.scenario is scenario]
        if not mine:
            continue
        leads = mine[0].leads
        calls = [float(run.calls) for run in mine]
        api = [float(run.api_calls) for run in mine]
        per_lead = max(api) / leads
        shown, shown_per_lead = spread(calls), f"{per_lead:.4f}"
        if api != calls:
            # Salesforce's OAuth token request is not an API call: it does not
            # count against the org's API allocation.
            tokens = [run.calls - run.api_calls for run in mine]
            shown = f"{spread(api)} + {spread(tokens)} OAuth token request"
            shown_per_lead += f" ({max(calls) / leads:.4f} counting the token request)"
        correct = sum(run.correct for run in mine)
        lines.append(
            f"| {scenario.label} | {leads:,} | {len(mine)} | {shown} "
            f"| {shown_per_lead} | ≤ {scenario.target}: "
            f"{verdict(per_lead <= scenario.target)} "
            f"| {spread([run.rate for run in mine])} "
            f"| {spread([run.waited_s for run in mine], 1)} s "
            f"| {correct} of {len(mine)} runs |"
        )
    lines += ["", "Requests by route (first run of each):", ""]
    for scenario in SCENARIOS:
        mine = [run for run in runs if run.scenario is scenario]
        if mine:
            lines.append(f"- {scenario.name}: {routes(mine[0].requests)}")
    return lines


# Part 2: sustained sync at the Professional limit, two workers -----------------------


@dataclass
class WorkerResult:
    """What one worker process reported."""

    totals: dict[str, int]
    first: float | None
    last: float | None
    waited_s: float
    statuses: dict[str, int]
    lock_wait_s: float
    write_transactions: int


@dataclass
class SustainedRun:
    """Several workers draining one store into the limited sandbox."""

    limit: int
    leads: int
    workers: list[WorkerResult]
    refusals: int
    requests: Counter[str]
    store: StoreOutcome
    sandbox: SandboxOutcome

    @property
    def ceiling(self) -> float:
        """Leads/s the limit allows at one call per 100 leads, past its burst."""
        return self.limit / WINDOW_S * HUBSPOT_BATCH

    @property
    def seconds(self) -> float:
        firsts = [w.first for w in self.workers if w.first is not None]
        lasts = [w.last for w in self.workers if w.last is not None]
        if not firsts or not lasts:
            return 0.0
        return max(lasts) - min(firsts)

    @property
    def synced(self) -> int:
        return sum(
            w.totals.get("created", 0) + w.totals.get("updated", 0)
            for w in self.workers
        )

    @property
    def rate(self) -> float:
        return self.synced / self.seconds if self.seconds > 0 else 0.0

    @property
    def engine_429s(self) -> int:
        return sum(w.statuses.get("429", 0) for w in self.workers)

    @property
    def correct(self) -> bool:
        return (
            self.store.exactly_once
            and self.sandbox.records == self.leads
            and self.sandbox.duplicates == 0
        )


class _LockWaits:
    """Time this process spent in `BEGIN IMMEDIATE`: waiting for SQLite's write lock.

    The store begins every write transaction with it (`leads/store/database.py`);
    SQLite's busy handler sleeps inside it while another process holds the lock.
    """

    def __init__(self, engine: Any) -> None:
        self.seconds = 0.0
        self.transactions = 0
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("BEGIN IMMEDIATE"):
            conn.info["bench_begin"] = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        started = conn.info.pop("bench_begin", None)
        if started is not None:
            self.seconds += time.perf_counter() - started
            self.transactions += 1


class _StatusCount(logging.Handler):
    """Counts the statuses of the HubSpot client's one-line-per-call DEBUG log."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.statuses: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        # `HubSpot %s: %d record(s), status %s, %.0f ms`
        if isinstance(record.args, tuple) and len(record.args) == 4:
            self.statuses[str(record.args[2])] += 1


def worker_main(config: dict[str, Any]) -> int:
    """One drain in this process; waits for `go` on stdin, prints its result as JSON.

    With `profile` set, the drain runs under cProfile and its stats go there.
    """
    scenario = BY_NAME[config["scenario"]]
    settings = engine_settings(
        Path(config["data_dir"]), config["sandbox_port"], scenario.provider
    )
    counter = _StatusCount()
    client_log = logging.getLogger("connectors.crm.hubspot.client")
    client_log.addHandler(counter)
    client_log.setLevel(logging.DEBUG)
    store = Store(settings.store_url)
    locks = _LockWaits(store.engine)
    account = scenario.account(settings)
    waits = _Waits()
    sync = CrmSync(
        store, settings, str(uuid.uuid4()), accounts=lambda _: account, sleep=waits
    )
    timed = _Timed(sync.handle)
    limits = DrainLimits(
        batch_size=config["batch_size"],
        idle_grace_seconds=0,
        lease=timedelta(minutes=5),
        max_seconds=SYNC_TIMEOUT_S,
    )
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 2

    profiler = cProfile.Profile() if config.get("profile") else None
    try:
        if profiler is not None:
            profiler.enable()
        totals = drain(store, CRM_SYNC, config["owner"], timed, limits=limits)
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(config["profile"])
        sync.close()
        store.dispose()

    result = {
        "totals": totals,
        "first": timed.first,
        "last": timed.last,
        "waited_s": waits.seconds,
        "statuses": dict(counter.statuses),
        "lock_wait_s": locks.seconds,
        "write_transactions": locks.transactions,
    }
    print(json.dumps(result), flush=True)
    return 0


def run_workers(
    sandbox: Sandbox,
    data_dir: Path,
    workers: int,
    batch_size: int,
    profile: Path | None = None,
) -> list[WorkerResult]:
    """Starts `workers` drain processes on one store, lets them go together.

    Raises:
        ServerFailed: a worker failed or did not finish in time.
    """
    processes = []
    logs = []
    for number in range(workers):
        config = {
            "scenario": SUSTAINED_SCENARIO.name,
            "data_dir": str(data_dir),
            "sandbox_port": sandbox.port,
            "batch_size": batch_size,
            "owner": f"bench-worker-{number}",
            "profile": str(profile) if profile else None,
        }
        log_path = data_dir / f"worker-{number}.log"
        logs.append(log_path)
        with log_path.open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "bench.crm_sync", "--worker"],
                    env=clean_environment(BENCH_WORKER=json.dumps(config)),
                    cwd=REPO_ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                )
            )
    try:
        # Imports and connections first, so the workers start claiming together.
        for process, log_path in zip(processes, logs, strict=True):
            if _read_line(process, SANDBOX_START_TIMEOUT_S) != "ready":
                raise ServerFailed(f"a worker did not get ready:\n{tail(log_path)}")
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        results = []
        for process, log_path in zip(processes, logs, strict=True):
            output, _ = process.communicate(timeout=WORKER_TIMEOUT_S)
            if process.returncode != 0:
                raise ServerFailed(
                    f"a worker exited with {process.returncode}:\n{tail(log_path)}"
                )
            results.append(WorkerResult(**json.loads(output.strip().splitlines()[-1])))
        return results
    finally:
        for process in processes:
            stop(process)


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline().strip() if ready else ""


def measure_sustained(
    sandbox: Sandbox,
    folder: Path,
    template: Path,
    leads: int,
    plan: Plan,
    limit: int,
    repeats: int,
) -> list[SustainedRun]:
    """`repeats` runs of `plan.workers` workers, HubSpot at `limit` calls per 10 s."""
    runs = []
    for repeat in range(repeats):
        data_dir = folder / f"sustained-{limit}-{repeat}"
        copy_store(template, data_dir)
        sandbox.reset(limit)

        workers = run_workers(sandbox, data_dir, plan.workers, plan.batch_size)

        refusals = sandbox.hubspot_refusals()
        run = SustainedRun(
            limit,
            leads,
            workers,
            refusals,
            sandbox.requests("hubspot"),
            store_outcome(f"sqlite:///{data_dir / 'orchestrator.db'}"),
            sandbox_outcome(sandbox, "hubspot"),
        )
        runs.append(run)
        _progress(
            f"[sustained] {limit} per 10 s, run {repeat + 1}: {run.synced:,} leads "
            f"in {run.seconds:.1f} s = {run.rate:,.0f} leads/s, {refusals} refused,"
            f" {'ok' if run.correct else 'WRONG'}"
        )
        shutil.rmtree(data_dir, ignore_errors=True)
    return runs


def sustained_table(runs: list[SustainedRun]) -> list[str]:
    """One row per run, then the median at the Professional limit against 1,900."""
    lines = [
        "| Limit per 10 s | Run | Leads | Seconds | Leads/s | Of the limit's "
        "leads/s | Leads per worker | 429s (sandbox) | 429s (engine) "
        "| Budget waits per worker | SQLite write-lock waits per worker "
        "| Contacts | Duplicates | Synced once |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: "
        "| ---: | ---: | ---: | --- |",
    ]
    for number, run in enumerate(runs, start=1):
        split = " / ".join(
            f"{w.totals.get('created', 0) + w.totals.get('updated', 0):,}"
            for w in run.workers
        )
        waited = " / ".join(f"{w.waited_s:.1f}" for w in run.workers)
        locked = " / ".join(f"{w.lock_wait_s:.1f}" for w in run.workers)
        lines.append(
            f"| {run.limit} | {number} | {run.leads:,} | {run.seconds:.1f} "
            f"| {run.rate:,.0f} | {run.rate / run.ceiling:.0%} of "
            f"{run.ceiling:,.0f} | {split} | {run.refusals} | {run.engine_429s} "
            f"| {waited} s | {locked} s | {run.sandbox.records:,} "
            f"| {run.sandbox.duplicates} | {'yes' if run.correct else 'NO'} |"
        )
    rates = [run.rate for run in runs if run.limit == HUBSPOT_PER_TEN_SECONDS]
    if rates:
        median = statistics.median(rates)
        lines += [
            "",
            f"At {HUBSPOT_PER_TEN_SECONDS} per 10 s: median {spread(rates)} "
            f"leads/s = {median / SUSTAINED_CEILING:.0%} of the "
            f"{SUSTAINED_CEILING:,.0f} leads/s the limit allows; target ≥ "
            f"{SUSTAINED_TARGET_SHARE:.0%}: "
            f"{verdict(median >= SUSTAINED_TARGET_SHARE * SUSTAINED_CEILING)}.",
        ]
    lines += ["", f"Requests by route (first run): {routes(runs[0].requests)}."]
    return lines


# Profile of one worker ------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """A function of the engine the profile reports, found by file and name."""

    file: str
    function: str
    label: str
    # 0: a step of the drain; 1: part of the step above it.
    depth: int = 0


# In report order. The files are where the engine lives at the time of writing;
# a step whose function is not found shows as not called.
STEPS = (
    Step("tasks/drain.py", "drain", "the whole drain"),
    Step("leads/store/claims.py", "claim", "claiming batches (`claims.claim`)"),
    Step("connectors/crm/records.py", "plan", "mapping leads (`records.plan`)"),
    Step("connectors/crm/sync.py", "_write", "writing to the CRM (`_write`)"),
    Step(
        "hubspot/crm/contacts/api_client.py",
        "deserialize",
        "the official client turning JSON into models",
        1,
    ),
    Step(
        "connectors/crm/store_budget.py",
        "acquire",
        "taking a call from the store budget (`StoreBudget.acquire`)",
        1,
    ),
    Step(
        "connectors/crm/store_budget.py",
        "observe",
        "storing the rate-limit headers (`StoreBudget.observe`)",
        1,
    ),
    Step(
        "connectors/crm/sync.py",
        "_record",
        "recording results and settling claims (`_record`)",
    ),
    Step(
        "leads/store/claims.py",
        "finish_in",
        "settling each claim: `UPDATE … RETURNING` per lead (`claims.finish_in`)",
        1,
    ),
    Step(
        "connectors/crm/sync.py",
        "_apply",
        "lead fields and timeline event (`sync._apply`)",
        1,
    ),
    Step(
        "sqlalchemy/orm/session.py",
        "_autoflush",
        "SQLAlchemy autoflushes before a statement (anywhere in the drain)",
    ),
    Step("leads/store/database.py", "write", "write transactions (`Store.write`)"),
)
# The parts of `_sync_tenant` that are steps of their own; the rest of it is
# reading the claimed leads from the store.
SYNC_TENANT = Step("connectors/crm/sync.py", "_sync_tenant", "")
SYNC_TENANT_PARTS = ("plan", "_write", "_record")


@dataclass(frozen=True)
class Profiled:
    """A step's calls and cumulative seconds under the profiler."""

    step: Step
    calls: int
    seconds: float


@dataclass
class ProfileResult:
    leads: int
    wall_s: float
    steps: list[Profiled]
    reading_s: float


def cumulative(stats: pstats.Stats, step: Step) -> tuple[int, float]:
    """Calls and cumulative seconds of `step`'s function in `stats`."""
    calls, seconds = 0, 0.0
    for (filename, _, name), entry in stats.stats.items():  # type: ignore[attr-defined]
        if name == step.function and filename.endswith(step.file):
            calls += entry[1]
            seconds += entry[3]
    return calls, seconds


def profile_worker(
    sandbox: Sandbox, folder: Path, template: Path, leads: int, plan: Plan
) -> ProfileResult:
    """One worker draining `leads` under cProfile, its time by engine step."""
    data_dir = folder / "profile"
    copy_store(template, data_dir)
    sandbox.reset(HUBSPOT_PER_TEN_SECONDS)
    stats_path = data_dir / "worker.prof"

    [worker] = run_workers(sandbox, data_dir, 1, plan.batch_size, stats_path)

    stats = pstats.Stats(str(stats_path))
    steps = [Profiled(step, *cumulative(stats, step)) for step in STEPS]
    parts = sum(s.seconds for s in steps if s.step.function in SYNC_TENANT_PARTS)
    reading = cumulative(stats, SYNC_TENANT)[1] - parts
    wall = (worker.last or 0.0) - (worker.first or 0.0)
    shutil.rmtree(data_dir, ignore_errors=True)
    return ProfileResult(leads, wall, steps, reading)


def profile_table(result: ProfileResult) -> list[str]:
    """Seconds, share of the drain and µs per lead of each step, under cProfile."""
    total = result.steps[0].seconds or 1.0
    rows = [(s.step.label, s.step.depth, s.calls, s.seconds) for s in result.steps]
    reading = "reading the claimed leads (rest of `_sync_tenant`)"
    rows.insert(2, (reading, 0, 0, result.reading_s))
    lines = [
        "| Step | Calls | Seconds | Share of the drain | µs per lead |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, depth, calls, seconds in rows:
        shown = f"└ {label}" if depth else label
        lines.append(
            f"| {shown} | {f'{calls:,}' if calls else '–'} | {seconds:.2f} "
            f"| {seconds / total:.0%} | {seconds / result.leads * 1e6:,.0f} |"
        )
    return lines


# Part 3: POST /api/leads → contact in the sandbox, in the default stack ------------


@dataclass
class Posted:
    """One lead posted to the API: its e-mail, when it was sent, when it arrived."""

    email: str
    sent: float
    status: int = 0
    arrived: float | None = None

    @property
    def latency(self) -> float | None:
        return None if self.arrived is None else self.arrived - self.sent


@dataclass
class Pattern:
    """A way of posting leads and what became of them."""

    name: str
    description: str
    posted: list[Posted] = field(default_factory=list)

    @property
    def latencies(self) -> list[float]:
        return [p.latency for p in self.posted if p.latency is not None]

    @property
    def missing(self) -> int:
        return sum(p.arrived is None for p in self.posted)

    @property
    def refused(self) -> int:
        return sum(p.status != 201 for p in self.posted)


@dataclass
class Stack:
    """A running `orchestrator up`, where its parts listen, and a `write` key.

    `api` sends the key with every request.
    """

    process: subprocess.Popen[bytes]
    data_dir: Path
    api: httpx.Client
    sandbox: httpx.Client
    prefect_url: str
    key: str

    @property
    def log(self) -> Path:
        return self.data_dir / "up.log"


@contextmanager
def running_stack(folder: Path, **settings: str) -> Iterator[Stack]:
    """`orchestrator up` on free loopback ports, until every deployment is READY.

    The store is upgraded and a `write` key of tenant `default` made in it
    before the stack starts. Stopped with SIGTERM (its whole process group if
    it does not exit).

    Args:
        folder: the stack's data dir.
        settings: more `ORCH_*` variables for it (another store, a rate limit).

    Raises:
        ServerFailed: the store could not be upgraded, or the stack exited or
            was not ready in time.
    """
    api_port, prefect_port, sandbox_port = free_port(), free_port(), free_port()
    store = Backend("stack", "the stack's store", folder, settings)
    upgrade_store(store)
    key = issue_key(store.store_url)
    env = clean_environment(
        ORCH_DATA_DIR=str(folder),
        ORCH_API_PORT=str(api_port),
        ORCH_PREFECT_PORT=str(prefect_port),
        ORCH_SANDBOX_PORT=str(sandbox_port),
        **settings,
    )
    log_path = folder / "up.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [orchestrator_command(), "up"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    api = httpx.Client(
        base_url=f"http://{LOOPBACK}:{api_port}",
        headers=bearer(key),
        timeout=30.0,
        trust_env=False,
    )
    sandbox = httpx.Client(
        base_url=f"http://{LOOPBACK}:{sandbox_port}", timeout=30.0, trust_env=False
    )
    stack = Stack(
        process, folder, api, sandbox, f"http://{LOOPBACK}:{prefect_port}/api", key
    )
    try:
        _await_ready(stack)
        yield stack
    finally:
        api.close()
        sandbox.close()
        stop_stack(stack)


def _await_ready(stack: Stack) -> None:
    deadline = time.monotonic() + STACK_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if stack.process.poll() is not None:
            raise ServerFailed(
                f"`orchestrator up` exited with {stack.process.returncode}:\n"
                f"{tail(stack.log)}"
            )
        try:
            status = stack.api.get("/api/status").json()
        except (httpx.HTTPError, ValueError):
            status = {}
        runner = status.get("prefect", {}).get("flow_runner", {})
        deployments = set(runner.get("deployments", {}).values())
        if deployments == {"READY"}:
            return
        time.sleep(0.5)
    raise ServerFailed(
        f"deployments not READY within {STACK_READY_TIMEOUT_S:.0f} s:\n"
        f"{tail(stack.log)}"
    )


def stop_stack(stack: Stack) -> int | None:
    """SIGTERM to `orchestrator up`, which stops its children; SIGKILL if it hangs.

    Returns:
        Its exit status, or None when it had to be killed.
    """
    process = stack.process
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=STACK_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # Its own process group (start_new_session): the children go too.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)
        return None


class _Arrivals:
    """Polls the sandbox's contacts; each one's `createdAt` is when it arrived."""

    def __init__(self, sandbox: httpx.Client) -> None:
        self._sandbox = sandbox
        self.created: dict[str, float] = {}
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="arrivals")

    def __enter__(self) -> _Arrivals:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _poll(self) -> None:
        while not self._stop.wait(ARRIVAL_POLL_S):
            self.look()

    def look(self) -> None:
        try:
            contacts = self._sandbox.get("/_sandbox/hubspot/contacts").json()
        except (httpx.HTTPError, ValueError):
            self.errors += 1
            return
        for contact in contacts:
            email = contact["properties"].get("email")
            if email and email not in self.created:
                created = datetime.fromisoformat(contact["createdAt"])
                self.created[email] = created.timestamp()


def post_lead(stack: Stack, email: str) -> Posted:
    """Posts one new lead; `sent` is the wall-clock time the request left."""
    body = {"email": email, "first_name": "Bench", "source": "bench"}
    posted = Posted(email, time.time())
    try:
        posted.status = stack.api.post("/api/leads", json=body).status_code
    except httpx.HTTPError:
        posted.status = 0
    return posted


def measure_latency(stack: Stack, plan: Plan) -> list[Pattern]:
    """Leads posted one at a time, then in bursts; each timed to its contact."""
    run = secrets.token_hex(3)
    spaced = Pattern(
        "spaced",
        f"{plan.latency_leads} leads, one `POST /api/leads` every {plan.spacing} s",
    )
    bursts = Pattern(
        "bursts",
        f"{plan.bursts} bursts of {plan.burst_size} leads posted back to back, "
        f"a burst every {plan.burst_gap} s",
    )
    with _Arrivals(stack.sandbox) as arrivals:
        started = time.monotonic()
        for i in range(plan.latency_leads):
            _sleep_until(started + i * plan.spacing)
            spaced.posted.append(post_lead(stack, f"spaced.{run}.{i}@example.com"))
        _await_arrivals(arrivals, spaced)
        _progress(f"[latency] spaced, in order: {_rounded(spaced.latencies)}")

        time.sleep(plan.burst_gap)
        started = time.monotonic()
        for b in range(plan.bursts):
            _sleep_until(started + b * plan.burst_gap)
            for i in range(plan.burst_size):
                email = f"burst.{run}.{b}.{i}@example.com"
                bursts.posted.append(post_lead(stack, email))
        _await_arrivals(arrivals, bursts)
        _progress(f"[latency] bursts, in order: {_rounded(bursts.latencies)}")
    return [spaced, bursts]


def _rounded(latencies: list[float]) -> str:
    return " ".join(f"{value:.1f}" for value in latencies)


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def _await_arrivals(arrivals: _Arrivals, pattern: Pattern) -> None:
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while time.monotonic() < deadline:
        if all(p.email in arrivals.created for p in pattern.posted):
            break
        time.sleep(ARRIVAL_POLL_S)
    arrivals.look()
    for posted in pattern.posted:
        posted.arrived = arrivals.created.get(posted.email)


@dataclass(frozen=True)
class FlowRun:
    """One `crm_sync` flow run: its state and when it was created, ran and ended."""

    state: str
    # COMPLETED, RUNNING, FAILED, CRASHED: it drained (or tried to); a run the
    # concurrency limit cancelled gets a start time too, at its cancellation.
    ran: bool
    created: float
    started: float | None
    ended: float | None


RAN = frozenset({"COMPLETED", "RUNNING", "FAILED", "CRASHED"})


def _moment(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def crm_sync_runs(stack: Stack) -> list[FlowRun]:
    """The `crm_sync` deployment's flow runs so far, but those scheduled ahead.

    The every-minute schedule keeps runs scheduled ahead; those did nothing.
    """
    answer = httpx.post(
        f"{stack.prefect_url}/flow_runs/filter",
        json={"deployments": {"name": {"any_": ["crm_sync"]}}, "limit": 200},
        timeout=30.0,
        trust_env=False,
    )
    answer.raise_for_status()
    return sorted(
        (
            FlowRun(
                str(run.get("state_name")),
                run.get("state_type") in RAN,
                _moment(run["created"]) or 0.0,
                _moment(run.get("start_time")),
                _moment(run.get("end_time")),
            )
            for run in answer.json()
            if run.get("state_type") != "SCHEDULED"
        ),
        key=lambda run: run.created,
    )


def runs_during(pattern: Pattern, runs: list[FlowRun]) -> str:
    """The runs of the pattern's time, from its first POST: when each that ran was
    created, started and ended; how many were not run.
    """
    if not pattern.posted:
        return "no leads posted"
    first = min(p.sent for p in pattern.posted)
    last = max((p.arrived or p.sent) for p in pattern.posted)
    # A scheduled run is created ahead of its minute: a run belongs to the
    # pattern when it was created, or was running, while its leads were on the way.
    during = [
        run
        for run in runs
        if first <= run.created <= last
        or (
            run.started is not None
            and run.started <= last
            and (run.ended is None or run.ended >= first)
        )
    ]
    ran = [run for run in during if run.ran and run.started is not None]
    shown = [
        f"created {run.created - first:+.1f} s, running {run.started - first:+.1f} s"
        + (f", ended {run.ended - first:+.1f} s" if run.ended else ", still running")
        for run in ran
        if run.started is not None
    ]
    others = Counter(run.state for run in during if run not in ran)
    if others:
        shown.append(
            "not run: " + ", ".join(f"{n} {state}" for state, n in others.items())
        )
    return "; ".join(shown) or "none created"


def latency_table(patterns: list[Pattern]) -> list[str]:
    """p50, p95 and max per pattern, against the p95 target."""
    lines = [
        "| Pattern | Leads | Arrived | p50 s | p95 s | max s | Target p95 ≤ 5 s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for pattern in patterns:
        values = pattern.latencies
        p95 = percentile(values, 95)
        met = pattern.missing == 0 and p95 <= LATENCY_TARGET_P95_S
        lines.append(
            f"| {pattern.description} | {len(pattern.posted)} | {len(values)} "
            f"| {percentile(values, 50):.2f} | {p95:.2f} "
            f"| {max(values, default=float('nan')):.2f} | {verdict(met)} |"
        )
    return lines


# Report and command line -----------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What the run measures and how much of it."""

    parts: tuple[str, ...]
    leads: int
    repeats: int
    batch_size: int
    sustained_leads: int
    sustained_repeats: int
    workers: int
    pressure_limit: int
    small_leads: int
    latency_leads: int
    spacing: float
    bursts: int
    burst_size: int
    burst_gap: float


@dataclass
class Results:
    """Everything measured, and what went wrong on the way."""

    calls: list[CallsRun] = field(default_factory=list)
    calls_queued: int = 0
    sustained: list[SustainedRun] = field(default_factory=list)
    sustained_queued: int = 0
    small_queued: int = 0
    profile: ProfileResult | None = None
    latency: list[Pattern] = field(default_factory=list)
    flow_runs: list[FlowRun] = field(default_factory=list)
    stack_exit: str = ""
    intake_s: dict[str, float] = field(default_factory=dict)
    # The load averages as each part began, and at the end: other work on the
    # machine shows here.
    loads: dict[str, str] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.problems) or any(
            not run.correct for run in [*self.calls, *self.sustained]
        )


def report(argv: list[str], plan: Plan, results: Results) -> str:
    """The Markdown report: command, machine, set-up, one section per part."""
    command = shlex.join([machine.shown_python(), "-m", "bench.crm_sync", *argv])
    facts = [(k, v) for k, v in machine.describe() if k != "Packages"]
    lines = [
        "# CRM sync benchmark",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Command: `{command}`",
        f"- Code: {machine.code_version()}",
        *(f"- {label}: {value}" for label, value in facts),
        f"- Packages: {machine.package_versions(PACKAGES)}",
        "- Load average (1, 5, 15 min): "
        + "; ".join(f"{when} {value}" for when, value in results.loads.items()),
        "- CRM: the bundled sandbox (`connectors/sandbox`), as its own "
        "`orchestrator sandbox --port <free port>` process on 127.0.0.1, driven "
        "by the real connectors on the official clients (`hubspot-api-client`, "
        "`simple-salesforce`). Nothing left the machine.",
        "- Data: invented new people (`bench.lead_api.lead`: unique e-mails and "
        "names), taken in with `leads.intake.submit_batch` in batches of "
        f"{INTAKE_CHUNK:,} into a fresh SQLite store (WAL) in a temporary "
        "directory, which queues one `crm_sync` row per lead; every run syncs a "
        "fresh copy of that store into an emptied sandbox.",
        f"- Engine: `CrmSync` + `tasks.drain.drain`, as a `crm_sync` run does, "
        f"{plan.batch_size} leads claimed per batch (the flow's default), "
        "`idle_grace_seconds=0`. Seconds run from the first claim to the end of "
        'the last batch; "budget waits" is what the engine slept on the rate '
        "budget and back-off.",
        "- Note: the sandbox, the engine and the load generator share the "
        "machine's cores.",
    ]
    if results.durations:
        lines.append(
            "- Duration of each part, servers and stores included: "
            + ", ".join(f"{k} {v:.0f} s" for k, v in results.durations.items())
        )
    if results.intake_s:
        lines.append(
            "- Preparing the stores (not measured below): "
            + ", ".join(f"{k} {v:.0f} s" for k, v in results.intake_s.items())
        )
    if "calls" in plan.parts:
        lines += _calls_section(plan, results)
    if "sustained" in plan.parts:
        lines += _sustained_section(plan, results)
    if "latency" in plan.parts:
        lines += _latency_section(plan, results)
    if results.problems:
        lines += ["", "## Problems", "", *(f"- {p}" for p in results.problems)]
    return "\n".join(lines) + "\n"


def _calls_section(plan: Plan, results: Results) -> list[str]:
    lines = [
        "",
        "## API calls per synced lead",
        "",
        f"{results.calls_queued:,} new leads per run, {plan.repeats} runs per "
        "account, one engine in this process; the sandbox at its default limits "
        "(HubSpot Professional, 190 calls per 10 s). Calls are every request the "
        "vendor's routes received (`GET /_sandbox/<vendor>/requests`), the one "
        "field list (HubSpot properties, Salesforce describe) per run included; "
        'calls per lead is the highest run\'s. "Synced once": every lead '
        "`synced` with one `crm.created` or `crm.updated` event and no CRM "
        "row left, as many "
        "sandbox records as leads, no key twice. The targets are per-batch "
        "calls plus that one call at 10,000 leads a run; with fewer leads it "
        "weighs more.",
        "",
    ]
    if results.calls:
        lines += calls_table(results.calls, plan)
    return lines


def _sustained_section(plan: Plan, results: Results) -> list[str]:
    lines = [
        "",
        "## Sustained sync at HubSpot Professional's limit",
        "",
        f"{results.sustained_queued:,} leads queued, {plan.workers} worker "
        "processes (`python -m bench.crm_sync --worker`), each one drain with its "
        "own `CrmSync`, started together on one store; they share one "
        "store-backed rate budget (`connectors/crm/store_budget.py`, one row per "
        "account, which also follows the sandbox's `X-HubSpot-RateLimit-*` "
        f"headers). The sandbox holds HubSpot to {HUBSPOT_PER_TEN_SECONDS} calls "
        f"per rolling 10 s. Mapping: {SUSTAINED_SCENARIO.label}, one batch "
        f"upsert per 100 leads, so the limit allows {SUSTAINED_CEILING:,.0f} "
        "leads/s once its first burst is spent (the budget starts full: "
        f"{HUBSPOT_PER_TEN_SECONDS} calls, "
        f"{HUBSPOT_PER_TEN_SECONDS * HUBSPOT_BATCH:,} leads)."
        + (
            f" One more run, of {results.small_queued:,} leads, holds HubSpot "
            f"to {plan.pressure_limit} calls per 10 s, below what the workers "
            "reach, so the shared budget has to pace them."
            if plan.pressure_limit
            else ""
        ),
        "",
        "429s (sandbox): requests the HubSpot routes received minus the calls "
        "they admitted (the sandbox counts requests, not answers; admitted calls "
        "show in `X-HubSpot-RateLimit-Daily-Remaining`). 429s (engine): the "
        "statuses of the HubSpot client's per-call DEBUG log in the workers.",
        "",
    ]
    if results.sustained:
        lines += sustained_table(results.sustained)
    alone = [run.rate for run in results.calls if run.scenario is SUSTAINED_SCENARIO]
    if alone:
        lines += [
            "",
            "For comparison, one engine alone in one process (the calls part, "
            f"same mapping, {results.calls_queued:,} leads): {spread(alone)} "
            "leads/s.",
        ]
    if results.profile is not None:
        profile = results.profile
        lines += [
            "",
            "### Where a worker's time goes",
            "",
            f"One worker alone draining {profile.leads:,} leads under cProfile "
            f"(same mapping, same sandbox limit): {profile.wall_s:.1f} s, "
            f"{profile.leads / max(profile.wall_s, 1e-9):,.0f} leads/s with the "
            "profiler's overhead, which inflates Python-heavy steps; read the "
            "shares. Cumulative seconds; indented steps are part of the one "
            "above.",
            "",
            *profile_table(profile),
        ]
    return lines


def _latency_section(plan: Plan, results: Results) -> list[str]:
    lines = [
        "",
        "## `POST /api/leads` → contact in the sandbox, default stack",
        "",
        "`orchestrator up` (Prefect server on SQLite, flow runner, API, sandbox; "
        "default settings: `ORCH_CRM=sandbox`, HubSpot) on free loopback ports "
        "and a fresh data dir, measured once every deployment was READY. A "
        "lead's latency runs from sending its `POST /api/leads` to the "
        "`createdAt` the sandbox stamped on its contact (one clock, millisecond "
        "precision); the sandbox was polled every "
        f"{ARRIVAL_POLL_S} s to see when all had arrived.",
        "",
    ]
    if results.latency:
        lines += latency_table(results.latency)
        refused = sum(p.refused for p in results.latency)
        states = Counter(run.state for run in results.flow_runs)
        delays = [
            run.started - run.created
            for run in results.flow_runs
            if run.ran and run.started is not None
        ]
        lines += [
            "",
            "`crm_sync` flow runs created or running while each pattern's leads "
            "were on their way, times from the pattern's first POST (the "
            "deployment runs one at a time and cancels a run triggered while one "
            "drains, `CANCEL_NEW`):",
            "",
            *(
                f"- {pattern.name}: {runs_during(pattern, results.flow_runs)}"
                for pattern in results.latency
            ),
            "",
            f"Of the {len(delays)} `crm_sync` runs that ran, creation → Running "
            f"took {spread(delays, 1)} s: the flow runner polls every 1 s and "
            "starts each run as a new Python process.",
            "",
            "All `crm_sync` runs by state at the end: "
            f"{', '.join(f'{n} {s}' for s, n in states.most_common())}. Leads the "
            f"API refused: {refused}. The stack stopped with SIGTERM: "
            f"{results.stack_exit}.",
        ]
    return lines


def headlines(plan: Plan, results: Results) -> list[headline.Figure]:
    """Calls per lead per account, the sustained rate, the latency per pattern."""
    figures = []
    for scenario in SCENARIOS:
        mine = [run for run in results.calls if run.scenario is scenario]
        label = f"CRM API calls per synced lead: {scenario.label}"
        if not mine:
            figures.append(headline.skipped(label, "the calls part did not run"))
            continue
        per_lead = [run.api_calls / run.leads for run in mine]
        figures.append(
            headline.measured(
                label,
                "calls",
                per_lead,
                target=f"≤ {scenario.target}",
                met=max(per_lead) <= scenario.target,
                note=f"{mine[0].leads:,} leads a run; the highest run decides",
            )
        )
    sustained = f"≥ {SUSTAINED_TARGET_SHARE:.0%} of {SUSTAINED_CEILING:,.0f} leads/s"
    label = (
        f"Sustained sync at HubSpot's {HUBSPOT_PER_TEN_SECONDS} calls per 10 s, "
        f"{plan.workers} workers"
    )
    rates = [r.rate for r in results.sustained if r.limit == HUBSPOT_PER_TEN_SECONDS]
    if rates:
        figures.append(
            headline.measured(
                label,
                "leads/s",
                rates,
                target=sustained,
                met=statistics.median(rates)
                >= SUSTAINED_TARGET_SHARE * SUSTAINED_CEILING,
                note=f"{results.sustained_queued:,} leads a run",
            )
        )
    else:
        figures.append(
            headline.skipped(label, "the sustained part did not run", target=sustained)
        )
    for pattern in results.latency:
        p95 = percentile(pattern.latencies, 95)
        figures.append(
            headline.measured(
                f"`POST /api/leads` → lead in the sandbox, default stack, "
                f"{pattern.description}: p95",
                "s",
                [p95],
                target=f"≤ {LATENCY_TARGET_P95_S:.0f} s, every lead arrives",
                met=pattern.missing == 0 and p95 <= LATENCY_TARGET_P95_S,
                note=f"one run of {len(pattern.posted)} leads",
            )
        )
    if "latency" not in plan.parts:
        figures.append(
            headline.skipped(
                "`POST /api/leads` → lead in the sandbox", "not in --parts"
            )
        )
    return figures


def _positive(most: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = int(value)
        if not 1 <= number <= most:
            raise argparse.ArgumentTypeError(f"must be between 1 and {most:,}")
        return number

    return parse


def _seconds(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 60:
        raise argparse.ArgumentTypeError("must be between 0 and 60 seconds")
    return number


def _parts(value: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(p.strip() for p in value.split(",") if p.strip()))
    if not chosen or any(p not in PARTS for p in chosen):
        raise argparse.ArgumentTypeError(f"choose from {','.join(PARTS)}")
    return chosen


def parse_plan(argv: list[str]) -> Plan:
    """The plan from the command line; `--quick` lowers every default size."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.crm_sync",
        description="Benchmarks CRM sync against the bundled sandbox on loopback "
        f"and writes {RESULTS.relative_to(REPO_ROOT)}.",
    )
    parser.add_argument("--parts", type=_parts, default=PARTS, help="default all")
    parser.add_argument("--leads", type=_positive(MAX_LEADS), help="per calls run")
    parser.add_argument("--repeats", type=_positive(MAX_REPEATS))
    parser.add_argument("--batch-size", type=_positive(2000), default=200)
    parser.add_argument("--sustained-leads", type=_positive(MAX_LEADS))
    parser.add_argument("--sustained-repeats", type=_positive(MAX_REPEATS))
    parser.add_argument("--workers", type=_positive(MAX_WORKERS), default=2)
    parser.add_argument(
        "--pressure-limit",
        type=int,
        choices=range(0, HUBSPOT_PER_TEN_SECONDS),
        default=PRESSURE_LIMIT,
        metavar=f"0..{HUBSPOT_PER_TEN_SECONDS - 1}",
        help="HubSpot calls per 10 s of one more sustained run, low enough that "
        f"the budget must pace the workers (default {PRESSURE_LIMIT}; 0 skips)",
    )
    parser.add_argument(
        "--small-leads",
        type=int,
        help="leads of the run under --pressure-limit and of the profiled "
        "single-worker run; 0 skips both",
    )
    parser.add_argument("--latency-leads", type=_positive(MAX_LATENCY_LEADS))
    parser.add_argument("--spacing", type=_seconds, default=0.5)
    parser.add_argument("--bursts", type=_positive(MAX_LATENCY_LEADS))
    parser.add_argument("--burst-size", type=_positive(MAX_LATENCY_LEADS))
    parser.add_argument("--burst-gap", type=_seconds, default=8.0)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: "
        + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in QUICK.items()),
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL

    def size(name: str) -> int:
        given = getattr(args, name)
        return sizes[name] if given is None else given

    return Plan(
        parts=args.parts,
        leads=size("leads"),
        repeats=size("repeats"),
        batch_size=args.batch_size,
        sustained_leads=size("sustained_leads"),
        sustained_repeats=size("sustained_repeats"),
        workers=args.workers,
        pressure_limit=args.pressure_limit,
        small_leads=max(0, min(MAX_LEADS, size("small_leads"))),
        latency_leads=size("latency_leads"),
        spacing=args.spacing,
        bursts=size("bursts"),
        burst_size=size("burst_size"),
        burst_gap=args.burst_gap,
    )


@contextmanager
def _part(results: Results, name: str) -> Iterator[None]:
    """Notes the load average as the part begins and how long it took."""
    results.loads[name] = machine.load_average()
    started = time.perf_counter()
    try:
        yield
    finally:
        results.durations[name] = time.perf_counter() - started


def _calls_part(
    sandbox: Sandbox, folder: Path, plan: Plan, results: Results, prefix: str
) -> None:
    template = folder / "calls.db"
    started = time.perf_counter()
    results.calls_queued = fill_store(template, plan.leads, prefix)
    results.intake_s["calls store"] = time.perf_counter() - started
    results.calls = measure_calls(sandbox, folder, template, results.calls_queued, plan)
    template.unlink()


def _sustained_part(
    sandbox: Sandbox, folder: Path, plan: Plan, results: Results, prefix: str
) -> None:
    template = folder / "sustained.db"
    started = time.perf_counter()
    results.sustained_queued = fill_store(template, plan.sustained_leads, prefix)
    results.intake_s["sustained store"] = time.perf_counter() - started
    results.sustained = measure_sustained(
        sandbox,
        folder,
        template,
        results.sustained_queued,
        plan,
        HUBSPOT_PER_TEN_SECONDS,
        plan.sustained_repeats,
    )
    template.unlink()
    if not plan.small_leads:
        return

    # The run under a limit the workers outrun, and the profiled run.
    template = folder / "small.db"
    results.small_queued = fill_store(template, plan.small_leads, f"{prefix}p")
    if plan.pressure_limit:
        results.sustained += measure_sustained(
            sandbox,
            folder,
            template,
            results.small_queued,
            plan,
            plan.pressure_limit,
            1,
        )
    results.profile = profile_worker(
        sandbox, folder, template, results.small_queued, plan
    )
    template.unlink()


def _latency_part(folder: Path, plan: Plan, results: Results) -> None:
    stack_dir = folder / "stack"
    stack_dir.mkdir()
    with running_stack(stack_dir) as stack:
        _progress("[latency] stack up, every deployment READY")
        results.latency = measure_latency(stack, plan)
        results.flow_runs = crm_sync_runs(stack)
        code = stop_stack(stack)
    results.stack_exit = f"exit status {code}" if code is not None else "killed"
    if code != 0:
        results.problems.append(
            f"`orchestrator up` did not stop cleanly ({results.stack_exit}):\n"
            f"{tail(stack.log)}"
        )


def run(plan: Plan, results: Results) -> None:
    """Runs the chosen parts into `results`; every server stops before it returns."""
    with tempfile.TemporaryDirectory(prefix="bench-crm-sync-") as scratch:
        folder = Path(scratch)
        run_id = secrets.token_hex(3)
        if "calls" in plan.parts or "sustained" in plan.parts:
            with sandbox_process(folder) as sandbox:
                if "calls" in plan.parts:
                    with _part(results, "calls"):
                        _calls_part(sandbox, folder, plan, results, f"c{run_id}")
                if "sustained" in plan.parts:
                    with _part(results, "sustained"):
                        _sustained_part(sandbox, folder, plan, results, f"s{run_id}")
        if "latency" in plan.parts:
            with _part(results, "latency"):
                _latency_part(folder, plan, results)


def main(argv: list[str]) -> int:
    """Runs the benchmark, prints the report and writes it to `bench/results/`.

    Returns:
        0 when every lead synced exactly once and every server behaved, else 1.
    """
    # A developer's own `ORCH_*` settings (another CRM, a tier, a store) would
    # change what the engine in this process measures.
    for name in [name for name in os.environ if name.startswith("ORCH_")]:
        del os.environ[name]
    if argv[:1] == ["--worker"]:
        return worker_main(json.loads(os.environ["BENCH_WORKER"]))
    plan = parse_plan(argv)
    results = Results()
    try:
        run(plan, results)
    except ServerFailed as exc:
        results.problems.append(str(exc).replace("\n", " / "))
    for pattern in results.latency:
        if pattern.missing or pattern.refused:
            results.problems.append(
                f"latency, {pattern.name}: {pattern.missing} leads never reached "
                f"the sandbox within {ARRIVAL_TIMEOUT_S:.0f} s, "
                f"{pattern.refused} refused by the API"
            )

    results.loads["at the end"] = machine.load_average()
    text = report(argv, plan, results)
    print(text, end="")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    _progress(f"report written to {os.path.relpath(RESULTS)}")
    headline.record(
        "crm_sync",
        argv,
        headlines(plan, results),
        report=RESULTS,
        smoke="--quick" in argv,
    )
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
