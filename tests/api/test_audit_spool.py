"""The audit spool: records a failing store refused are kept, then written in order."""

from __future__ import annotations

import logging
import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from api import audit_log
from api.audit_spool import SET_ASIDE_NAME, AuditSpool
from leads.store import Store
from leads.store.audit import CallRecord
from leads.store.schema import upgrade
from leads.store.tables import AuditEvent


def call(number: int) -> audit_log.Call:
    return audit_log.Call(
        action="PATCH /api/leads/{lead_id}",
        status=200,
        tenant_id="default",
        key_id="key-1",
        target_type="lead",
        target_id=f"lead-{number}",
        detail={"n": number},
    )


def record(number: int) -> CallRecord:
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=number)
    return CallRecord(
        "default", "key-1", "POST /api/x", 201, "lead", str(number), at=at
    )


def stored(store: Store) -> list[AuditEvent]:
    with store.read_across_tenants() as session:
        return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


@pytest.fixture
def store(new_store_url) -> Store:
    store = Store(new_store_url("sqlite"))
    upgrade(store.engine)
    yield store
    store.dispose()


def refuse_writes(store: Store) -> None:
    with store.engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TRIGGER audit_refuses BEFORE INSERT ON audit_events "
            "BEGIN SELECT RAISE(ABORT, 'no'); END"
        )


def take_writes_again(store: Store) -> None:
    with store.engine.begin() as connection:
        connection.exec_driver_sql("DROP TRIGGER audit_refuses")


class TestWhileTheStoreRefuses:
    def test_refused_records_are_spooled_and_written_first_once_it_takes_them(
        self, store, tmp_path, caplog
    ):
        spool = AuditSpool(tmp_path)
        caplog.set_level(logging.ERROR, logger="api.audit_log")
        refuse_writes(store)

        assert audit_log.write_calls(store, [call(1), call(2)], spool) == [False] * 2
        assert audit_log.write_calls(store, [call(3)], spool) == [False]
        assert stored(store) == []
        assert spool.waiting()
        take_writes_again(store)
        assert audit_log.write_calls(store, [call(4)], spool) == [True]

        records = stored(store)
        assert [r.target_id for r in records] == [f"lead-{n}" for n in (1, 2, 3, 4)]
        assert [r.detail for r in records] == [{"n": n} for n in (1, 2, 3, 4)]
        # Each keeps the time it was answered, not the time it was replayed.
        assert records[0].at <= records[2].at <= records[3].at
        assert not spool.waiting()
        messages = [r.getMessage() for r in caplog.records]
        assert len(messages) == 3
        assert all(m.endswith("kept in the spool") for m in messages)

    def test_a_failed_replay_keeps_the_spool_whole(self, store, tmp_path):
        spool = AuditSpool(tmp_path)
        spool.keep([record(1), record(2)])
        refuse_writes(store)

        audit_log.write_calls(store, [call(3)], spool)

        assert stored(store) == []
        with spool.taken() as taken:
            assert [r.target_id for r in taken.records] == ["1", "2", "lead-3"]
            taken.keep(taken.records)

    def test_records_taken_by_a_block_that_fails_stay(self, tmp_path):
        spool = AuditSpool(tmp_path)
        spool.keep([record(1)])

        with pytest.raises(RuntimeError), spool.taken() as taken:
            assert len(taken.records) == 1
            raise RuntimeError("the transaction did not commit")

        with spool.taken() as taken:
            assert [r.target_id for r in taken.records] == ["1"]

    def test_a_record_the_store_never_takes_is_set_aside_not_left_blocking(
        self, store, tmp_path, caplog
    ):
        spool = AuditSpool(tmp_path)
        poison = CallRecord("default", "key-1", "POISON", 200, at=record(0).at)
        spool.keep([record(1), poison, record(2)])
        with store.engine.begin() as connection:
            connection.exec_driver_sql(
                "CREATE TRIGGER audit_refuses_poison BEFORE INSERT ON audit_events "
                "WHEN NEW.action = 'POISON' BEGIN SELECT RAISE(ABORT, 'no'); END"
            )

        assert audit_log.write_calls(store, [call(3)], spool) == [True]

        assert sorted(r.target_id for r in stored(store)) == ["1", "2", "lead-3"]
        assert not spool.waiting()
        aside = (tmp_path / SET_ASIDE_NAME).read_text(encoding="utf-8")
        assert '"action": "POISON"' in aside
        assert audit_log.write_calls(store, [call(4)], spool) == [True]

    def test_a_replay_at_start_against_a_refusing_store_keeps_the_spool(
        self, store, tmp_path
    ):
        spool = AuditSpool(tmp_path)
        spool.keep([record(1)])
        refuse_writes(store)

        audit_log.replay_spool(store, spool)

        assert not (tmp_path / SET_ASIDE_NAME).exists()
        with spool.taken() as taken:
            assert [r.target_id for r in taken.records] == ["1"]
            taken.keep(taken.records)

    def test_a_spool_that_cannot_be_used_leaves_the_store_writing(
        self, store, tmp_path, caplog
    ):
        spool = AuditSpool(tmp_path)
        # Not a file: opening it fails as a read-only data dir would.
        spool.path.mkdir()
        (spool.path / "x").write_text("x")

        assert audit_log.write_calls(store, [call(1)], spool) == [True]

        assert [r.target_id for r in stored(store)] == ["lead-1"]
        assert "audit spool audit-spool.jsonl cannot be used" in caplog.text

    def test_the_api_replays_the_spool_when_it_starts(self, store, tmp_path, serve_api):
        from tests.api.test_audit import settings_for

        AuditSpool(tmp_path).keep([record(1)])

        serve_api(settings_for(store, tmp_path))

        [replayed] = stored(store)
        assert (replayed.action, replayed.target_id) == ("POST /api/x", "1")
        assert replayed.at == datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
        assert not AuditSpool(tmp_path).waiting()


class TestTheFile:
    def test_records_read_back_as_they_were_kept(self, tmp_path):
        spool = AuditSpool(tmp_path)
        kept = [record(1), CallRecord("t", "k", "DELETE /api/x/{id}", 204)]

        spool.keep(kept)

        with spool.taken() as taken:
            assert taken.records == kept
        with spool.taken() as taken:
            assert taken.records == []

    def test_an_unreadable_line_is_set_aside_and_the_rest_replayed(
        self, tmp_path, caplog
    ):
        spool = AuditSpool(tmp_path)
        spool.keep([record(1)])
        with spool.path.open("a", encoding="utf-8") as file:
            # A line cut short by a crash mid-write.
            file.write('{"tenant_id": "default", "key_')
        spool.keep([record(2)])

        with spool.taken() as taken:
            assert [r.target_id for r in taken.records] == ["1", "2"]

        aside = (tmp_path / SET_ASIDE_NAME).read_text(encoding="utf-8")
        assert aside == '{"tenant_id": "default", "key_\n'
        assert "could not be read back" in caplog.text
        assert not spool.waiting()

    def test_processes_appending_at_once_lose_no_line(self, tmp_path):
        context = multiprocessing.get_context("spawn")
        workers = [
            context.Process(target=_append_many, args=(tmp_path, start))
            for start in (0, 1000, 2000, 3000)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
            assert worker.exitcode == 0

        with AuditSpool(tmp_path).taken() as taken:
            numbers = sorted(int(r.target_id) for r in taken.records)
        assert numbers == [
            start + n for start in (0, 1000, 2000, 3000) for n in range(200)
        ]


def _append_many(folder: Path, start: int) -> None:
    spool = AuditSpool(folder)
    for n in range(start, start + 200):
        spool.keep([record(n)])
