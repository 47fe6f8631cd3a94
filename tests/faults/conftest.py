"""The CRM side of the fault suite: a sandbox CRM to break, leads, syncs to run.

Each case takes in leads through the product's intake, breaks the sandbox CRM
(faults armed through `POST /_sandbox/faults`, or its own knobs: limits,
expired sessions), runs CRM syncs as `crm_sync` runs them, and ends with the
ledger (`tests/faults/crm_ledger.py`). Stores come from `tests/conftest.py`
(the `store` fixture, or `new_store_url`), so the scaled configuration moves
them to PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from connectors.crm.accounts import CrmAccount, account_from_settings
from connectors.crm.sync import DEFAULT_LEASE, CrmSync, retry_parked
from connectors.sandbox.salesforce.state import DEFAULT_DAILY_ALLOCATION
from connectors.sandbox.server import running_sandbox
from leads.intake import submit_batch
from leads.settings import Settings
from leads.store import Store
from leads.store.outbox import CRM_SYNC
from leads.store.tables import OutboxItem, RateBudgetRow, utcnow
from tasks.drain import DrainLimits, drain

VENDORS = ["hubspot", "salesforce"]

# The request path of each vendor's record writes, as a fault's `path` pattern:
# HubSpot's batch upsert; Salesforce's upsert by external id (a collection, or
# one record), or, keyed by e-mail, its creates and updates.
WRITE_PATHS = {
    "hubspot": r"/crm/v3/objects/contacts/batch/upsert$",
    "salesforce": r"/sobjects/Lead/Web_Lead_Id__c",
    "salesforce-email": r"/composite/sobjects$|/sobjects/Lead/?$",
}
# How many records one write call carries.
CHUNK = {"hubspot": 100, "salesforce": 200}
# The sandbox's token endpoints, as counted in its request logs.
TOKEN_REQUESTS = {"hubspot": "POST /oauth/v1/token", "salesforce": "token"}


class SandboxCrm:
    """The sandbox acting as one vendor's CRM: its records, its faults, its knobs."""

    def __init__(self, vendor: str, url: str, http: httpx.Client, data_dir: Path):
        self.vendor = vendor
        self.url = url
        self.http = http
        self.data_dir = data_dir
        # Salesforce finds Leads by our lead id (`Web_Lead_Id__c`) unless a
        # case switches it to e-mail.
        self.keyed_by_email = False

    @property
    def write_path(self) -> str:
        if self.vendor == "salesforce" and self.keyed_by_email:
            return WRITE_PATHS["salesforce-email"]
        return WRITE_PATHS[self.vendor]

    @property
    def chunk(self) -> int:
        return CHUNK[self.vendor]

    def settings(self, **overrides: Any) -> Settings:
        """Settings whose `ORCH_CRM` is this sandbox as this vendor."""
        values = {
            "data_dir": self.data_dir,
            "crm": "sandbox",
            "sandbox_port": int(self.url.rsplit(":", 1)[1]),
            "sandbox_crm": self.vendor,
        } | overrides
        return Settings(**values)

    def account(self, **credentials: Any) -> CrmAccount:
        """The sandbox account, its credentials changed as given.

        Salesforce keyed by e-mail (`keyed_by_email`) drops the external id.
        """
        account = account_from_settings(self.settings())
        assert account is not None
        changes = dict(credentials)
        if self.vendor == "salesforce" and self.keyed_by_email:
            changes["external_id_field"] = None
        if not changes:
            return account
        if self.vendor == "hubspot" and "refresh_token" in changes:
            # An OAuth app instead of the private-app token.
            values = account.credentials.model_dump() | changes
            values["access_token"] = None
            credentials_type = type(account.credentials)
            return replace(account, credentials=credentials_type(**values))
        return replace(
            account, credentials=account.credentials.model_copy(update=changes)
        )

    def arm(self, **spec: Any) -> None:
        """Arms a fault on this vendor's routes (`POST /_sandbox/faults`)."""
        response = self.http.post(
            "/_sandbox/faults", json={"vendor": self.vendor} | spec
        )
        assert response.status_code == 201, response.text

    def arm_writes(self, **spec: Any) -> None:
        """Arms a fault on this vendor's record writes."""
        self.arm(path=self.write_path, **spec)

    def disarm(self) -> None:
        self.http.delete("/_sandbox/faults").raise_for_status()

    def faults_left(self) -> list[dict[str, Any]]:
        return self.http.get("/").json()["faults"]

    def record_count(self) -> int:
        route = (
            "/_sandbox/hubspot/contacts"
            if self.vendor == "hubspot"
            else "/_sandbox/salesforce/leads"
        )
        return len(self.http.get(route).json())

    def requests(self) -> dict[str, int]:
        """How many requests each route of this vendor served."""
        answer = self.http.get(f"/_sandbox/{self.vendor}/requests").json()
        return answer["counts"] if self.vendor == "hubspot" else answer

    def token_grants(self) -> int:
        return self.requests().get(TOKEN_REQUESTS[self.vendor], 0)

    def expire_sessions(self, *, for_good: bool = False) -> None:
        """Expires every access token issued (and, `for_good`, every later one).

        HubSpot's sandbox cannot issue tokens born expired, so `for_good` is a
        401 `EXPIRED_AUTHENTICATION` on every call instead, in place of every
        fault armed before (the first fault matching a request is the one used).
        """
        if self.vendor == "salesforce":
            self.http.post(
                "/_sandbox/salesforce/sessions/expire", json={"include_new": for_good}
            ).raise_for_status()
            return
        self.http.post("/_sandbox/hubspot/oauth/expire").raise_for_status()
        if for_good:
            self.disarm()
            self.arm(
                path=r"^/crm/",
                status=401,
                body={
                    "status": "error",
                    "message": "The OAuth token used to make this call expired "
                    "1 minute(s) ago.",
                    "category": "EXPIRED_AUTHENTICATION",
                },
                times=1_000,
            )

    def renew_sessions(self) -> None:
        """Undoes `expire_sessions(for_good=True)`: new tokens work again."""
        if self.vendor == "salesforce":
            self.http.post(
                "/_sandbox/salesforce/sessions/expire", json={"include_new": False}
            ).raise_for_status()
        else:
            self.disarm()

    def limit_daily_calls(self, calls: int | None) -> None:
        """Lets `calls` more API calls through today; None restores the default."""
        if self.vendor == "hubspot":
            limits = {} if calls is None else {"daily": calls}
            self.http.put("/_sandbox/hubspot/limits", json=limits).raise_for_status()
            return
        allocation = DEFAULT_DAILY_ALLOCATION if calls is None else calls
        self.http.patch(
            "/_sandbox/salesforce/settings",
            json={"daily_allocation": allocation, "api_usage": 0},
        ).raise_for_status()


