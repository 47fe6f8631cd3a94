"""New leads taken in together (`store_many`, as an import chunk writes them)."""

from __future__ import annotations

from sqlalchemy import event

from leads.intake import IntakeResult, prepare, store_many
from leads.store.tables import Lead

PEOPLE = [
    {"email": "ada@example.com", "first_name": "Ada", "company": "Analytical"},
    {"email": "grace@example.org", "first_name": "Grace", "company": "Cobol Corp"},
    {"email": "edsger@example.net", "first_name": "Edsger", "company": "Semaphore"},
]


def test_new_leads_go_in_with_one_insert_holding_every_column_default(store):
    items = [
        (f"import:bulk#{n}", prepare(person, "US")) for n, person in enumerate(PEOPLE)
    ]
    inserts: list[str] = []

    def count(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("INSERT INTO LEADS "):
            inserts.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        with store.write("default") as scope:
            results = store_many(scope, items, channel="import")
    finally:
        event.remove(store.engine, "before_cursor_execute", count)

    assert [
        result.outcome for result in results if isinstance(result, IntakeResult)
    ] == ["created"] * len(PEOPLE)
    # One multi-row INSERT: a refused one would be followed by one per lead.
    assert len(inserts) == 1
    with store.read("default") as scope:
        stored = scope.session.scalars(scope.select(Lead)).all()
    assert sorted(lead.email for lead in stored) == sorted(p["email"] for p in PEOPLE)
    assert {
        (lead.email_opt_out, lead.crm_sync_status, lead.status, lead.version)
        for lead in stored
    } == {(False, "pending", "new", 1)}
    assert all(
        lead.crm_state == {} and lead.email_state == {} and lead.custom == {}
        for lead in stored
    )
