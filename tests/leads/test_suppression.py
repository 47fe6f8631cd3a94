"""The suppression list on a real store: who may be sent what, and unsubscribing."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlalchemy import event, select

from leads.intake import submit
from leads.store.tables import EmailSuppression, Lead, OutboxItem, TimelineEvent
from leads.suppression import (
    address_hash,
    blocked_reason,
    record_bounce,
    record_complaint,
    suppress,
    unsubscribe,
)

MARKETING, TRANSACTIONAL = "marketing", "transactional"


def take(store, data, tenant="default"):
    return submit(store, tenant, data, channel="api", region="US").lead


def entries(store, tenant="default") -> list[EmailSuppression]:
    with store.read(tenant) as scope:
        return list(scope.session.scalars(scope.select(EmailSuppression)))


def events(store, lead, kind: str) -> list[TimelineEvent]:
    with store.read("default") as scope:
        return list(
            scope.session.scalars(
                scope.select(TimelineEvent).where(
                    TimelineEvent.lead_id == lead.id, TimelineEvent.kind == kind
                )
            )
        )


def reason_for(store, *, lead=None, address=None, category=MARKETING):
    with store.read("default") as scope:
        found = scope.get(Lead, lead.id) if lead is not None else None
        return blocked_reason(scope, lead=found, address=address, category=category)


def add(store, address, reason, tenant="default") -> bool:
    with store.write(tenant) as scope:
        return suppress(scope, address=address, reason=reason, lead_id=None, source="t")


class TestAddressHash:
    def test_every_spelling_of_an_address_has_one_hash(self):
        assert address_hash(" Ada@EXAMPLE.com ") == address_hash("ada@example.com")
        assert len(address_hash("ada@example.com")) == 64

    def test_the_hash_does_not_hold_the_address(self):
        assert "ada" not in address_hash("ada@example.com")

    def test_text_that_is_no_address_has_no_hash(self):
        with pytest.raises(ValueError, match="not an e-mail address"):
            address_hash("not an address")


class TestSuppress:
    def test_adds_an_entry_once_and_says_whether_it_was_new(self, store):
        assert add(store, "Ada@Example.com", "unsubscribed") is True
        assert add(store, "ada@example.com", "unsubscribed") is False

        (entry,) = entries(store)
        assert entry.address_hash == address_hash("ada@example.com")
        assert (entry.reason, entry.scope) == ("unsubscribed", "marketing")

    def test_a_bounce_stops_all_email_the_other_reasons_only_marketing(self, store):
        for reason in ("unsubscribed", "complained", "bounced", "manual"):
            add(store, "ada@example.com", reason)

        scopes = {entry.reason: entry.scope for entry in entries(store)}
        assert scopes == {
            "unsubscribed": "marketing",
            "complained": "marketing",
            "bounced": "all",
            "manual": "marketing",
        }

    def test_an_unknown_reason_is_refused(self, store):
        with pytest.raises(ValueError, match="suppression reason"):
            add(store, "ada@example.com", "annoyed")

    def test_entries_are_per_tenant(self, store):
        add(store, "ada@example.com", "unsubscribed", tenant="acme")

        assert entries(store) == []
        assert reason_for(store, address="ada@example.com") is None

    def test_concurrent_writers_add_one_entry_and_exactly_one_is_told_new(self, store):
        start = threading.Barrier(6)

        def write(_: int) -> bool:
            start.wait()
            return add(store, "ada@example.com", "bounced")

        with ThreadPoolExecutor(6) as pool:
            told = list(pool.map(write, range(6)))

        assert told.count(True) == 1
        assert len(entries(store)) == 1


class TestBlockedReason:
    def test_an_unsubscribed_address_gets_transactional_but_not_marketing(self, store):
        add(store, "ada@example.com", "unsubscribed")

        assert reason_for(store, address="ADA@example.com") == "unsubscribed"
        assert reason_for(store, address="ada@example.com", category=TRANSACTIONAL) is (
            None
        )

    def test_a_hard_bounce_blocks_every_category(self, store):
        add(store, "ada@example.com", "bounced")

        assert reason_for(store, address="ada@example.com") == "bounced"
        assert (
            reason_for(store, address="ada@example.com", category=TRANSACTIONAL)
            == "bounced"
        )

    def test_the_bounce_is_named_before_other_reasons(self, store):
        add(store, "ada@example.com", "unsubscribed")
        add(store, "ada@example.com", "bounced")
        add(store, "ada@example.com", "complained")

        assert reason_for(store, address="ada@example.com") == "bounced"

    def test_a_manual_entry_reads_as_unsubscribed(self, store):
        add(store, "ada@example.com", "manual")

        assert reason_for(store, address="ada@example.com") == "unsubscribed"

    def test_the_leads_address_is_checked_when_none_is_given(self, store):
        lead = take(store, {"email": "Ada@Example.com"})
        add(store, "ada@example.com", "complained")

        assert reason_for(store, lead=lead) == "complained"

    @pytest.mark.parametrize(
        ("values", "reason"),
        [
            ({"email_opt_out": True}, "unsubscribed"),
            (
                {"email_opt_out": True, "email_state": {"complained_at": "x"}},
                "complained",
            ),
            ({"status": "unsubscribed"}, "unsubscribed"),
            ({"crm_state": {"opted_out": True}}, "unsubscribed"),
        ],
    )
    def test_the_leads_own_opt_out_blocks_marketing_only(self, store, values, reason):
        lead = take(store, {"email": "ada@example.com"})
        with store.write("default") as scope:
            found = scope.get(Lead, lead.id)
            for name, value in values.items():
                setattr(found, name, value)

        assert reason_for(store, lead=lead) == reason
        assert reason_for(store, lead=lead, category=TRANSACTIONAL) is None

    def test_nothing_blocks_a_lead_without_an_address_or_entry(self, store):
        lead = take(store, {"phone": "+1 212 555 0100"})

        assert reason_for(store, lead=lead) is None
        assert reason_for(store) is None

    def test_asks_the_store_at_most_once(self, store):
        lead = take(store, {"email": "ada@example.com"})
        statements: list[str] = []

        def count(conn, cursor, statement, *args):
            statements.append(statement)

        with store.read("default") as scope:
            found = scope.get(Lead, lead.id)
            event.listen(store.engine, "before_cursor_execute", count)
            try:
                blocked_reason(scope, lead=found, address=None, category=MARKETING)
                blocked_reason(scope, lead=found, address=None, category=TRANSACTIONAL)
            finally:
                event.remove(store.engine, "before_cursor_execute", count)

        assert len(statements) == 2

    def test_an_unknown_category_is_refused(self, store):
        with store.read("default") as scope, pytest.raises(ValueError, match="cat"):
            blocked_reason(scope, lead=None, address=None, category="newsletter")


class TestUnsubscribe:
    def test_opts_the_lead_out_suppresses_it_and_owes_a_crm_sync(self, store):
        lead = take(store, {"email": "Ada@Example.com"})
        at = datetime(2026, 12, 8, 9, 30, tzinfo=UTC)
        with store.write("default") as scope:
            before = scope.get(Lead, lead.id).version
            assert unsubscribe(scope, scope.get(Lead, lead.id), source="test", at=at)

        with store.read("default") as scope:
            found = scope.get(Lead, lead.id)
            sync = scope.session.scalars(
                scope.select(OutboxItem).where(
                    OutboxItem.lead_id == lead.id, OutboxItem.topic == "crm_sync"
                )
            ).one()
            assert found.email_opt_out is True
            assert found.email_state == {"unsubscribed_at": at.isoformat()}
            assert found.crm_sync_status == "pending"
            assert found.version == before + 1
        assert sync.status == "pending"
        (recorded,) = events(store, lead, "email.unsubscribed")
        assert recorded.detail == {"source": "test"}
        assert "ada" not in str(recorded.detail).lower()
        assert reason_for(store, address="ada@example.com") == "unsubscribed"

    def test_a_second_unsubscribe_records_nothing_more(self, store):
        lead = take(store, {"email": "ada@example.com"})
        outcomes = []
        for _ in range(2):
            with store.write("default") as scope:
                outcomes.append(
                    unsubscribe(scope, scope.get(Lead, lead.id), source="test")
                )

        assert outcomes == [True, False]
        assert len(events(store, lead, "email.unsubscribed")) == 1
        assert len(entries(store)) == 1

    def test_two_clicks_at_once_record_one_unsubscribe(self, store):
        lead = take(store, {"email": "ada@example.com"})
        start = threading.Barrier(4)

        def click(_: int) -> bool:
            start.wait()
            with store.write("default") as scope:
                return unsubscribe(scope, scope.get(Lead, lead.id), source="test")

        with ThreadPoolExecutor(4) as pool:
            told = list(pool.map(click, range(4)))

        assert told.count(True) == 1
        assert len(events(store, lead, "email.unsubscribed")) == 1

    def test_a_naive_time_is_refused(self, store):
        lead = take(store, {"email": "ada@example.com"})
        with store.write("default") as scope, pytest.raises(ValueError, match="naive"):
            unsubscribe(
                scope, scope.get(Lead, lead.id), source="t", at=datetime(2026, 1, 1)
            )


class TestComplaintsAndBounces:
    def test_a_complaint_opts_out_and_suppresses_for_marketing(self, store):
        lead = take(store, {"email": "ada@example.com"})
        with store.write("default") as scope:
            assert record_complaint(scope, scope.get(Lead, lead.id), source="t")
            assert not record_complaint(scope, scope.get(Lead, lead.id), source="t")

        with store.read("default") as scope:
            found = scope.get(Lead, lead.id)
            assert found.email_opt_out is True
            assert "complained_at" in found.email_state
            assert found.crm_sync_status == "pending"
        assert len(events(store, lead, "email.complained")) == 1
        assert reason_for(store, lead=lead) == "complained"
        assert reason_for(store, lead=lead, category=TRANSACTIONAL) is None

    def test_a_bounce_blocks_everything_but_leaves_the_opt_out_alone(self, store):
        lead = take(store, {"email": "ada@example.com"})
        first = datetime(2026, 12, 8, tzinfo=UTC)
        with store.write("default") as scope:
            assert record_bounce(scope, scope.get(Lead, lead.id), source="t", at=first)
        with store.write("default") as scope:
            earlier = datetime(2026, 12, 1, tzinfo=UTC)
            found = scope.get(Lead, lead.id)
            assert not record_bounce(scope, found, source="t", at=earlier)

        with store.read("default") as scope:
            found = scope.get(Lead, lead.id)
            assert found.email_opt_out is False
            assert found.email_state == {"bounced_at": first.isoformat()}
        assert len(events(store, lead, "email.bounced")) == 1
        assert reason_for(store, lead=lead, category=TRANSACTIONAL) == "bounced"
        with store.read("default") as scope:
            hashes = set(scope.session.scalars(select(EmailSuppression.address_hash)))
        assert hashes == {address_hash("ada@example.com")}
