"""The time leases are stamped and judged by: the database server's, where it can be.

A lease is stamped by the worker that takes it and judged by every worker
that might take it over. Were each to read its own clock, a machine whose
clock ran ahead would take leases still held, and work would be done twice;
one whose clock ran behind would leave a dead worker's rows waiting. On
PostgreSQL, the store workers on several machines share, both sides read the
database server's clock instead (`statement_timestamp()`), inside the very
statement that stamps or judges, so their own clocks never meet.

SQLite's store is a file on one machine, whose processes share its clock:
there the installed clock (`leads.clock`) answers, as it does on PostgreSQL
while a test or a benchmark has installed a clock of its own, so moving that
clock still moves leases. A time given by the caller is used as given.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, Float, func, literal, select, type_coerce
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from leads import clock
from leads.store.tables import UTCDateTime

# Where the statements run: a session, or a connection of its own.
Runner = Session | Connection


def on_server(runner: Runner, given: datetime | None = None) -> bool:
    """Whether statements in `runner` take the time from the database server."""
    if given is not None or not clock.reads_system():
        return False
    bind = runner if isinstance(runner, Connection) else runner.get_bind()
    return bind.dialect.name == "postgresql"


def server_now() -> ColumnElement[datetime]:
    """The database server's current time (PostgreSQL), for a statement."""
    return func.statement_timestamp(type_=UTCDateTime())


def server_after(seconds: ColumnElement[float]) -> ColumnElement[datetime]:
    """`seconds` past the database server's current time, for a statement.

    Added as seconds, never days: a day added in a session whose time zone
    keeps daylight saving can be 23 or 25 hours long.
    """
    span = func.make_interval(0, 0, 0, 0, 0, 0, seconds)
    return type_coerce(server_now() + span, UTCDateTime())


def now(runner: Runner, given: datetime | None = None) -> ColumnElement[datetime]:
    """The current time, as an expression for a statement in `runner`."""
    return after(runner, timedelta(0), given)


def after(
    runner: Runner, span: timedelta, given: datetime | None = None
) -> ColumnElement[datetime]:
    """`span` past the current time, as an expression for a statement in `runner`.

    Raises:
        ValueError: `given` is naive.
    """
    if on_server(runner, given):
        if not span:
            return server_now()
        return server_after(literal(span.total_seconds(), Float()))
    return literal(_aware(given) + span, UTCDateTime())


def read(runner: Runner, given: datetime | None = None) -> datetime:
    """The current time as a value; on the server, one round trip to read it."""
    if on_server(runner, given):
        return runner.scalar(select(server_now()))
    return _aware(given)


def _aware(given: datetime | None) -> datetime:
    if given is None:
        return clock.now()
    if given.tzinfo is None:
        raise ValueError(f"an aware time is needed, got {given!r}")
    return given
