"""A new lead through intake: none of its own rows is looked for before it is made."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event, func, select

from leads.intake import submit
from leads.store.tables import MatchKey, OutboxItem

ADA = {"email": "ada@example.com", "first_name": "Ada", "company": "Analytical"}


@contextmanager
def statements(store) -> Iterator[list[str]]:
    """Every statement sent to the store inside the block, upper-cased."""
    sent: list[str] = []

    def note(conn, cursor, statement, *args):
        sent.append(" ".join(statement.split()).upper())

    event.listen(store.engine, "before_cursor_execute", note)
    try:
        yield sent
    finally:
        event.remove(store.engine, "before_cursor_execute", note)


def _reads_of_own_rows(sent: list[str]) -> list[str]:
    """Reads of a lead's own outbox rows or match keys (by its id or key)."""
    return [
        s
        for s in sent
        if s.startswith("SELECT OUTBOX.")
        or (
            s.startswith("SELECT LEAD_MATCH_KEYS.KEY FROM LEAD_MATCH_KEYS WHERE")
            and "LEAD_MATCH_KEYS.LEAD_ID =" in s
        )
    ]


def owed(store, lead_id: str) -> list[tuple[str, str, int]]:
    with store.read("default") as scope:
        return sorted(
            (row.topic, row.status, row.generation)
            for row in scope.session.scalars(
                scope.select(OutboxItem).where(OutboxItem.lead_id == lead_id)
            )
        )


def keys_of(store, lead_id: str) -> int:
    with store.read("default") as scope:
        return scope.session.scalar(
            select(func.count()).where(MatchKey.lead_id == lead_id)
        )


def test_a_new_lead_reads_none_of_its_own_rows_and_is_owed_its_work(store):
    with statements(store) as sent:
        result = submit(store, "default", ADA, channel="api", region="US")

    assert result.outcome == "created"
    assert _reads_of_own_rows(sent) == []
    assert owed(store, result.lead.id) == [
        ("crm_sync", "pending", 1),
        ("sequence_enrolment", "pending", 1),
    ]
    assert keys_of(store, result.lead.id) > 0


def test_an_update_still_finds_its_rows_and_requeues_the_sync_once(store):
    first = submit(store, "default", ADA, channel="api", region="US")
    keys = keys_of(store, first.lead.id)

    with statements(store) as sent:
        again = submit(
            store,
            "default",
            ADA | {"company": "Difference Engines"},
            channel="api",
            region="US",
        )

    assert (again.outcome, again.lead.id) == ("updated", first.lead.id)
    assert _reads_of_own_rows(sent) != []
    assert owed(store, first.lead.id) == [
        ("crm_sync", "pending", 2),
        ("sequence_enrolment", "pending", 1),
    ]
    assert keys_of(store, first.lead.id) >= keys
