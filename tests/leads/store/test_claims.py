"""Claims on a real store: exclusive, leased, and settled only by their owner."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from leads.edits import patch
from leads.intake import submit, submit_batch
from leads.store import Store, database
from leads.store.claims import claim, complete, extend, finish_all_in, park, release
from leads.store.outbox import CRM_SYNC, SEQUENCE_ENROLMENT
from leads.store.schema import upgrade
from leads.store.tables import OutboxItem

LEASE = timedelta(minutes=5)


def take(store, data, tenant="default"):
    return submit(store, tenant, data, channel="api", region="US").lead


def later(seconds: float = 0) -> datetime:
    """A moment after every row made so far became available."""
    return datetime.now(UTC) + timedelta(seconds=1 + seconds)


def row(store, row_id) -> OutboxItem:
    with store.engine.connect() as connection:
        return connection.execute(
            select(OutboxItem).where(OutboxItem.id == row_id)
        ).one()


def crm_rows(store) -> list[int]:
    with store.engine.connect() as connection:
        return list(
            connection.scalars(
                select(OutboxItem.id)
                .where(OutboxItem.topic == CRM_SYNC)
                .order_by(OutboxItem.id)
            )
        )


class TestClaiming:
    def test_takes_due_rows_oldest_first_and_leases_them(self, store):
        leads = [take(store, {"email": f"{n}@example.com"}) for n in range(3)]
        now = later()

        claims = claim(store, CRM_SYNC, "run-1", limit=2, lease=LEASE, now=now)

        assert [c.id for c in claims] == crm_rows(store)[:2]
        assert [c.lead_id for c in claims] == [leads[0].id, leads[1].id]
        first = claims[0]
        assert (first.tenant_id, first.topic, first.key) == (
            "default",
            CRM_SYNC,
            leads[0].id,
        )
        assert (first.generation, first.attempts, first.lease_owner) == (1, 1, "run-1")
        stored = row(store, first.id)
        assert (stored.status, stored.lease_owner) == ("claimed", "run-1")
        assert stored.lease_expires_at == now + LEASE
        assert row(store, crm_rows(store)[2]).status == "pending"

    def test_takes_only_the_asked_topic(self, store):
        lead = take(store, {"email": "a@example.com"})

        (enrolment,) = claim(
            store, SEQUENCE_ENROLMENT, "run-1", limit=10, lease=LEASE, now=later()
        )

        assert enrolment.key == f"{lead.id}:welcome_sequence"
        assert enrolment.payload["sequence"] == "welcome_sequence"

    def test_takes_rows_of_every_tenant_and_says_whose_they_are(self, store):
        take(store, {"email": "a@example.com"}, tenant="acme")
        take(store, {"email": "b@example.com"}, tenant="globex")

        claims = claim(store, CRM_SYNC, "run-1", limit=10, lease=LEASE, now=later())

        assert [c.tenant_id for c in claims] == ["acme", "globex"]

    def test_a_lead_filter_takes_only_that_leads_rows(self, store):
        take(store, {"email": "a@example.com"})
        wanted = take(store, {"email": "b@example.com"})
        take(store, {"email": "c@example.com"})

        claims = claim(
            store,
            CRM_SYNC,
            "on-demand",
            limit=10,
            lease=LEASE,
            lead_id=wanted.id,
            now=later(),
        )

        assert [c.lead_id for c in claims] == [wanted.id]
        assert claim(store, CRM_SYNC, "drain", limit=10, lease=LEASE, now=later())

    def test_rows_not_yet_available_wait_until_they_are(self, store):
        take(store, {"email": "a@example.com"})
        now = later()
        (held,) = claim(store, CRM_SYNC, "run-1", limit=1, lease=LEASE, now=now)
        release(store, held, error="busy", retry_at=now + timedelta(minutes=1))

        too_early = claim(
            store,
            CRM_SYNC,
            "run-2",
            limit=1,
            lease=LEASE,
            now=now + timedelta(seconds=59),
        )
        in_time = claim(
            store,
            CRM_SYNC,
            "run-2",
            limit=1,
            lease=LEASE,
            now=now + timedelta(seconds=60),
        )

        assert too_early == []
        assert [c.id for c in in_time] == [held.id]
        assert in_time[0].attempts == 2

    def test_an_empty_outbox_gives_no_claims(self, store):
        assert claim(store, CRM_SYNC, "run-1", limit=5, lease=LEASE) == []

    @pytest.mark.parametrize(
        ("limit", "lease", "owner", "now"),
        [
            (0, LEASE, "run-1", None),
            (1, timedelta(0), "run-1", None),
            (1, LEASE, "", None),
            (1, LEASE, "x" * 65, None),
            (1, LEASE, "run-1", datetime(2026, 1, 1)),
        ],
    )
    def test_refuses_bad_arguments(self, store, limit, lease, owner, now):
        with pytest.raises(ValueError):
            claim(store, CRM_SYNC, owner, limit=limit, lease=lease, now=now)


class TestConcurrentClaimers:
    def test_four_claimers_take_each_of_200_rows_exactly_once(self, store):
        results = submit_batch(
            store,
            "default",
            [{"email": f"lead{n}@example.com"} for n in range(200)],
            channel="import",
            region="US",
        )
        assert all(r.outcome == "created" for r in results)
        now = later()
        start = threading.Barrier(4)

        def drain(owner: str) -> list[int]:
            taken: list[int] = []
            start.wait()
            while batch := claim(store, CRM_SYNC, owner, limit=7, lease=LEASE, now=now):
                taken.extend(c.id for c in batch)
            return taken

        with ThreadPoolExecutor(4) as pool:
            per_owner = list(pool.map(drain, [f"run-{n}" for n in range(4)]))

        every = [row_id for taken in per_owner for row_id in taken]
        assert len(every) == 200
        assert sorted(every) == crm_rows(store)
        with store.engine.connect() as connection:
            owners = connection.execute(
                select(OutboxItem.lease_owner, OutboxItem.attempts).where(
                    OutboxItem.topic == CRM_SYNC
                )
            ).all()
        assert {attempts for _, attempts in owners} == {1}
        for index, taken in enumerate(per_owner):
            assert all(
                row(store, row_id).lease_owner == f"run-{index}" for row_id in taken
            )


def test_polling_an_empty_outbox_takes_no_write_lock(tmp_path, monkeypatch):
    # A drain polls every half second; on SQLite a poll that took the write
    # lock would make the API's writes wait for it. With a writer holding the
    # lock, a poll that tried to take it would wait out this short busy
    # timeout and fail.
    monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_MS", 200)
    store = Store(f"sqlite:///{tmp_path / 'leads.db'}")
    upgrade(store.engine)
    try:
        lead = take(store, {"email": "a@example.com"})
        (taken,) = claim(store, CRM_SYNC, "run-1", limit=5, lease=LEASE, now=later())
        assert taken.lead_id == lead.id
        with store.write_across_tenants() as holder:
            holder.execute(select(1))  # begins, and so takes the write lock
            polls = [
                claim(store, CRM_SYNC, "run-2", limit=5, lease=LEASE, now=later()),
                claim(
                    store,
                    CRM_SYNC,
                    "run-2",
                    limit=5,
                    lease=LEASE,
                    lead_id=lead.id,
                    now=later(),
                ),
            ]
        assert polls == [[], []]
    finally:
        store.dispose()


@pytest.mark.postgres
def test_a_claimer_skips_rows_another_transaction_holds_instead_of_waiting(
    new_store_url,
):
    store = Store(new_store_url("postgresql"))
    upgrade(store.engine)
    try:
        for n in range(4):
            take(store, {"email": f"{n}@example.com"})
        first, second, *rest = crm_rows(store)

        # A claimer that waited on the held rows would fail at once here
        # instead of hanging: it may wait 2 s for a lock, no more.
        impatient = Store(store.url + "?options=-c%20lock_timeout%3D2000")
        with store.engine.connect() as holder:
            holder.execute(
                select(OutboxItem.id)
                .where(OutboxItem.id.in_([first, second]))
                .with_for_update()
            )
            claims = claim(
                impatient, CRM_SYNC, "run-1", limit=10, lease=LEASE, now=later()
            )
            holder.rollback()

        assert [c.id for c in claims] == rest
    finally:
        impatient.dispose()
        store.dispose()


class TestLeases:
    def test_an_expired_lease_returns_the_row_to_the_queue(self, store):
        take(store, {"email": "a@example.com"})
        now = later()
        (first,) = claim(store, CRM_SYNC, "run-1", limit=1, lease=LEASE, now=now)

        while_held = claim(
            store, CRM_SYNC, "run-2", limit=1, lease=LEASE, now=now + LEASE
        )
        (taken_over,) = claim(
            store,
            CRM_SYNC,
            "run-2",
            limit=1,
            lease=LEASE,
            now=now + LEASE + timedelta(seconds=1),
        )

        assert while_held == []
        assert taken_over.id == first.id
        assert (taken_over.lease_owner, taken_over.attempts) == ("run-2", 2)

    def test_a_claim_whose_lease_was_lost_settles_nothing(self, store):
        take(store, {"email": "a@example.com"})
        now = later()
        (lost,) = claim(store, CRM_SYNC, "run-1", limit=1, lease=LEASE, now=now)
        claim(store, CRM_SYNC, "run-2", limit=1, lease=LEASE, now=now + 2 * LEASE)

        assert complete(store, lost) is False
        assert release(store, lost, error="x", retry_at=now) is False
        assert park(store, lost, reason="x") is False
        assert extend(store, lost, LEASE) is False

        stored = row(store, lost.id)
        assert (stored.status, stored.lease_owner, stored.last_error) == (
            "claimed",
            "run-2",
            None,
        )
        assert stored.lease_expires_at == now + 3 * LEASE

    def test_extend_pushes_the_lease_out(self, store):
        take(store, {"email": "a@example.com"})
        now = later()
        (held,) = claim(store, CRM_SYNC, "run-1", limit=1, lease=LEASE, now=now)

        assert extend(store, held, timedelta(hours=1), now=now + LEASE) is True

        expired_once = now + LEASE + timedelta(seconds=1)
        assert (
            claim(store, CRM_SYNC, "run-2", limit=1, lease=LEASE, now=expired_once)
            == []
        )
        assert complete(store, held) is True

    def test_an_owner_may_still_finish_after_its_lease_ran_out_unclaimed(self, store):
        take(store, {"email": "a@example.com"})
        (held,) = claim(store, CRM_SYNC, "run-1", limit=1, lease=LEASE, now=later())

        assert complete(store, held, now=later(3600)) is True
        assert row(store, held.id).status == "done"


class TestSettling:
    def test_complete_marks_the_row_done_and_drops_the_lease(self, store):
        take(store, {"email": "a@example.com"})
        (held,) = claim(store, CRM_SYNC, "run-1", limit=1, lease=LEASE, now=later())

        assert complete(store, held) is True

        stored = row(store, held.id)
        assert (stored.status, stored.lease_owner, stored.lease_expires_at) == (
            "done",
            None,
            None,
        )
        assert (
            claim(store, CRM_SYNC, "run-2", limit=1, lease=LEASE, now=later(600)) == []
        )

    def test_a_row_whose_lead_changed_meanwhile_goes_back_to_pending(self, store):
        lead = take(store, {"email": "a@example.com"})
        now = later()
        (held,) = claim(store, CRM_SYNC, "run-1", limit=1, lease=LEASE, now=now)
        with store.write("default") as scope:
            patch(scope, lead.id, {"company": "Acme"}, channel="api", region="US")

        assert complete(store, held, now=now + timedelta(seconds=5)) is False

        stored = row(store, held.id)
        assert (stored.status, stored.generation, stored.attempts) == ("pending", 2, 0)
        assert stored.available_at == now + timedelta(seconds=5)
        assert stored.lease_owner is None
        (again,) = claim(
            store,
            CRM_SYNC,
            "run-2",
            limit=1,
            lease=LEASE,
            now=now + timedelta(seconds=10),
        )
        assert again.generation == 2
        assert complete(store, again) is True

    def test_release_requeues_the_row_for_later_with_the_error(self, store):
        take(store, {"email": "a@example.com"})
        now = later()
        (held,) = claim(store, CRM_SYNC, "run-1", limit=1, lease=LEASE, now=now)

        assert release(store, held, error="CRM down", retry_at=now + LEASE) is True

        stored = row(store, held.id)
        assert (stored.status, stored.last_error, stored.lease_owner) == (
            "pending",
            "CRM down",
            None,
        )
        assert stored.available_at == now + LEASE

    def test_a_parked_row_is_never_claimed_again(self, store):
        take(store, {"email": "a@example.com"})
        (held,) = claim(store, CRM_SYNC, "run-1", limit=1, lease=LEASE, now=later())

        assert park(store, held, reason="validation:email") is True

        stored = row(store, held.id)
        assert (stored.status, stored.last_error) == ("parked", "validation:email")
        far_later = later(30 * 86400)
        assert (
            claim(store, CRM_SYNC, "run-2", limit=1, lease=LEASE, now=far_later) == []
        )

    def test_a_claim_is_settled_only_in_its_own_tenant(self, store):
        take(store, {"email": "a@example.com"}, tenant="acme")
        (held,) = claim(store, CRM_SYNC, "run-1", limit=1, lease=LEASE, now=later())
        forged = replace(held, tenant_id="globex")

        assert complete(store, forged) is False
        assert row(store, held.id).status == "claimed"


def test_many_claims_finish_together_and_a_changed_lead_goes_back_to_the_queue(store):

    take(store, {"email": "one@example.com"})
    take(store, {"email": "two@example.com", "company": "Before"})
    first, second = claim(store, CRM_SYNC, "run", limit=10, lease=timedelta(minutes=1))
    take(store, {"email": "two@example.com", "company": "After"})

    with store.write("default") as scope:
        finished = finish_all_in(scope.session, [first, second], "done")

    assert finished == {first.id}
    assert (row(store, first.id).status, row(store, second.id).status) == (
        "done",
        "pending",
    )
    assert row(store, second.id).lease_owner is None
    with pytest.raises(ValueError, match="one owner"):
        finish_all_in(None, [first, replace(second, lease_owner="other")], "done")
