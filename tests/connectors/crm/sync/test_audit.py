"""A CRM sync records each lead it parks in the audit log, one INSERT per batch."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import event, select

from connectors.crm.accounts import account_from_settings
from connectors.crm.mapping import load_mapping_document
from leads.store.tables import AuditEvent, Lead

RUN_ID = "00000000-0000-0000-0000-000000000001"


def parked_records(store) -> list[AuditEvent]:
    with store.read("default") as scope:
        return list(
            scope.session.scalars(
                scope.select(AuditEvent).where(AuditEvent.action == "crm.parked")
            )
        )


def test_leads_the_crm_refuses_are_parked_with_one_audit_insert_for_the_batch(
    store, settings, sandbox_api, take_in, run_sync
):
    account = account_from_settings(settings)
    document = {
        "provider": "hubspot",
        "fields": {
            "firstname": {"source": "first_name"},
            "shoe_size": {"constant": 44},
        },
    }
    broken = replace(account, mapping=load_mapping_document(document, origin="test"))
    leads = [take_in(email=f"p{n}@example.com", first_name="Pat") for n in range(3)]
    inserts: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO AUDIT_EVENTS"):
            inserts.append(statement)

    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        counts = run_sync(settings, accounts=lambda tenant: broken)
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)

    assert counts["parked"] == 3
    assert len(inserts) == 1
    with store.read("default") as scope:
        reasons = dict(
            scope.session.execute(select(Lead.id, Lead.crm_sync_reason)).all()
        )
    records = parked_records(store)
    assert {r.target_id for r in records} == {lead.id for lead in leads}
    for record in records:
        assert (record.kind, record.actor, record.target_type) == (
            "decision",
            "system",
            "lead",
        )
        assert record.flow_run_id == RUN_ID
        assert record.detail == {"reason": reasons[record.target_id], "attempt": 1}
        assert "pat" not in str(record.detail).lower()


def test_leads_written_to_the_crm_leave_no_parked_record(
    store, settings, sandbox_api, take_in, run_sync
):
    take_in(email="fine@example.com")

    assert run_sync(settings)["created"] == 1
    assert parked_records(store) == []
