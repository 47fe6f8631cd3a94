"""Migrations on both backends, and SQLite's connection settings."""

from __future__ import annotations

from sqlalchemy import inspect, text

from leads.store.database import create_store_engine
from leads.store.schema import head_revision, schema_state, upgrade


def test_upgrade_creates_every_table_from_empty(new_store_url, backend):
    engine = create_store_engine(new_store_url(backend))
    assert schema_state(engine).label == "needs_upgrade"

    upgrade(engine)

    assert schema_state(engine).label == "ok"
    assert schema_state(engine).revision == head_revision()
    assert set(inspect(engine).get_table_names()) >= {
        "leads",
        "lead_events",
        "outbox",
        "alembic_version",
    }
    engine.dispose()


def test_upgrade_twice_changes_nothing(new_store_url, backend):
    engine = create_store_engine(new_store_url(backend))
    upgrade(engine)

    upgrade(engine)

    assert schema_state(engine).current
    engine.dispose()


def test_migrations_match_the_table_definitions(new_store_url, backend):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from leads.store.tables import Base

    engine = create_store_engine(new_store_url(backend))
    upgrade(engine)

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)

    assert differences == []
    engine.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(new_store_url):
    engine = create_store_engine(new_store_url("sqlite"))

    with engine.connect() as connection:
        journal = connection.execute(text("PRAGMA journal_mode")).scalar_one()
        foreign_keys = connection.execute(text("PRAGMA foreign_keys")).scalar_one()
        busy = connection.execute(text("PRAGMA busy_timeout")).scalar_one()

    assert (journal, foreign_keys) == ("wal", 1)
    assert busy >= 5000
    engine.dispose()


def test_an_unreachable_store_is_reported_not_raised():
    engine = create_store_engine(
        "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2"
    )

    state = schema_state(engine)

    assert state.label == "unreachable"
    assert state.error
    engine.dispose()
