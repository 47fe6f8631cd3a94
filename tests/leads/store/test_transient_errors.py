"""Which database errors are worth a retry: real SQLite and PostgreSQL failures."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from leads.store.database import create_store_engine, is_transient


def error_of(engine, sql: str) -> OperationalError:
    with pytest.raises(OperationalError) as caught, engine.connect() as connection:
        connection.execute(text(sql))
    return caught.value


def test_a_locked_sqlite_file_is_transient_and_a_missing_table_is_not(tmp_path):
    path = tmp_path / "store.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    try:
        locked = error_of(engine, "SELECT * FROM t")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    missing = error_of(engine, "SELECT * FROM nosuch")
    engine.dispose()

    assert is_transient(locked)
    assert not is_transient(missing)


@pytest.mark.postgres
def test_a_refused_postgresql_login_is_not_transient(postgres_server):
    engine = create_engine(postgres_server.rsplit("/", 1)[0] + "/no_such_database_here")
    try:
        refused = error_of(engine, "SELECT 1")
    finally:
        engine.dispose()

    assert not is_transient(refused)


def _pooled_then_closed(engine) -> int:
    """Returns a connection to the pool, has the server end it; its backend's pid."""
    with engine.connect() as pooled, engine.connect() as other:
        pid = pooled.execute(text("SELECT pg_backend_pid()")).scalar()
        pooled.close()
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    return pid


@pytest.mark.postgres
def test_a_pooled_connection_the_server_closed_while_idle_is_replaced(
    new_store_url, monkeypatch
):
    engine = create_store_engine(new_store_url("postgresql"))
    try:
        # A server restart or an idle timeout closes it while it is pooled.
        closed_pid = _pooled_then_closed(engine)
        # Idle long enough to be checked before it is used again.
        monkeypatch.setattr("leads.store.database.PING_AFTER_IDLE_S", 0.0)

        with engine.connect() as connection:
            pid = connection.execute(text("SELECT pg_backend_pid()")).scalar()
    finally:
        engine.dispose()

    assert pid != closed_pid


@pytest.mark.postgres
def test_a_connection_returned_moments_ago_is_used_without_a_ping(new_store_url):
    engine = create_store_engine(new_store_url("postgresql"))
    try:
        _pooled_then_closed(engine)
        # Not pinged: the closed connection is found out by the statement.
        with pytest.raises(OperationalError) as caught, engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    finally:
        engine.dispose()

    assert caught.value.connection_invalidated
    assert is_transient(caught.value)
