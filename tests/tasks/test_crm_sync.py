"""The CRM upsert task in real flow runs against the sandbox: results name the run."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from prefect import flow, runtime
from sqlalchemy import select

from connectors.crm.sync import CrmSync
from connectors.sandbox.server import running_sandbox
from leads.intake import submit
from leads.settings import Settings
from leads.store.claims import claim
from leads.store.outbox import CRM_SYNC
from leads.store.tables import Lead, TimelineEvent
from tasks.crm_sync import upsert_leads

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    with running_sandbox() as (url, _):
        yield url


@pytest.fixture
def settings(sandbox_url, tmp_path) -> Settings:
    with httpx.Client(base_url=sandbox_url, timeout=30) as http:
        assert http.post("/_sandbox/reset").status_code == 204
    return Settings(
        data_dir=tmp_path,
        crm="sandbox",
        sandbox_port=int(sandbox_url.rsplit(":", 1)[1]),
        sandbox_crm="hubspot",
    )


@flow(name="crm-upserts-in-a-test")
def sync_once(store, settings: Settings, in_thread: bool) -> dict[str, int]:
    """One batch as a crm_sync run writes it, or in a worker thread.

    The sync is given no run id: the task's own run is what the events name.
    """
    sync = CrmSync(store, settings, None)
    try:
        claims = claim(
            store,
            CRM_SYNC,
            str(runtime.flow_run.id),
            limit=50,
            lease=timedelta(minutes=5),
        )
        if in_thread:
            return upsert_leads.submit(claims, sync=sync).result()
        return upsert_leads(claims, sync=sync)
    finally:
        sync.close()


@pytest.mark.parametrize("in_thread", [False, True], ids=["called", "submitted"])
def test_each_lead_written_gets_one_result_event_naming_the_flow_run(
    store, settings, on_prefect, in_thread
):
    for address in ("ada@example.com", "grace@example.com"):
        submit(store, "default", {"email": address}, channel="api", region="US")

    state = sync_once(store, settings, in_thread, return_state=True)

    assert state.result() == {"created": 2}
    run_id = str(state.state_details.flow_run_id)
    with store.read("default") as scope:
        leads = {lead.id: lead for lead in scope.session.scalars(select(Lead))}
        events = list(
            scope.session.scalars(
                select(TimelineEvent).where(TimelineEvent.source == "crm_sync")
            )
        )
    assert sorted(event.lead_id for event in events) == sorted(leads)
    for event in events:
        lead = leads[event.lead_id]
        assert (event.kind, event.flow_run_id) == ("crm.created", run_id)
        assert event.detail["crm_id"] == lead.crm_id
        assert event.detail["account"] == lead.crm_account
        assert (event.detail["crm"], event.detail["provider"]) == (
            "sandbox",
            "hubspot",
        )
