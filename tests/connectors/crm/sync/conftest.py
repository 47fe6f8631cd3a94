"""A CRM sandbox over real HTTP, and a sync of the store's queued leads into it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from connectors.crm.accounts import CrmAccount
from connectors.crm.sync import CrmSync
from connectors.sandbox.server import running_sandbox
from leads.intake import submit
from leads.settings import Settings
from leads.store import Store, outbox
from leads.store.outbox import CRM_SYNC
from leads.store.tables import Lead
from tasks.drain import DrainLimits, drain


@pytest.fixture(scope="module")
def sandbox() -> Iterator[tuple[str, object]]:
    with running_sandbox() as served:
        yield served


@pytest.fixture
def sandbox_api(sandbox) -> Iterator[httpx.Client]:
    """The sandbox's own routes (records, faults, controls), emptied first."""
    url, _ = sandbox
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.post("/_sandbox/reset").status_code == 204
        yield http


def sandbox_settings(url: str, tmp_path: Path, **overrides: object) -> Settings:
    port = int(url.rsplit(":", 1)[1])
    values = {
        "data_dir": tmp_path,
        "crm": "sandbox",
        "sandbox_port": port,
        "sandbox_crm": "hubspot",
    } | overrides
    return Settings(**values)


@pytest.fixture
def make_settings(sandbox, sandbox_api, tmp_path) -> Callable[..., Settings]:
    """Settings pointing at the sandbox, with any field changed."""
    return lambda **overrides: sandbox_settings(sandbox[0], tmp_path, **overrides)


@pytest.fixture
def settings(make_settings) -> Settings:
    return make_settings()


@pytest.fixture
def take_in(store: Store) -> Callable[..., Lead]:
    def take(tenant: str = "default", **fields: object) -> Lead:
        return submit(store, tenant, fields, channel="api", region="US").lead

    return take


@pytest.fixture
def opt_out(store: Store) -> Callable[..., None]:
    """Marks a lead opted out of e-mail and queues its sync, as an unsubscribe does."""

    def mark(lead_id: str, tenant: str = "default") -> None:
        with store.write(tenant) as scope:
            lead = scope.get(Lead, lead_id, lock=True)
            lead.email_opt_out = True
            lead.crm_sync_status = "pending"
            outbox.enqueue(scope, CRM_SYNC, lead)

    return mark


@pytest.fixture
def run_sync(store: Store) -> Callable[..., dict[str, int]]:
    """Drains the CRM outbox once, as a crm_sync run would, and returns its counts."""

    def run(
        settings: Settings,
        *,
        accounts: Callable[[str], CrmAccount | None] | None = None,
        **limits: object,
    ) -> dict[str, int]:
        # Back-off waits are cut short: the tests check what happens, not how
        # long the connector waits before retrying. `accounts` stands in for
        # the tenants' configured CRM accounts.
        sync = CrmSync(
            store,
            settings,
            flow_run_id="00000000-0000-0000-0000-000000000001",
            accounts=accounts,
            sleep=lambda seconds: time.sleep(min(seconds, 0.01)),
        )
        try:
            sync.follow_accounts()
            return drain(
                store,
                CRM_SYNC,
                owner="test-run",
                handle=sync.handle,
                limits=DrainLimits(idle_grace_seconds=0, **limits),
            )
        finally:
            sync.close()

    return run


@pytest.fixture
def salesforce_settings(make_settings) -> Settings:
    """Settings pointing at the sandbox used as Salesforce (by `Web_Lead_Id__c`)."""
    return make_settings(sandbox_crm="salesforce")


@pytest.fixture
def salesforce_leads(sandbox_api) -> Callable[[], dict[str, dict]]:
    """The sandbox's Salesforce Leads by Id, as the REST API returns them."""

    def leads() -> dict[str, dict]:
        listed = sandbox_api.get("/_sandbox/salesforce/leads").json()
        return {lead["Id"]: lead for lead in listed}

    return leads
