"""Which database errors are worth a retry: real SQLite and PostgreSQL failures."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from leads.store.database import is_transient


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
