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
def test_on_sqlite_the_mailbox_lookup_uses_its_index_once_analysed(store):
    # Enough leads that walking the tenant's index is plainly the worse plan.
    leads = [{"email": f"a{i}@x{i}.example"} for i in range(400)]
    submit_batch(store, "default", leads, channel="api", region="US")
    query = (
        "EXPLAIN QUERY PLAN SELECT id FROM leads WHERE tenant_id = 'default' "
        "AND mailbox_key = 'a@example.com' ORDER BY created_at LIMIT 1"
    )

    assert refresh_statistics(store) == list(TABLES)

    with store.engine.connect() as connection:
        plan = " ".join(str(row) for row in connection.exec_driver_sql(query))
    assert "ix_leads_mailbox" in plan
