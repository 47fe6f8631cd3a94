"""Leases across machines whose clocks disagree: PostgreSQL's own clock decides.

Workers on several machines share a PostgreSQL store. Each test runs a
"machine" whose system clock is an hour off (`OffClock`, a system clock as far
as `leads.clock` can tell) beside the test's own, and shows that leases are
stamped and judged by the database server's clock: the machine ahead takes no
lease still held, and the one behind takes a dead one at once.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text, update

from leads import importer
from leads.clock import ManualClock, use_clock
from leads.encryption import SecretBox
from leads.erasure import erase
from leads.intake import submit
from leads.store import Store, lease_time, trigger_keys
from leads.store import imports as stored_imports
from leads.store import webhooks as deliveries
from leads.store.claims import claim, complete, extend
from leads.store.outbox import CRM_SYNC
from leads.store.presence import VALID_FOR, all_present, announce
from leads.store.tables import DrainPresence, LeadImport, OutboxItem, TriggerKey
from tests.skewed_clock import OffClock

pytestmark = pytest.mark.postgres

HOUR = timedelta(hours=1)
LEASE = timedelta(minutes=5)
# A lease short enough to run out while a test waits for it.
BRIEF = timedelta(milliseconds=300)
# How far a stamp read back may sit from the server's time read around it.
SLACK = timedelta(seconds=5)


def server_now(store: Store) -> datetime:
    with store.engine.connect() as connection:
        return connection.scalar(select(func.statement_timestamp())).astimezone(UTC)


def new_sync_row(store: Store) -> int:
    data = {"email": f"{time.time_ns()}@example.com"}
    lead = submit(store, "default", data, channel="api", region="US").lead
    with store.engine.begin() as connection:
        # Due a second ago: the row's time is this process's, and a database
        # clock a hair behind it must not make the row not yet due.
        return connection.scalar(
            update(OutboxItem)
            .where(OutboxItem.lead_id == lead.id, OutboxItem.topic == CRM_SYNC)
            .values(available_at=OutboxItem.available_at - text("interval '1 second'"))
            .returning(OutboxItem.id)
        )


def lease_of(store: Store, model, row_id, column: str = "lease_expires_at"):
    with store.engine.connect() as connection:
        return connection.scalar(
            select(getattr(model, column)).where(model.id == row_id)
        ).astimezone(UTC)


def take(store: Store, owner: str, lease: timedelta = LEASE, row_id: int = 0):
    return [
        held.id
        for held in claim(store, CRM_SYNC, owner, limit=1000, lease=lease)
        if held.id == row_id
    ]


class TestOutboxClaims:
    def test_the_lease_is_stamped_by_the_servers_clock(self, postgres_store):
        row_id = new_sync_row(postgres_store)

        before = server_now(postgres_store)
        with use_clock(OffClock(HOUR)):
            assert take(postgres_store, "ahead", row_id=row_id) == [row_id]

        expires = lease_of(postgres_store, OutboxItem, row_id)
        assert before + LEASE <= expires <= before + LEASE + SLACK

    def test_a_machine_whose_clock_runs_ahead_takes_no_lease_still_held(
        self, postgres_store
    ):
        row_id = new_sync_row(postgres_store)
        assert take(postgres_store, "here", row_id=row_id) == [row_id]

        # An hour ahead, its own clock would say the five-minute lease ran out.
        with use_clock(OffClock(HOUR)):
            assert take(postgres_store, "ahead", row_id=row_id) == []

    def test_a_machine_whose_clock_runs_behind_takes_a_dead_lease_at_once(
        self, postgres_store
    ):
        row_id = new_sync_row(postgres_store)
        assert take(postgres_store, "dies", lease=BRIEF, row_id=row_id) == [row_id]
        time.sleep(BRIEF.total_seconds() * 2)

        with use_clock(OffClock(-HOUR)):
            assert take(postgres_store, "behind", row_id=row_id) == [row_id]

    def test_rows_due_now_are_due_to_a_machine_whose_clock_runs_behind(
        self, postgres_store
    ):
        row_id = new_sync_row(postgres_store)

        with use_clock(OffClock(-HOUR)):
            assert take(postgres_store, "behind", row_id=row_id) == [row_id]

    def test_an_extended_lease_runs_from_the_servers_time(self, postgres_store):
        row_id = new_sync_row(postgres_store)
        (held,) = [
            held
            for held in claim(postgres_store, CRM_SYNC, "here", limit=1000, lease=LEASE)
            if held.id == row_id
        ]

        before = server_now(postgres_store)
        with use_clock(OffClock(HOUR)):
            assert extend(postgres_store, held, timedelta(minutes=30)) is True

        expires = lease_of(postgres_store, OutboxItem, row_id)
        late = before + timedelta(minutes=30)
        assert late <= expires <= late + SLACK

    def test_a_row_whose_lead_changed_while_held_is_due_at_once_by_the_server(
        self, postgres_store
    ):
        row_id = new_sync_row(postgres_store)
        (held,) = [
            held
            for held in claim(postgres_store, CRM_SYNC, "here", limit=1000, lease=LEASE)
            if held.id == row_id
        ]
        with postgres_store.engine.begin() as connection:
            connection.execute(
                update(OutboxItem)
                .where(OutboxItem.id == row_id)
                .values(generation=OutboxItem.generation + 1)
            )

        before = server_now(postgres_store)
        with use_clock(OffClock(HOUR)):
            assert complete(postgres_store, held) is False

        due = lease_of(postgres_store, OutboxItem, row_id, "available_at")
        assert before <= due <= before + SLACK
        assert take(postgres_store, "next", row_id=row_id) == [row_id]

    def test_an_installed_test_clock_still_moves_leases(self, postgres_store):
        row_id = new_sync_row(postgres_store)
        start = server_now(postgres_store) + timedelta(days=3)

        with use_clock(ManualClock(start)) as moved:
            assert take(postgres_store, "first", row_id=row_id) == [row_id]
            assert lease_of(postgres_store, OutboxItem, row_id) == start + LEASE
            moved.advance(LEASE + timedelta(seconds=1))
            assert take(postgres_store, "second", row_id=row_id) == [row_id]


class TestImports:
    def new_import(self, store: Store) -> str:
        with store.write("default") as scope:
            row = stored_imports.create(
                scope,
                filename="leads.csv",
                path="nowhere.csv",
                size_bytes=0,
                mapping=None,
                dry_run=False,
                chunk_size=10,
            )
            return row.id

    def test_a_machine_ahead_neither_takes_nor_resumes_a_held_import(
        self, postgres_store
    ):
        import_id = self.new_import(postgres_store)
        before = server_now(postgres_store)
        with use_clock(OffClock(-HOUR)):
            assert stored_imports.claim(
                postgres_store, import_id, "behind", lease=LEASE
            )
        expires = lease_of(postgres_store, LeadImport, import_id)
        assert before + LEASE <= expires <= before + LEASE + SLACK

        with use_clock(OffClock(HOUR)):
            assert not stored_imports.claim(
                postgres_store, import_id, "ahead", lease=LEASE
            )
            assert import_id not in stored_imports.resumable(postgres_store)

    def test_a_machine_behind_resumes_an_import_whose_run_died(self, postgres_store):
        import_id = self.new_import(postgres_store)
        assert stored_imports.claim(postgres_store, import_id, "dies", lease=BRIEF)
        time.sleep(BRIEF.total_seconds() * 2)

        with use_clock(OffClock(-HOUR)):
            assert import_id in stored_imports.resumable(postgres_store)
            assert stored_imports.claim(
                postgres_store, import_id, "behind", lease=LEASE
            )

    def test_a_renewed_import_lease_runs_from_the_servers_time(self, postgres_store):
        import_id = self.new_import(postgres_store)
        assert stored_imports.claim(postgres_store, import_id, "here", lease=BRIEF)

        before = server_now(postgres_store)
        with use_clock(OffClock(-HOUR)):
            assert stored_imports.extend(postgres_store, import_id, "here", lease=LEASE)

        expires = lease_of(postgres_store, LeadImport, import_id)
        assert before + LEASE <= expires <= before + LEASE + SLACK

    def test_a_running_import_renews_its_lease_by_the_servers_clock(
        self, postgres_store, tmp_path
    ):
        source = tmp_path / "people.csv"
        rows = [f"person{n}.{time.time_ns()}@example.com" for n in range(5)]
        source.write_text("email\n" + "\n".join(rows) + "\n")
        with source.open("rb") as upload:
            accepted = importer.accept(
                postgres_store,
                "default",
                upload,
                filename=source.name,
                folder=tmp_path,
                chunk_size=2,
                max_bytes=10**6,
            )
        renewed = []

        def after_chunk(_job, _chunk, _counts) -> None:
            renewed.append(
                (
                    server_now(postgres_store),
                    lease_of(postgres_store, LeadImport, accepted.id),
                )
            )

        with use_clock(OffClock(HOUR)):
            importer.run(
                postgres_store,
                accepted.id,
                owner="ahead",
                region="US",
                on_chunk=after_chunk,
            )

        assert len(renewed) == 3
        for then, expires in renewed:
            assert then < expires <= then + importer.DEFAULT_LEASE + SLACK


class TestWebhookDeliveries:
    def new_delivery(self, store: Store) -> int:
        with store.write("default") as scope:
            return deliveries.keep(
                scope,
                "forms",
                f"evt-{time.time_ns()}",
                body=b"{}",
                occurred_at=datetime.now(UTC),
            ).id

    def test_a_machine_ahead_takes_no_delivery_still_held(self, postgres_store):
        pk = self.new_delivery(postgres_store)
        before = server_now(postgres_store)
        with use_clock(OffClock(-HOUR)), postgres_store.write("default") as scope:
            assert deliveries.claim(scope, pk) is not None
        until = lease_of(
            postgres_store, deliveries.WebhookDelivery, pk, "claimed_until"
        )
        assert before + deliveries.LEASE <= until <= before + deliveries.LEASE + SLACK

        with use_clock(OffClock(HOUR)):
            assert pk not in [
                found for _, found in deliveries.due(postgres_store, 1000)
            ]
            with postgres_store.write("default") as scope:
                assert deliveries.claim(scope, pk) is None

    def test_a_machine_behind_takes_a_delivery_whose_processor_died(
        self, postgres_store
    ):
        pk = self.new_delivery(postgres_store)
        with postgres_store.write("default") as scope:
            assert deliveries.claim(scope, pk) is not None
        # The delivery's lease is two minutes; let it run out by the server's
        # clock without waiting for it.
        with postgres_store.write("default") as scope:
            scope.session.execute(
                deliveries.WebhookDelivery.__table__.update()
                .where(deliveries.WebhookDelivery.id == pk)
                .values(claimed_until=func.statement_timestamp() - BRIEF)
            )

        with use_clock(OffClock(-HOUR)):
            assert pk in [found for _, found in deliveries.due(postgres_store, 1000)]
            with postgres_store.write("default") as scope:
                assert deliveries.claim(scope, pk) is not None


class TestErasure:
    def test_a_deletion_waits_for_a_sync_in_flight_by_the_servers_clock(
        self, postgres_store
    ):
        row_id = new_sync_row(postgres_store)
        (held,) = [
            held
            for held in claim(
                postgres_store, CRM_SYNC, "syncing", limit=1000, lease=LEASE
            )
            if held.id == row_id
        ]
        ends = lease_of(postgres_store, OutboxItem, row_id)

        # Erased on a machine an hour ahead, which would take the lease for
        # long run out and let the deletion wait an hour too long.
        with use_clock(OffClock(HOUR)), postgres_store.write("default") as scope:
            erase(
                scope,
                held.lead_id,
                actor="key-1",
                seal=SecretBox("test secret key").seal,
                trigger={"via": "test"},
            )

        with postgres_store.engine.connect() as connection:
            due = connection.scalar(
                select(OutboxItem.available_at).where(
                    OutboxItem.key == f"erase:{held.lead_id}"
                )
            ).astimezone(UTC)
        assert due == ends


class TestTriggerKeyHolds:
    def test_a_replica_ahead_takes_no_hold_still_running(self, postgres_store):
        key = f"trigger-{time.time_ns()}"
        before = server_now(postgres_store)
        with use_clock(OffClock(-HOUR)):
            assert trigger_keys.try_hold(postgres_store, "default", key) is not None
        with postgres_store.engine.connect() as connection:
            until = connection.scalar(
                select(TriggerKey.held_until).where(TriggerKey.key == key)
            ).astimezone(UTC)
        assert before + trigger_keys.HOLD <= until <= before + trigger_keys.HOLD + SLACK

        with use_clock(OffClock(HOUR)):
            assert trigger_keys.try_hold(postgres_store, "default", key) is None

    def test_a_released_hold_is_taken_at_once_by_a_replica_behind(self, postgres_store):
        key = f"trigger-{time.time_ns()}"
        with use_clock(OffClock(HOUR)):
            held = trigger_keys.try_hold(postgres_store, "default", key)
            trigger_keys.release(postgres_store, "default", held)

        with use_clock(OffClock(-HOUR)):
            assert trigger_keys.try_hold(postgres_store, "default", key) is not None


class TestDrainPresence:
    def test_a_drain_on_a_machine_ahead_counts_only_its_valid_time(
        self, postgres_store
    ):
        before = server_now(postgres_store)
        with use_clock(OffClock(HOUR)):
            announce(postgres_store, "crm_sync", "ahead")

        with postgres_store.engine.connect() as connection:
            until = connection.scalar(
                select(DrainPresence.until).where(DrainPresence.name == "crm_sync")
            ).astimezone(UTC)
        assert before + VALID_FOR <= until <= before + VALID_FOR + SLACK

    def test_a_live_drain_on_a_machine_behind_counts_as_present(self, postgres_store):
        with use_clock(OffClock(-HOUR)):
            announce(postgres_store, "sequence_dispatcher", "behind")

        assert all_present(postgres_store, ["sequence_dispatcher"])
        with use_clock(OffClock(HOUR)):
            assert all_present(postgres_store, ["sequence_dispatcher"])


class TestWhereTheTimeComesFrom:
    def test_sqlite_and_a_given_time_use_the_process_clock(self, new_store_url):
        at = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
        sqlite = Store(new_store_url("sqlite"))
        try:
            with sqlite.write_across_tenants() as session:
                assert not lease_time.on_server(session)
                assert lease_time.read(session, at) == at
        finally:
            sqlite.dispose()

    def test_postgresql_reads_the_servers_clock_unless_given_a_time(
        self, postgres_store
    ):
        at = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
        with postgres_store.write_across_tenants() as session:
            assert lease_time.on_server(session)
            assert not lease_time.on_server(session, at)
            assert lease_time.read(session, at) == at
            with use_clock(OffClock(HOUR)):
                read = lease_time.read(session)
            assert abs(read - server_now(postgres_store)) < SLACK
            with use_clock(ManualClock(at)):
                assert not lease_time.on_server(session)
                assert lease_time.read(session) == at

    def test_a_naive_time_is_refused(self, postgres_store):
        with (
            postgres_store.write_across_tenants() as session,
            pytest.raises(ValueError),
        ):
            lease_time.read(session, datetime(2026, 12, 5, 9, 0))
