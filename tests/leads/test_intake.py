"""Intake on a real store: one transaction per lead, updates by e-mail key, races."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from leads.errors import LeadRejected
from leads.intake import submit, submit_batch, take_in
from leads.store.tables import Lead, OutboxItem, TimelineEvent


def take(store, data, tenant="default"):
    """Submits one lead through the API's channel."""
    return submit(store, tenant, data, channel="api", region="US")


def counts(store) -> tuple[int, int, int]:
    with store.engine.connect() as connection:
        return tuple(
            connection.execute(select(func.count()).select_from(model)).scalar_one()
            for model in (Lead, TimelineEvent, OutboxItem)
        )


def test_create_writes_lead_event_and_outbox_in_one_transaction(store):
    result = take(store, {"email": "a@example.com"})

    assert result.outcome == "created"
    assert counts(store) == (1, 1, 2)


def test_a_failure_after_the_lead_is_written_leaves_nothing(store):
    with pytest.raises(RuntimeError), store.write("default") as scope:
        take_in(scope, {"email": "a@example.com"}, channel="api", region="US")
        scope.session.flush()
        raise RuntimeError("the process died before commit")

    assert counts(store) == (0, 0, 0)


def test_rejected_lead_raises_before_writing(store):
    with pytest.raises(LeadRejected) as caught:
        take(store, {"email": "nope"})

    assert caught.value.errors[0].field == "email"
    assert counts(store) == (0, 0, 0)


def test_update_keeps_stored_values_that_arrive_blank(store):
    take(store, {"email": "a@example.com", "company": "Acme", "custom": {"a": 1}})

    result = submit(
        store,
        "default",
        {"email": "A@example.com", "company": " ", "city": "Oslo", "b": None},
        channel="import",
        region="US",
    )

    assert result.outcome == "updated"
    assert result.lead.company == "Acme"
    assert result.lead.city == "Oslo"
    assert result.lead.custom == {"a": 1}
    assert result.lead.source == "api", "the first source stays"


def test_an_unreadable_phone_does_not_replace_a_valid_one(store):
    take(store, {"email": "a@example.com", "phone": "+14155550100"})

    result = take(store, {"email": "a@example.com", "phone": "12"})

    assert (result.lead.phone, result.lead.phone_raw) == ("+14155550100", None)


def test_tenants_never_see_each_others_leads(store):
    take(store, {"email": "a@example.com"}, tenant="acme")

    result = take(store, {"email": "a@example.com"}, tenant="globex")

    assert result.outcome == "created", (
        "the same address is a new lead in another tenant"
    )
    with store.read("acme") as scope:
        emails = [lead.tenant_id for lead in scope.session.scalars(scope.select(Lead))]
        assert scope.get(Lead, result.lead.id) is None
    assert emails == ["acme"]


def test_batch_item_results_stand_alone(store):
    results = submit_batch(
        store,
        "default",
        [{"email": "a@example.com"}, {"email": "bad"}, {"email": "b@example.com"}],
        channel="api",
        region="US",
    )

    assert [r.outcome for r in results] == ["created", "rejected", "created"]
    assert counts(store)[0] == 2


def test_concurrent_creates_of_one_address_make_one_lead(store):
    def create(i: int) -> str:
        return submit(
            store,
            "default",
            {"email": "race@example.com", "custom": {f"k{i}": i}},
            channel="api",
            region="US",
        ).outcome

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(create, range(16)))

    assert sorted(outcomes).count("created") == 1
    assert outcomes.count("updated") == 15
    with store.read("default") as scope:
        lead = scope.session.scalars(scope.select(Lead)).one()
    assert len(lead.custom) == 16, "every submission's values were merged"
    assert counts(store)[1] == 16, "one timeline event per submission"


def test_concurrent_batches_with_overlapping_addresses_lose_nothing(store):
    def batch(offset: int):
        items = [{"email": f"o{(offset + i) % 30}@example.com"} for i in range(20)]
        return submit_batch(store, "default", items, channel="api", region="US")

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = [r for rs in pool.map(batch, [0, 5, 10, 15]) for r in rs]

    assert all(r.outcome in ("created", "updated") for r in results)
    assert sum(r.outcome == "created" for r in results) == 30
    assert counts(store)[0] == 30


def test_the_same_lead_sent_again_is_on_the_timeline_but_owes_nothing(store):
    first = take(store, {"email": "same@example.com", "company": "Acme"}).lead

    again = take(store, {"email": " same@example.com ", "company": "Acme"})

    assert (again.outcome, again.changed) == ("updated", ())
    with store.read("default") as scope:
        kinds = [
            e.kind
            for e in scope.session.scalars(
                scope.select(TimelineEvent).order_by(TimelineEvent.id)
            )
        ]
        sync = scope.session.scalars(
            scope.select(OutboxItem).where(OutboxItem.topic == "crm_sync")
        ).one()
        lead = scope.get(Lead, first.id)
    assert kinds == ["lead.created", "lead.resubmitted"]
    assert sync.generation == 1, "no change, no new CRM sync"
    assert lead.version == 1


def test_a_phone_only_lead_given_an_email_later_is_enrolled_once(store):
    from leads.edits import patch

    lead = take(store, {"phone": "+14155550100"}).lead
    for address in ("later@example.com", "changed@example.com"):
        with store.write("default") as scope:
            patch(scope, lead.id, {"email": address}, channel="api", region="US")

    with store.read("default") as scope:
        enrolments = list(
            scope.session.scalars(
                scope.select(OutboxItem).where(OutboxItem.topic == "sequence_enrolment")
            )
        )
    assert [row.key for row in enrolments] == [f"{lead.id}:welcome_sequence"]