@pytest.fixture(scope="module")
def crm_sandbox() -> Iterator[str]:
    """One sandbox serving both vendors over real HTTP for the module."""
    with running_sandbox() as (url, _):
        yield url


@pytest.fixture(params=VENDORS)
def vendor(request: pytest.FixtureRequest) -> str:
    """Each vendor the sandbox stands in for (a case may parametrize its own)."""
    return request.param


@pytest.fixture
def crm(crm_sandbox: str, vendor: str, tmp_path: Path) -> Iterator[SandboxCrm]:
    """The sandbox as `vendor`'s CRM, emptied (records, faults, limits) first."""
    with httpx.Client(base_url=crm_sandbox, timeout=60) as http:
        assert http.post("/_sandbox/reset").status_code == 204
        yield SandboxCrm(vendor, crm_sandbox, http, tmp_path)
        http.delete("/_sandbox/faults")


@dataclass
class Waits:
    """Every wait the sync asked for, each cut short to `cap` seconds.

    The cases check what happens, not how long the connector waits: a
    Retry-After is recorded, honoured in order, and not slept through.
    """

    cap: float = 0.01
    asked: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        time.sleep(min(seconds, self.cap))


@dataclass
class SyncRuns:
    """Runs CRM syncs over one store as `crm_sync` runs do, each its own owner."""

    store: Store
    crm: SandboxCrm
    waits: Waits = field(default_factory=Waits)

    def __call__(
        self,
        *,
        account: CrmAccount | None = None,
        batch_size: int = 100,
        lease: timedelta = DEFAULT_LEASE,
        max_seconds: float = 120,
    ) -> dict[str, int]:
        """One run until the outbox has nothing due; returns its counts.

        Args:
            account: the default tenant's CRM account instead of the sandbox's.
            batch_size: leads claimed per batch.
            lease: how long the run's claims last (renewed before each write).
            max_seconds: bounds the run.
        """
        run_id = str(uuid.uuid4())
        sync = CrmSync(
            self.store,
            self.crm.settings(),
            run_id,
            accounts=None if account is None else (lambda tenant: account),
            sleep=self.waits,
            lease=lease,
        )
        try:
            sync.follow_accounts()
            return drain(
                self.store,
                CRM_SYNC,
                owner=run_id,
                handle=sync.handle,
                limits=DrainLimits(
                    batch_size=batch_size,
                    lease=lease,
                    idle_grace_seconds=0,
                    max_seconds=max_seconds,
                ),
                sleep=self.waits,
            )
        finally:
            sync.close()


