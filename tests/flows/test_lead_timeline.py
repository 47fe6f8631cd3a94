"""A lead's whole story on its timeline after real flow runs: import, CRM sync, e-mail.

Each flow runs in this process on the session's Prefect server, against a new
SQLite store and the CRM sandbox over HTTP; every event names the run that
wrote it, so the timeline leads to each run in the Prefect UI.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from connectors.sandbox.server import running_sandbox
from flows.crm_sync import crm_sync
from flows.lead_import import import_leads
from flows.sequence_dispatch import dispatch_sequence
from leads import importer
from leads.settings import get_settings
from leads.store import Store
from leads.store.tables import Lead, TimelineEvent

pytestmark = pytest.mark.slow

FILE = (
    b"email,first_name,last_name,job_title,phone\r\n"
    b"ada@example.com,Ada,Lovelace,VP Engineering,4.15556E+09\r\n"
)


@pytest.fixture(scope="module")
def sandbox_port() -> Iterator[int]:
    with running_sandbox() as (url, _):
        yield int(url.rsplit(":", 1)[1])


@pytest.fixture
def store(flow_store, sandbox_port) -> Store:
    """A new store, with the sandbox as HubSpot for the CRM sync."""
    return flow_store(
        ORCH_CRM="sandbox",
        ORCH_SANDBOX_CRM="hubspot",
        ORCH_SANDBOX_PORT=str(sandbox_port),
    )


def run_id(state) -> str:
    assert state.is_completed(), state
    return str(state.state_details.flow_run_id)


def test_an_imported_lead_tells_its_import_sync_and_welcome_email_in_order(store):
    settings = get_settings()
    row = importer.accept(
        store,
        "default",
        io.BytesIO(FILE),
        filename="leads.csv",
        folder=settings.import_dir,
        max_bytes=settings.max_import_bytes,
    )

    imported = run_id(import_leads(import_id=row.id, return_state=True))
    synced = run_id(crm_sync(idle_grace_seconds=0, return_state=True))
    sent = run_id(dispatch_sequence(idle_grace_seconds=0, return_state=True))

    with store.read("default") as scope:
        [lead] = scope.session.scalars(scope.select(Lead)).all()
        events = list(
            scope.session.scalars(
                scope.select(TimelineEvent)
                .where(TimelineEvent.lead_id == lead.id)
                .order_by(TimelineEvent.id)
            )
        )
    assert [(e.kind, e.source, e.flow_run_id) for e in events] == [
        ("lead.created", "import", imported),
        ("crm.created", "crm_sync", synced),
        ("email.sent", "sequence:welcome_sequence", sent),
    ]
    assert len({imported, synced, sent}) == 3
    created, crm, email = (event.detail for event in events)

    assert created["channel"] == "import"
    assert created["reference"] == f"import:{row.id}#1"
    assert created["warnings_added"] == ["phone_mangled_by_spreadsheet"]
    assert created["score"] == {
        "from": None,
        "to": lead.score,
        "reasons": lead.score_reasons,
    }
    assert lead.score_reasons

    assert crm["crm_id"] == lead.crm_id is not None
    assert (crm["crm"], crm["provider"], crm["account"]) == (
        "sandbox",
        "hubspot",
        lead.crm_account,
    )

    assert (email["sequence"], email["step_id"]) == (
        "welcome_sequence",
        "welcome_1",
    )
