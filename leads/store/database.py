"""Engines and tenant-scoped transactions on SQLite (WAL) or PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, Select, create_engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")

# Seconds a SQLite writer waits for the lock before SQLITE_BUSY.
SQLITE_BUSY_TIMEOUT_MS = 30_000
# A pooled PostgreSQL connection idle this long is pinged before it is used.
PING_AFTER_IDLE_S = 1.0
_RETURNED = "orch_returned_at"
# Seconds a new PostgreSQL connection may take to be established.
POSTGRES_CONNECT_TIMEOUT_SECONDS = 10


def create_store_engine(url: str) -> Engine:
    """An engine for the lead store, with SQLite set up for concurrent writers.

    SQLite gets WAL journaling, a busy timeout, enforced foreign keys and
    transactions that SQLAlchemy (not the sqlite3 module) begins, so savepoints
    work and write transactions can take the write lock up front.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(
            url,
            # libpq waits for ever on a server that accepts and never answers;
            # a `connect_timeout` in the URL wins over this.
            connect_args=(
                {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS}
                if parsed.get_driver_name() in ("psycopg", "psycopg2")
                and "connect_timeout" not in parsed.query
                else {}
            ),
            # As many connections as the API has request threads (40), so a
            # burst queues in the pool briefly instead of timing out.
            pool_size=10,
            max_overflow=30,
            # Statement parameters are lead data: never in logs or errors.
            hide_parameters=True,
        )
        _ping_when_idle(engine)
        return engine

    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, connect_args={"check_same_thread": False}, hide_parameters=True
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy: the sqlite3 module's own
        # implicit BEGIN breaks SAVEPOINT and cannot begin IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # A writer takes the lock when it begins; a deferred transaction that
        # later upgrades from read to write fails with SQLITE_BUSY at once
        # instead of waiting out the busy timeout.
        immediate = connection.get_execution_options().get("sqlite_immediate")
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Checks a pooled connection before use when it has been idle a while.

    A connection the server closed while it sat in the pool (a restart, an
    idle timeout) is replaced, and the pool's older connections with it, as
    `pool_pre_ping` would. One made or returned moments ago is used as it is:
    a ping before every transaction would cost each posted lead's group a
    round trip.
    """

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _fresh(_dbapi_connection: Any, record: Any) -> None:
        record.info[_RETURNED] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _check(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get(_RETURNED)
        if returned is not None and time.monotonic() - returned < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            if not engine.dialect.is_disconnect(exc, dbapi_connection, None):
                raise
            # The pool drops its connections older than now and checks out
            # another (made now, so used without a ping).
            raise InvalidatePoolError(str(exc)) from exc


@dataclass(frozen=True)
class TenantScope:
    """A session bound to one tenant: every query it builds is filtered by it."""

    session: Session
    tenant_id: str

    def select(self, model: type[T]) -> Select[tuple[T]]:
        """`SELECT model` restricted to this tenant's rows."""
        return select(model).where(model.tenant_id == self.tenant_id)  # type: ignore[attr-defined]

    def add(self, row: Any) -> None:
        """Adds a new row, stamped with this tenant."""
        row.tenant_id = self.tenant_id
        self.session.add(row)

    def get(self, model: type[T], row_id: Any, *, lock: bool = False) -> T | None:
        """The row with this primary key, if it belongs to this tenant.

        With `lock`, the row is locked for update until the transaction ends.
        """
        row = self.session.get(model, row_id, with_for_update=lock or None)
        if row is None or row.tenant_id != self.tenant_id:  # type: ignore[attr-defined]
            return None
        return row


class Store:
    """The lead store: one engine and tenant-scoped transactions over it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_store_engine(url)
        self.backend = self.engine.dialect.name
        self._readers = sessionmaker(self.engine, expire_on_commit=False)
        self._writers = sessionmaker(
            self.engine.execution_options(sqlite_immediate=True),
            expire_on_commit=False,
        )

    @contextmanager
    def write(self, tenant_id: str) -> Iterator[TenantScope]:
        """A write transaction for one tenant, committed when the block ends."""
        with self._writers() as session, session.begin():
            yield TenantScope(session, tenant_id)

    @contextmanager
    def write_across_tenants(self) -> Iterator[Session]:
        """A write transaction over every tenant's rows, committed when the block ends.

        For system work that is not one tenant's, such as claiming outbox rows:
        nothing here filters by tenant, so each statement must say what it takes.
        """
        with self._writers() as session, session.begin():
            yield session

    @contextmanager
    def read(self, tenant_id: str) -> Iterator[TenantScope]:
        """A read-only transaction for one tenant."""
        with self._readers() as session, session.begin():
            yield TenantScope(session, tenant_id)

    @contextmanager
    def read_across_tenants(self) -> Iterator[Session]:
        """A read-only transaction over every tenant's rows (keys, system work)."""
        with self._readers() as session, session.begin():
            yield session

    def dispose(self) -> None:
        """Closes every pooled connection."""
        self.engine.dispose()


# PostgreSQL SQLSTATEs that pass on their own: serialisation failure, deadlock,
# the server shutting down or starting, and the connection-exception class.
_TRANSIENT_STATES = ("40001", "40P01", "57P01", "57P02", "57P03", "08")


def is_transient(exc: Exception) -> bool:
    """Whether a database error may pass if the transaction is tried again.

    A locked SQLite file, a dropped connection or a deadlock may; a missing
    table, a refused login or a file that is no database will not.
    """
    if getattr(exc, "connection_invalidated", False):
        return True
    original = getattr(exc, "orig", None)
    state = getattr(original, "sqlstate", None)
    if isinstance(state, str):
        return state.startswith(_TRANSIENT_STATES)
    # sqlite3 names its error codes (SQLITE_BUSY, SQLITE_LOCKED_SHAREDCACHE, …);
    # the message is read only where no name is given.
    name = getattr(original, "sqlite_errorname", None)
    if isinstance(name, str):
        return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
    message = str(original or exc).lower()
    return "database is locked" in message or "database is busy" in message
