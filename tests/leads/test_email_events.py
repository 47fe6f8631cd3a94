"""Provider delivery events on a real store: found, stored once, applied once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from leads.email_events import EmailEventInput, apply_events, check_events
from leads.email_sends import SendRequest, accept
from leads.intake import submit
from leads.store.tables import (
    EmailEvent,
    EmailSuppression,
    Lead,
    SequenceStep,
    TimelineEvent,
)
from leads.suppression import address_hash, blocked_reason

AT = datetime(2026, 12, 8, 10, 0, tzinfo=UTC)


def take(store, data, tenant="default"):
    return submit(store, tenant, data, channel="api", region="US").lead


def an_event(number: int = 1, **given) -> EmailEventInput:
    fields = {"id": f"evt-{number}", "type": "delivered", "occurred_at": AT}
    return EmailEventInput.model_validate(fields | given)


def apply(store, *events, tenant="default"):
    return [o.outcome for o in apply_events(store, tenant, list(events))]


def lead_now(store, lead) -> Lead:
    with store.read("default") as scope:
        return scope.get(Lead, lead.id)


def kinds(store, lead) -> list[str]:
    with store.read("default") as scope:
        rows = scope.session.scalars(
            scope.select(TimelineEvent)
            .where(
                TimelineEvent.lead_id == lead.id,
                TimelineEvent.kind.startswith("email."),
            )
            .order_by(TimelineEvent.id)
        )
        return [row.kind for row in rows]


def reason(store, address, category="marketing"):
    with store.read("default") as scope:
        return blocked_reason(scope, lead=None, address=address, category=category)


def stored_events(store) -> list[EmailEvent]:
    with store.read("default") as scope:
        return list(
            scope.session.scalars(scope.select(EmailEvent).order_by(EmailEvent.id))
        )


class TestFindingTheLead:
    def test_by_lead_id(self, store):
        lead = take(store, {"email": "ada@example.com"})

        assert apply(store, an_event(type="replied", lead_id=lead.id)) == ["applied"]
        assert kinds(store, lead) == ["email.replied"]

    def test_by_the_message_id_of_a_sequence_step_with_or_without_brackets(self, store):
        lead = take(store, {"email": "ada@example.com"})
        with store.write("default") as scope:
            scope.add(
                SequenceStep(
                    lead_id=lead.id,
                    sequence="welcome_sequence",
                    step=1,
                    step_key="welcome_1",
                    status="sent",
                    due_at=AT,
                    message_id="<step-1@example.com>",
                )
            )

        outcomes = apply(
            store,
            an_event(1, type="replied", message_id="step-1@example.com"),
            an_event(2, type="replied", message_id="<step-1@example.com>"),
        )

        assert outcomes == ["applied", "applied"]
        assert kinds(store, lead) == ["email.replied", "email.replied"]

    def test_by_the_message_id_of_a_one_off_send_to_a_bare_address(self, store):
        accept(
            store,
            "default",
            SendRequest(
                category="transactional",
                subject="Hi",
                recipient="Nobody@Example.com",
                text="Hello",
            ),
            message_id="<one-off@example.com>",
        )

        outcomes = apply(
            store,
            an_event(
                type="bounced", bounce_type="hard", message_id="<one-off@example.com>"
            ),
        )

        assert outcomes == ["no_such_recipient"]
        assert reason(store, "nobody@example.com", "transactional") == "bounced"

    def test_by_address_when_neither_id_is_known(self, store):
        lead = take(store, {"email": "Ada@Example.com"})

        outcomes = apply(
            store,
            an_event(type="replied", lead_id="no-such-lead", email="ADA@example.com"),
        )

        assert outcomes == ["applied"]
        assert kinds(store, lead) == ["email.replied"]

    def test_another_tenants_lead_is_no_recipient(self, store):
        lead = take(store, {"email": "ada@example.com"}, tenant="acme")

        assert apply(store, an_event(type="replied", lead_id=lead.id)) == [
            "no_such_recipient"
        ]


class TestOnce:
    def test_a_redelivered_event_is_a_duplicate_and_applied_once(self, store):
        lead = take(store, {"email": "ada@example.com"})
        complaint = an_event(7, type="complained", lead_id=lead.id)

        first = apply(store, complaint)
        again = apply(store, complaint, complaint)

        assert first == ["applied"]
        assert again == ["duplicate", "duplicate"]
        assert kinds(store, lead) == ["email.complained"]
        assert len(stored_events(store)) == 1

    def test_event_ids_are_unique_per_tenant_only(self, store):
        take(store, {"email": "ada@example.com"})

        assert apply(store, an_event(email="ada@example.com")) == ["recorded"]
        assert apply(store, an_event(email="ada@example.com"), tenant="acme") == [
            "no_such_recipient"
        ]


class TestEffects:
    def test_a_hard_bounce_suppresses_every_category_and_notes_when(self, store):
        lead = take(store, {"email": "ada@example.com"})

        apply(store, an_event(type="bounced", bounce_type="hard", lead_id=lead.id))

        assert lead_now(store, lead).email_state == {"bounced_at": AT.isoformat()}
        assert kinds(store, lead) == ["email.bounced"]
        assert reason(store, "ada@example.com", "transactional") == "bounced"

    def test_a_bounce_of_an_address_the_lead_has_left_spares_its_new_one(self, store):
        lead = take(store, {"email": "new@example.com"})

        apply(
            store,
            an_event(
                type="bounced",
                bounce_type="hard",
                lead_id=lead.id,
                email="old@example.com",
            ),
        )

        assert reason(store, "old@example.com", "transactional") == "bounced"
        assert reason(store, "new@example.com", "transactional") is None
        assert lead_now(store, lead).email_state == {}

    @pytest.mark.parametrize(
        "given",
        [
            {"type": "bounced", "bounce_type": "soft"},
            {"type": "deferred"},
            {"type": "delivered"},
        ],
    )
    def test_soft_bounces_deferrals_and_deliveries_are_only_recorded(
        self, store, given
    ):
        lead = take(store, {"email": "ada@example.com"})

        assert apply(store, an_event(lead_id=lead.id, **given)) == ["recorded"]

        assert kinds(store, lead) == []
        assert lead_now(store, lead).email_state == {}
        assert reason(store, "ada@example.com") is None
        (stored,) = stored_events(store)
        assert (stored.kind, stored.outcome, stored.lead_id) == (
            given["type"],
            "recorded",
            lead.id,
        )

    def test_a_complaint_opts_out_and_owes_a_crm_sync(self, store):
        lead = take(store, {"email": "ada@example.com"})
        version = lead_now(store, lead).version

        apply(store, an_event(type="complained", lead_id=lead.id))

        found = lead_now(store, lead)
        assert found.email_opt_out is True
        assert found.email_state == {"complained_at": AT.isoformat()}
        assert (found.crm_sync_status, found.version) == ("pending", version + 1)
        assert reason(store, "ada@example.com") == "complained"
        assert reason(store, "ada@example.com", "transactional") is None

    def test_an_unsubscribe_unsubscribes_the_lead(self, store):
        lead = take(store, {"email": "ada@example.com"})

        apply(store, an_event(type="unsubscribed", lead_id=lead.id))

        found = lead_now(store, lead)
        assert found.email_opt_out is True
        assert found.email_state == {"unsubscribed_at": AT.isoformat()}
        assert kinds(store, lead) == ["email.unsubscribed"]

    def test_replies_keep_the_newest_time_whatever_their_order(self, store):
        lead = take(store, {"email": "ada@example.com"})
        later = AT + timedelta(hours=3)

        apply(
            store,
            an_event(1, type="replied", lead_id=lead.id, occurred_at=later),
            an_event(2, type="replied", lead_id=lead.id, occurred_at=AT),
        )

        assert lead_now(store, lead).email_state == {"replied_at": later.isoformat()}
        assert kinds(store, lead) == ["email.replied", "email.replied"]

    def test_an_unknown_address_is_still_suppressed_by_its_hash(self, store):
        outcomes = apply(
            store,
            an_event(1, type="complained", email="Stranger@Example.com"),
            an_event(2, type="replied", email="other@example.com"),
        )

        assert outcomes == ["no_such_recipient", "no_such_recipient"]
        assert reason(store, "stranger@example.com") == "complained"
        with store.read("default") as scope:
            (entry,) = scope.session.scalars(scope.select(EmailSuppression))
        assert entry.address_hash == address_hash("stranger@example.com")
        stored = stored_events(store)
        assert [e.address_hash for e in stored] == [
            address_hash("stranger@example.com"),
            address_hash("other@example.com"),
        ]


class TestValidation:
    def test_an_address_that_is_not_one_is_refused_naming_the_field(self):
        with pytest.raises(ValidationError) as caught:
            an_event(email="not an address")

        (error,) = caught.value.errors()
        assert (error["loc"], error["type"]) == (("email",), "invalid_email")

    def test_a_naive_time_is_refused(self):
        with pytest.raises(ValidationError, match="timezone"):
            an_event(occurred_at="2026-12-08T10:00:00")

    def test_a_bounce_must_say_hard_or_soft_and_an_event_whom_it_is_about(self):
        errors = check_events(
            [an_event(1, email="a@example.com"), an_event(2, type="bounced")]
        )

        assert [(e.field, e.reason) for e in errors] == [
            ("events.1", "missing_recipient"),
            ("events.1.bounce_type", "required"),
        ]
