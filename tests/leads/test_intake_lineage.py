"""What intake leaves on a lead's timeline: where it came from, and what was found.

Each `lead.*` event names its channel (the event's source) and reference, the
warnings and flags the write added or cleared, and the score with its reasons
when they changed, on the single path and the batch path alike.
"""

from __future__ import annotations

from typing import Any

from leads.edits import patch
from leads.flow_run import within_flow_run
from leads.intake import submit, submit_batch
from leads.store.tables import Lead, TimelineEvent

RUN = "c3f1a3b0-0000-4000-8000-000000000001"
ROBERT = {
    "first_name": "Robert",
    "last_name": "O'Neil",
    "phone": "+1 415 555 0100",
    "company": "Acme Corp",
    "city": "San Francisco",
}


def take(store, data, *, channel="api", reference=None, tenant="default"):
    return submit(
        store, tenant, data, channel=channel, region="US", reference=reference
    )


def events(store, lead_id: str, tenant: str = "default") -> list[TimelineEvent]:
    with store.read(tenant) as scope:
        query = (
            scope.select(TimelineEvent)
            .where(TimelineEvent.lead_id == lead_id)
            .order_by(TimelineEvent.id)
        )
        return list(scope.session.scalars(query))


def stored(store, lead_id: str, tenant: str = "default") -> Lead:
    with store.read(tenant) as scope:
        return scope.get(Lead, lead_id)


def found(detail: dict[str, Any]) -> dict[str, Any]:
    """The verdicts part of an event's detail."""
    names = ("warnings_added", "warnings_cleared", "flags_added", "flags_cleared")
    return {k: v for k, v in detail.items() if k in (*names, "score")}


class TestWhereALeadCameFrom:
    def test_an_api_lead_is_created_naming_its_channel_and_no_run(self, store):
        lead = take(store, {"email": "ada@example.com"}).lead

        [created] = events(store, lead.id)
        assert (created.kind, created.source, created.flow_run_id) == (
            "lead.created",
            "api",
            None,
        )
        assert created.detail["channel"] == "api"
        assert "reference" not in created.detail

    def test_every_event_of_a_webhook_lead_names_its_delivery(self, store):
        sent = {"email": "ada@example.com", "first_name": "Ada"}
        channel = "webhook:typeform"

        lead = take(store, sent, channel=channel, reference=f"{channel}:d-1").lead
        take(store, sent, channel=channel, reference=f"{channel}:d-2")
        take(
            store,
            {**sent, "company": "Engines"},
            channel=channel,
            reference=f"{channel}:d-3",
        )

        assert [
            (e.kind, e.source, e.detail["channel"], e.detail["reference"])
            for e in events(store, lead.id)
        ] == [
            ("lead.created", channel, channel, "webhook:typeform:d-1"),
            ("lead.resubmitted", channel, channel, "webhook:typeform:d-2"),
            ("lead.updated", channel, channel, "webhook:typeform:d-3"),
        ]

    def test_a_batch_inside_a_flow_run_names_its_channel_and_the_run(self, store):
        with within_flow_run(RUN):
            results = submit_batch(
                store,
                "default",
                [{"email": "a@example.com"}, {"email": "b@example.com"}],
                channel="batch",
                region="US",
            )

        for result in results:
            [created] = events(store, str(result.lead_id))
            assert (created.kind, created.source, created.flow_run_id) == (
                "lead.created",
                "batch",
                RUN,
            )


