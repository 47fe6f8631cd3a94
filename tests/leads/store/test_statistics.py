"""Planner statistics: stale tables are analysed, fresh ones left alone."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from leads.intake import submit, submit_batch
from leads.store.statistics import TABLES, refresh_statistics


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
