"""Planner statistics: stale tables are analysed, fresh ones left alone."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from sqlalchemy import text

from leads.intake import prepare, submit, submit_batch, submit_together
from leads.store import Store, statistics
from leads.store.statistics import TABLES, refresh_statistics
from tests.conftest import free_port


@pytest.mark.postgres
@pytest.mark.parametrize("migrated_store", ["postgresql"], indirect=True)
def test_stale_tables_are_analysed(store):
    for i in range(120):
        submit(
            store, "default", {"email": f"s{i}@example.com"}, channel="api", region="US"
        )

    # PostgreSQL publishes its change counters up to a second or so late.
    first: list[str] = []
    deadline = time.monotonic() + 10
    while set(first) != set(TABLES) and time.monotonic() < deadline:
        first += refresh_statistics(store)
        time.sleep(0.2)
    with store.engine.connect() as connection:
        analysed = connection.execute(
            text(
                "SELECT relname FROM pg_stat_user_tables "
                "WHERE last_analyze IS NOT NULL AND relname = ANY(:t)"
            ),
            {"t": list(TABLES)},
        ).scalars()
        analysed = sorted(analysed)

    assert sorted(first) == sorted(TABLES)
    assert analysed == sorted(TABLES)
    # Sampled at the smaller target: at most target + 1 histogram bounds,
    # where PostgreSQL's default would keep up to 101 of these 120 addresses.
    with store.engine.connect() as connection:
        bounds = connection.execute(
            text(
                "SELECT cardinality(histogram_bounds::text::text[]) FROM pg_stats "
                "WHERE tablename = 'leads' AND attname = 'email'"
            )
        ).scalar_one()
    assert 2 <= bounds <= statistics.POSTGRES_STATISTICS_TARGET + 1


@pytest.mark.postgres
@pytest.mark.parametrize("migrated_store", ["postgresql"], indirect=True)
def test_a_refresh_under_way_elsewhere_is_left_to_that_process(store):
    for i in range(120):
        submit(
            store, "default", {"email": f"t{i}@example.com"}, channel="api", region="US"
        )
    with store.engine.connect() as other:
        other.execute(
            text("SELECT pg_advisory_xact_lock(:key)"),
            {"key": statistics.POSTGRES_REFRESH_LOCK},
        )
        while_held = [refresh_statistics(store) for _ in range(5)]
        other.rollback()
    # Once it is free, the tables are analysed (counters come a little late).
    after: list[str] = []
    deadline = time.monotonic() + 10
    while set(after) != set(TABLES) and time.monotonic() < deadline:
        after += refresh_statistics(store)
        time.sleep(0.2)

    assert while_held == [[]] * 5
    assert set(after) == set(TABLES)


@pytest.mark.parametrize("migrated_store", ["sqlite"], indirect=True)
def test_on_sqlite_every_table_gets_planner_statistics(store):
    leads = [{"email": f"a{i}@x{i}.example"} for i in range(50)]
    submit_batch(store, "default", leads, channel="api", region="US")

    assert refresh_statistics(store) == list(TABLES)

    with store.engine.connect() as connection:
        analysed = set(
            connection.exec_driver_sql("SELECT tbl FROM sqlite_stat1").scalars()
        )
    assert set(TABLES) <= analysed


@pytest.mark.postgres
@pytest.mark.parametrize("migrated_store", ["postgresql"], indirect=True)
def test_single_leads_taken_in_together_get_their_tables_analysed(store, monkeypatch):
    # Each call may refresh (no store was asked before in this test).
    monkeypatch.setattr(statistics, "_checked", {})
    monkeypatch.setattr(statistics, "CHECK_EVERY_S", 0.0)
    started: list[threading.Thread] = []
    real = statistics.refresh_statistics_now_and_then

    def remembered(store, every_s=None):
        thread = real(store, every_s)
        if thread is not None:
            started.append(thread)
        return thread

    monkeypatch.setattr("leads.intake.refresh_statistics_now_and_then", remembered)

    before = _analyses(store, "leads")
    deadline = time.monotonic() + 15
    number = 0
    while _analyses(store, "leads") == before and time.monotonic() < deadline:
        # PostgreSQL publishes its change counters up to a second or so late.
        group = [
            prepare({"email": f"g{number}.{i}@example.com"}, "US") for i in range(60)
        ]
        submit_together(store, "default", group, channel="api")
        number += 1
        for thread in started:
            thread.join(timeout=10)
        time.sleep(0.2)

    assert started, "single-lead intake never asked for fresh statistics"
    assert _analyses(store, "leads") > before


@pytest.mark.postgres
@pytest.mark.parametrize("migrated_store", ["postgresql"], indirect=True)
def test_statistics_are_asked_for_at_most_once_a_while(store, monkeypatch):
    monkeypatch.setattr(statistics, "_checked", {})

    first = statistics.refresh_statistics_now_and_then(store, every_s=60)
    again = statistics.refresh_statistics_now_and_then(store, every_s=60)

    assert first is not None
    first.join(timeout=10)
    assert again is None


@pytest.mark.parametrize("migrated_store", ["sqlite"], indirect=True)
def test_sqlite_is_not_analysed_after_single_leads(store, monkeypatch):
    monkeypatch.setattr(statistics, "_checked", {})

    assert statistics.refresh_statistics_now_and_then(store, every_s=0) is None


@pytest.mark.postgres
def test_a_refresh_that_fails_is_logged_and_raises_nothing(caplog, monkeypatch):
    monkeypatch.setattr(statistics, "_checked", {})
    # A loopback port nothing listens on: every connect is refused.
    unreachable = Store(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")
    try:
        with caplog.at_level(logging.WARNING, logger="leads.store.statistics"):
            thread = statistics.refresh_statistics_now_and_then(unreachable, every_s=0)
            assert thread is not None
            thread.join(timeout=20)
    finally:
        unreachable.dispose()

    assert "statistics not refreshed: OperationalError" in caplog.text


def _analyses(store, table: str) -> int:
    """How many times PostgreSQL has analysed `table` on request (ANALYZE)."""
    with store.engine.connect() as connection:
        return connection.execute(
            text("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = :t"),
            {"t": table},
        ).scalar_one()
