"""Webhook deliveries in the store: kept once under racing copies, claimed once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from leads.clock import ManualClock, use_clock
from leads.store import webhooks as deliveries
from leads.store.tables import WebhookDelivery

AT = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def keep(store, delivery_id: str = "evt-1", body: bytes = b"{}"):
    with store.write("default") as scope:
        return deliveries.keep(scope, "forms", delivery_id, body=body, occurred_at=AT)


def row(store, pk: int) -> WebhookDelivery:
    with store.read("default") as scope:
        return scope.session.get(WebhookDelivery, pk)


class TestKeep:
    def test_copies_racing_in_from_many_threads_are_one_row_counted_as_receipts(
        self, store
    ):
        results = []
        barrier = threading.Barrier(6)

        def deliver() -> None:
            barrier.wait()
            results.append(keep(store))

        threads = [threading.Thread(target=deliver) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert sum(result.new for result in results) == 1
        assert len({result.id for result in results}) == 1
        with store.engine.connect() as connection:
            total = connection.execute(
                select(func.count()).select_from(WebhookDelivery)
            ).scalar_one()
        assert total == 1
        assert row(store, results[0].id).receipts == 6

    def test_the_same_id_from_another_source_or_tenant_is_another_delivery(self, store):
        first = keep(store)
        with store.write("default") as scope:
            other_source = deliveries.keep(
                scope, "partner", "evt-1", body=b"{}", occurred_at=AT
            )
        with store.write("other") as scope:
            other_tenant = deliveries.keep(
                scope, "forms", "evt-1", body=b"{}", occurred_at=AT
            )

        assert first.new and other_source.new and other_tenant.new


class TestClaim:
    def test_a_delivery_is_claimed_once_until_its_lease_runs_out(self, store):
        kept = keep(store)
        with use_clock(ManualClock(AT)) as clock:
            with store.write("default") as scope:
                first = deliveries.claim(scope, kept.id, clock.now())
            with store.write("default") as scope:
                second = deliveries.claim(scope, kept.id, clock.now())
            later = clock.advance(deliveries.LEASE + timedelta(seconds=1))
            with store.write("default") as scope:
                after_lease = deliveries.claim(scope, kept.id, later)

        assert first is not None and first.body == b"{}"
        assert second is None
        assert after_lease is not None and after_lease.attempts == 2

    def test_a_settled_delivery_is_never_claimed_again(self, store):
        kept = keep(store)
        with store.write("default") as scope:
            claimed = deliveries.claim(scope, kept.id, AT)
            deliveries.settle(scope, claimed, deliveries.APPLIED, lead_id="x")
        with store.write("default") as scope:
            assert deliveries.claim(scope, kept.id, AT + timedelta(days=1)) is None

    def test_a_failed_attempt_waits_longer_each_time_and_stays_pending(self, store):
        waits = []
        with use_clock(ManualClock(AT)) as clock:
            kept = keep(store)
            for _ in range(4):
                due = [pk for _, pk in deliveries.due(store, 10)]
                assert due == [kept.id]
                with store.write("default") as scope:
                    claimed = deliveries.claim(scope, kept.id, clock.now())
                    deliveries.retry_later(scope, claimed, "database is locked")
                stored = row(store, kept.id)
                waits.append(stored.next_attempt_at - clock.now())
                assert deliveries.due(store, 10) == []
                clock.set(stored.next_attempt_at)

        assert waits == sorted(waits) and waits[0] < waits[-1]
        assert (stored.status, stored.attempts) == ("pending", 4)
        assert stored.last_error == "database is locked"


class TestStaleClaims:
    def test_a_claim_taken_over_after_its_lease_can_no_longer_settle(self, store):
        kept = keep(store)
        with store.write("default") as scope:
            first = deliveries.claim(scope, kept.id, AT)
        later = AT + deliveries.LEASE + timedelta(seconds=1)
        with store.write("default") as scope:
            second = deliveries.claim(scope, kept.id, later)

        with store.write("default") as scope:
            first_holds = deliveries.still_claimed(scope, first)
            deliveries.settle(scope, first, deliveries.REJECTED)
        with store.write("default") as scope:
            second_holds = deliveries.still_claimed(scope, second)
            deliveries.settle(scope, second, deliveries.APPLIED)

        assert (first_holds, second_holds) == (False, True)
        assert row(store, kept.id).status == "applied"


class TestSignatures:
    def test_a_signature_seen_before_is_a_redelivery_whatever_its_id(self, store):
        with store.write("default") as scope:
            first = deliveries.keep(
                scope, "forms", "evt-1", body=b"{}", occurred_at=AT,
                signature_digest="d" * 64,
            )  # fmt: skip
            replay = deliveries.keep(
                scope, "forms", "evt-2", body=b"{}", occurred_at=AT,
                signature_digest="d" * 64,
            )  # fmt: skip

        assert first.new and not replay.new
        assert (replay.id, replay.delivery_id) == (first.id, "evt-1")
        assert row(store, first.id).receipts == 2
