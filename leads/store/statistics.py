"""Keeping the planner's statistics fresh, on PostgreSQL and on SQLite.

Before a table's first ANALYZE, PostgreSQL estimates one row for most lookups,
every index costs the same, and the e-mail lookup may walk a whole tenant
instead of using the unique key (measured: each 1,000-lead batch slower than the
last). Autovacuum normally analyses; where it is off or lagging, intake does it.
SQLite has no statistics until ANALYZE either, and then prefers the
`(tenant_id, created_at)` index whenever a query sorts by creation time; a
sampled ANALYZE (a few hundred rows per index) costs milliseconds.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from leads.store.database import Store

logger = logging.getLogger(__name__)

TABLES = ("leads", "lead_events", "outbox", "lead_match_keys")
# Rows of each index SQLite's ANALYZE reads: enough to tell a selective index
# from the tenant's.
SQLITE_SAMPLE_ROWS = 400
# Autovacuum's own defaults: analyse once 10 % of the rows (plus 50) changed.
CHANGED_FRACTION = 0.1
CHANGED_BASE = 50
# How often single-lead intake asks whether the statistics went stale.
CHECK_EVERY_S = 10.0
# The sample each PostgreSQL ANALYZE here takes, as `default_statistics_target`
# (300 rows per unit; PostgreSQL's default is 100): intake's lookups need only
# tell a selective index from the tenant's, and the ANALYZE runs beside intake.
POSTGRES_STATISTICS_TARGET = 25
# The transaction-level advisory lock one refresh holds at a time, across every
# process on the store: another finds it taken and leaves the work to it.
POSTGRES_REFRESH_LOCK = 0x6F72_6368_616E_616C
# When each store (by URL) was last asked, for `refresh_statistics_now_and_then`.
_checked: dict[str, float] = {}
_checked_lock = threading.Lock()


def refresh_statistics(store: Store) -> list[str]:
    """ANALYZEs the tables whose statistics are stale.

    Returns:
        The tables analysed.
    """
    if store.backend == "sqlite":
        return _refresh_sqlite(store)
    if store.backend != "postgresql":
        return []
    with store.engine.connect() as connection:
        # Two processes analysing one table would queue on its lock, each
        # doing the whole work again once the other is done.
        taken = connection.execute(
            text("SELECT pg_try_advisory_xact_lock(:key)"),
            {"key": POSTGRES_REFRESH_LOCK},
        ).scalar()
        if not taken:
            connection.rollback()
            return []
        rows = connection.execute(
            text(
                "SELECT s.relname, s.n_mod_since_analyze, greatest(c.reltuples, 0) "
                "FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
                "WHERE s.relname = ANY(:tables)"
            ),
            {"tables": list(TABLES)},
        ).all()
        stale = [
            name
            for name, changed, estimated in rows
            if changed > CHANGED_BASE + CHANGED_FRACTION * estimated
        ]
        if stale:
            target = POSTGRES_STATISTICS_TARGET
            connection.execute(text(f"SET LOCAL default_statistics_target = {target}"))
        for name in stale:
            connection.execute(text(f'ANALYZE "{name}"'))
        connection.commit()
    if stale:
        logger.info("analysed %s", ", ".join(stale))
    return stale


def refresh_statistics_now_and_then(
    store: Store, every_s: float | None = None
) -> threading.Thread | None:
    """`refresh_statistics` in a thread of its own, at most once every `every_s`
    seconds per store (`CHECK_EVERY_S` when not given).

    For a writer of a few leads at a time (the API's single leads), whose
    tables grow with no batch end to analyse them at. The caller does not
    wait: an ANALYZE of a large table takes a while, and the leads it wrote
    are committed already. A failure is logged, never raised.

    Returns:
        The thread refreshing, or None when it was not time yet (or the
        store is SQLite).
    """
    if store.backend != "postgresql":
        # SQLite counts no changed rows, so each check would be an ANALYZE
        # taking the write lock; its intake lookups use their indexes anyway.
        return None
    every_s = CHECK_EVERY_S if every_s is None else every_s
    now = time.monotonic()
    with _checked_lock:
        last = _checked.get(store.url)
        if last is not None and now - last < every_s:
            return None
        _checked[store.url] = now
    refreshing = threading.Thread(
        target=_refresh_quietly, args=(store,), name="refresh-statistics", daemon=True
    )
    refreshing.start()
    return refreshing


def _refresh_quietly(store: Store) -> None:
    try:
        refresh_statistics(store)
    except SQLAlchemyError as exc:
        logger.warning("statistics not refreshed: %s", type(exc).__name__)


def _refresh_sqlite(store: Store) -> list[str]:
    # SQLite keeps no count of changed rows; a sampled ANALYZE is cheap enough
    # to run whenever intake or the dispatcher asks.
    with store.engine.connect() as connection:
        connection.exec_driver_sql(f"PRAGMA analysis_limit={SQLITE_SAMPLE_ROWS}")
        for name in TABLES:
            connection.exec_driver_sql(f'ANALYZE "{name}"')
        connection.commit()
    return list(TABLES)
