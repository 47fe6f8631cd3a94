"""Fuzzy matching at intake: merged, flagged or new, alone and in batches."""

from __future__ import annotations

from sqlalchemy import func, select

from leads.intake import submit, submit_batch
from leads.store import duplicates
from leads.store.tables import Lead, MatchKey, TimelineEvent

ROBERT = {
    "first_name": "Robert",
    "last_name": "O'Neil",
    "phone": "+1 415 555 0100",
    "company": "Acme Corp",
    "city": "San Francisco",
}


def take(store, data):
    return submit(store, "default", data, channel="api", region="US")


def batch(store, items):
    return submit_batch(store, "default", items, channel="api", region="US")


def lead_count(store) -> int:
    with store.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(Lead)).scalar_one()


def reviews(store):
    with store.read("default") as scope:
        rows, _ = duplicates.page(scope, None, 100, None)
        return rows


def events(store, lead_id):
    with store.read("default") as scope:
        return list(
            scope.session.scalars(
                scope.select(TimelineEvent)
                .where(TimelineEvent.lead_id == lead_id)
                .order_by(TimelineEvent.id)
            )
        )


class TestOneLeadAtATime:
    def test_the_same_person_without_an_e_mail_is_merged_into_the_stored_lead(
        self, store
    ):
        first = take(store, {**ROBERT, "email": "bob@acme.example"})

        again = take(
            store,
            {
                "first_name": "Rob",
                "last_name": "ONeil",
                "phone": "(415) 555-0100",
                "job_title": "CTO",
            },
        )

        assert again.outcome == "merged"
        assert again.lead.id == first.lead.id
        assert again.lead.job_title == "CTO"
        assert lead_count(store) == 1
        merged = events(store, first.lead.id)[-1]
        assert merged.kind == "lead.merged"
        assert merged.detail["matched"]["lead_id"] == first.lead.id
        assert "same_phone" in merged.detail["matched"]["reasons"]

    def test_a_phone_only_lead_gains_the_address_of_its_later_self(self, store):
        first = take(store, ROBERT)

        again = take(store, {**ROBERT, "email": "robert@acme.example"})

        assert again.outcome == "merged"
        assert again.lead.id == first.lead.id
        assert again.lead.email == "robert@acme.example"
        assert "missing_email" not in again.lead.warnings

    def test_one_person_with_two_addresses_is_flagged_never_merged(self, store):
        first = take(store, {**ROBERT, "email": "bob@acme.example"})

        second = take(store, {**ROBERT, "email": "robert.oneil@gmail.com"})

        assert second.outcome == "possible_duplicate"
        assert lead_count(store) == 2
        [item] = reviews(store)
        assert (item.lead_id, item.duplicate_of_id, item.reason) == (
            second.lead.id,
            first.lead.id,
            "similar_details",
        )
        assert f"possible_duplicate_of:{first.lead.id}" in second.lead.flags

    def test_two_people_sharing_a_common_name_are_left_alone(self, store):
        take(
            store,
            {
                "email": "john.smith@acme.example",
                "first_name": "John",
                "last_name": "Smith",
                "city": "Boston",
            },
        )

        other = take(
            store,
            {
                "email": "jsmith77@initech.example",
                "first_name": "John",
                "last_name": "Smith",
                "city": "Denver",
            },
        )

        assert other.outcome == "created"
        assert reviews(store) == []

    def test_every_lead_keeps_its_blocking_keys_and_gains_new_ones(self, store):
        first = take(store, {**ROBERT, "email": "bob@acme.example"})
        take(store, {"email": "bob@acme.example", "last_name": "Nolan"})

        with store.engine.connect() as connection:
            keys = set(
                connection.scalars(
                    select(MatchKey.key).where(MatchKey.lead_id == first.lead.id)
                )
            )
        assert any(key.startswith("phone:") for key in keys)
        assert len([key for key in keys if key.startswith("surname:")]) == 2


class TestBatches:
    def test_a_batch_item_like_a_stored_lead_is_merged_as_alone(self, store):
        first = take(store, {**ROBERT, "email": "bob@acme.example"})

        [result, other] = batch(
            store,
            [
                {"first_name": "Robert", "last_name": "O'Neil", "phone": "4155550100"},
                {"email": "someone@else.example", "first_name": "Ann"},
            ],
        )

        assert (result.outcome, result.lead_id) == ("merged", first.lead.id)
        assert other.outcome == "created"
        assert lead_count(store) == 2

    def test_two_items_of_one_person_in_a_batch_become_one_lead(self, store):
        results = batch(store, [ROBERT, {**ROBERT, "job_title": "CTO"}])

        assert [r.outcome for r in results] == ["created", "merged"]
        assert results[0].lead_id == results[1].lead_id
        assert lead_count(store) == 1

    def test_a_batch_ends_with_the_leads_of_its_items_taken_one_by_one(self, store):
        items = [
            ROBERT,
            {"email": "ann@example.com", "first_name": "Ann", "last_name": "Lee"},
            {**ROBERT, "email": "bob@acme.example"},
            {
                "email": "ann.lee@gmail.com",
                "first_name": "Ann",
                "last_name": "Lee",
                "phone": "+1 212 555 0199",
            },
            {"first_name": "Ann", "last_name": "Lee", "phone": "212-555-0199"},
        ]
        for item in items:
            take(store, item)
        one_by_one = lead_count(store)
        with store.engine.begin() as connection:
            for model in (MatchKey, TimelineEvent, Lead):
                connection.execute(model.__table__.delete())

        results = batch(store, items)

        assert lead_count(store) == one_by_one == 3
        assert results[2].outcome == "merged"
        assert results[2].lead_id == results[0].lead_id