class TestVerdicts:
    def test_a_phone_only_lead_is_created_with_missing_email(self, store):
        lead = take(store, {"phone": "+14155550100"}).lead

        [created] = events(store, lead.id)
        assert created.detail["warnings_added"] == ["missing_email"]

    def test_a_spreadsheet_mangled_phone_and_a_padded_zip_are_named(self, store):
        lead = take(
            store,
            {
                "email": "ada@example.com",
                "phone": "4.15556E+09",
                "postal_code": "2134",
                "country": "US",
            },
        ).lead

        [created] = events(store, lead.id)
        assert sorted(created.detail["warnings_added"]) == [
            "phone_mangled_by_spreadsheet",
            "zip_zero_padded",
        ]
        assert created.detail["warnings_added"] == stored(store, lead.id).warnings

    def test_the_created_event_gives_the_score_and_its_reasons(self, store):
        lead = take(
            store, {"email": "ada@gmail.com", "job_title": "VP Sales", "country": "US"}
        ).lead

        [created] = events(store, lead.id)
        now = stored(store, lead.id)
        assert now.score is not None and now.score_reasons
        assert created.detail["score"] == {
            "from": None,
            "to": now.score,
            "reasons": now.score_reasons,
        }
        assert created.detail["flags_added"] == ["free_mail"]

    def test_an_update_that_moves_the_score_says_from_what_to_what(self, store):
        lead = take(store, {"email": "ada@example.com", "job_title": "VP Sales"}).lead
        before = stored(store, lead.id).score

        take(store, {"email": "ada@example.com", "job_title": "CEO"})

        updated = events(store, lead.id)[-1]
        now = stored(store, lead.id)
        assert updated.kind == "lead.updated"
        assert now.score != before
        assert updated.detail["score"] == {
            "from": before,
            "to": now.score,
            "reasons": now.score_reasons,
        }

    def test_an_update_that_changes_no_verdict_says_none(self, store):
        lead = take(store, {"email": "ada@example.com", "first_name": "Ada"}).lead

        take(store, {"email": "ada@example.com", "first_name": "Augusta"})

        updated = events(store, lead.id)[-1]
        assert updated.kind == "lead.updated"
        assert found(updated.detail) == {}

    def test_a_valid_phone_sent_later_clears_the_invalid_phone_warning(self, store):
        lead = take(store, {"email": "ada@example.com", "phone": "555"}).lead
        assert "invalid_phone" in events(store, lead.id)[0].detail["warnings_added"]

        take(store, {"email": "ada@example.com", "phone": "+14155550100"})

        updated = events(store, lead.id)[-1]
        assert updated.detail["warnings_cleared"] == ["invalid_phone"]
        assert "warnings_added" not in updated.detail

    def test_a_possible_duplicate_is_created_with_its_flag(self, store):
        first = take(store, {**ROBERT, "email": "bob@acme.example"}).lead

        second = take(store, {**ROBERT, "email": "robert.oneil@gmail.com"})

        assert second.outcome == "possible_duplicate"
        [created] = events(store, second.lead.id)
        assert f"possible_duplicate_of:{first.id}" in created.detail["flags_added"]
        assert created.detail["possible_duplicate_of"] == first.id

    def test_a_fuzzy_merge_giving_an_address_clears_missing_email(self, store):
        first = take(store, ROBERT).lead

        again = take(store, {**ROBERT, "email": "robert@acme.example"})

        assert again.outcome == "merged"
        merged = events(store, first.id)[-1]
        assert merged.kind == "lead.merged"
        assert merged.detail["warnings_cleared"] == ["missing_email"]

    def test_an_edit_giving_an_address_clears_missing_email(self, store):
        lead = take(store, {"phone": "+14155550100"}).lead

        with store.write("default") as scope:
            patch(
                scope,
                lead.id,
                {"email": "later@example.com"},
                channel="api",
                region="US",
            )

        edited = events(store, lead.id)[-1]
        assert edited.kind == "lead.edited"
        assert edited.detail["warnings_cleared"] == ["missing_email"]

    def test_the_batch_path_records_what_one_at_a_time_records(self, store):
        submissions = [
            {"email": "ada@gmail.com", "job_title": "VP Sales", "country": "US"},
            {"email": "bob@example.com", "phone": "4.15556E+09"},
            {"email": "cy@example.com", "postal_code": "2134", "country": "US"},
        ]
        alone = [take(store, s, tenant="alone").lead.id for s in submissions]

        together = submit_batch(store, "batch", submissions, channel="api", region="US")

        for one, item in zip(alone, together, strict=True):
            [single] = events(store, one, tenant="alone")
            [batched] = events(store, str(item.lead_id), tenant="batch")
            assert found(batched.detail) == found(single.detail)
            assert found(batched.detail)