@pytest.fixture
def run_sync(store: Store, crm: SandboxCrm) -> SyncRuns:
    """Runs CRM syncs of `store` into the sandbox CRM."""
    return SyncRuns(store, crm)


def accept(store: Store, count: int, prefix: str, tenant: str = "default") -> list[str]:
    """Takes in `count` leads through the intake (as `POST /api/leads/batch` does).

    Returns:
        The ids of the leads accepted, every one of them.
    """
    ids: list[str] = []
    for start in range(0, count, 1000):
        # A domain each: leads of one domain share a fuzzy-matching block,
        # and comparing each with all before it would cost the intake O(n²).
        items = [
            {"email": f"{prefix}{n}@{prefix}{n}.example.com", "first_name": f"P{n}"}
            for n in range(start, min(count, start + 1000))
        ]
        results = submit_batch(store, tenant, items, channel="api", region="US")
        assert all(r.lead_id for r in results), [r.errors for r in results][:3]
        ids += [r.lead_id for r in results if r.lead_id]
    return ids


def backoff_passes(store: Store) -> int:
    """Makes every row waiting out a back-off due now, as time passing would.

    Returns:
        How many rows became due.
    """
    with store.engine.begin() as connection:
        return connection.execute(
            update(OutboxItem)
            .where(OutboxItem.topic == CRM_SYNC, OutboxItem.status == "pending")
            .values(available_at=utcnow() - timedelta(seconds=1))
        ).rowcount


def daily_window_resets(store: Store) -> None:
    """The vendor's day turns over: the shared budget stops waiting for it."""
    with store.engine.begin() as connection:
        connection.execute(update(RateBudgetRow).values(blocked_until=None))


def settle(
    run: Callable[..., dict[str, int]], store: Store, tenant: str = "default", **kw: Any
) -> list[dict[str, int]]:
    """After the fault: a person retries the parked, back-offs pass, runs finish.

    At most five rounds, each a back-off passing and one run; stops once a
    run has nothing to do.

    Returns:
        Each run's counts.
    """
    retry_parked(store, tenant)
    rounds = []
    for _ in range(5):
        backoff_passes(store)
        counts = run(**kw)
        rounds.append(counts)
        if not counts:
            break
    return rounds


# What a flow-runner process does with a crm_sync run, in a process of its own.
CRM_SYNC_PROCESS = """
import json, sys
from flows.crm_sync import crm_sync
crm_sync(**json.loads(sys.argv[1]))
"""


@dataclass
class FlowRunProcess:
    """A real `crm_sync` flow run in a process of its own (and its own group)."""

    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a lost machine would: nothing runs after."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def finish(self, timeout: float) -> None:
        """Waits for the run to end by itself; fails unless it exited 0."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the crm_sync run took over {timeout:.0f} s:\n{self.tail()}")
        assert self.process.returncode == 0, self.tail()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def start_crm_sync(
    store_url: str,
    crm: SandboxCrm,
    prefect_api_url: str,
    home: Path,
    **parameters: Any,
) -> FlowRunProcess:
    """Starts a real `crm_sync` flow run in a new process.

    The run is reported to the Prefect server at `prefect_api_url` and reads
    its settings from `ORCH_*`, as a deployed run does; it logs to
    `home/run.log`.
    """
    home.mkdir(parents=True, exist_ok=True)
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ORCH_", "PREFECT_"))
    } | {
        "ORCH_DATA_DIR": str(home / "data"),
        "ORCH_DATABASE_URL": store_url,
        "ORCH_CRM": "sandbox",
        "ORCH_SANDBOX_CRM": crm.vendor,
        "ORCH_SANDBOX_PORT": crm.url.rsplit(":", 1)[1],
        "PREFECT_API_URL": prefect_api_url,
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    log = home / "run.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", CRM_SYNC_PROCESS, json.dumps(parameters)],
            env=env,
            cwd=Path(__file__).parents[2],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return FlowRunProcess(process, log)


@pytest.fixture
def crm_sync_processes(
    prefect_server, tmp_path: Path
) -> Iterator[Callable[..., FlowRunProcess]]:
    """Starts `crm_sync` runs in processes; any still running is killed after."""
    started: list[FlowRunProcess] = []

    def start(store_url: str, crm: SandboxCrm, **parameters: Any) -> FlowRunProcess:
        home = tmp_path / f"crm-sync-{len(started)}"
        run = start_crm_sync(store_url, crm, prefect_server.api_url, home, **parameters)
        started.append(run)
        return run

    yield start
    for run in started:
        if run.process.poll() is None:
            run.kill()
