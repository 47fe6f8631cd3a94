"""The outbox: one row per (topic, key), requeued on change, enrolled once."""

from __future__ import annotations

from leads.edits import patch
from leads.intake import submit
from leads.store import outbox
from leads.store.tables import OutboxItem


def take(store, data, tenant="default"):
    """Submits one lead through the API's channel."""
    return submit(store, tenant, data, channel="api", region="US")


def rows(store, topic):
    with store.read("default") as scope:
        return list(
            scope.session.scalars(
                scope.select(OutboxItem).where(OutboxItem.topic == topic)
            )
        )


def test_changes_bump_one_crm_sync_row(store):
    lead = take(store, {"email": "a@example.com"}).lead
    take(store, {"email": "a@example.com", "city": "Oslo"})
    with store.write("default") as scope:
        patch(scope, lead.id, {"company": "Acme"}, channel="api", region="US")

    (sync,) = rows(store, outbox.CRM_SYNC)
    assert (sync.status, sync.generation) == ("pending", 3)
    (enrolment,) = rows(store, outbox.SEQUENCE_ENROLMENT)
    assert enrolment.payload["sequence"] == "welcome_sequence"
    assert enrolment.generation == 1, "an update never enrols twice"


def test_a_claimed_row_stays_claimed_but_learns_of_the_change(store):
    lead = take(store, {"email": "a@example.com"}).lead
    with store.write("default") as scope:
        row = scope.session.scalars(
            scope.select(OutboxItem).where(OutboxItem.topic == outbox.CRM_SYNC)
        ).one()
        row.status = "claimed"
        row.lease_owner = "run-1"

    with store.write("default") as scope:
        patch(scope, lead.id, {"company": "Acme"}, channel="api", region="US")

    (sync,) = rows(store, outbox.CRM_SYNC)
    assert (sync.status, sync.lease_owner, sync.generation) == ("claimed", "run-1", 2)


def test_counts_by_topic_and_status(store):
    take(store, {"email": "a@example.com"})
    take(store, {"phone": "+14155550100"})

    with store.read("default") as scope:
        counted = outbox.count_by_status(scope)

    assert counted == {"crm_sync": {"pending": 2}, "sequence_enrolment": {"pending": 1}}
