"""Which drains are polling now, so the API asks Prefect for a run only when none is.

Each event the API sends starts a run of every drain deployment it triggers;
while a drain already polls, that run is only created and cancelled (the
deployments take one run at a time), which costs the Prefect server work and
fills its UI with cancelled runs. A drain polling every outbox says so here
(`Presence`), and the API leaves the event out while every drain it would wake
is present.

Nothing waits longer for it. A drain takes itself out before its last look at
the outbox, so a row committed before the API found it present is taken by
that look. One that stops without it (its time limit, an error) sends the
event itself as it goes (`tasks.drain`). A drain that died counts until its
`until` passes; rows committed meanwhile wait for the next event or the drains'
every-minute schedule, as they would after any crash.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from leads.store import lease_time
from leads.store.database import Store
from leads.store.outbox import PENDING_DRAINS
from leads.store.tables import DrainPresence

logger = logging.getLogger(__name__)

# `until` is stamped and judged by the database server's clock where it can
# be (`lease_time`), as claims' leases are: a drain on a machine whose clock
# disagrees neither counts longer when dead nor too briefly when alive.
# A present drain writes again this often, between its polls and batches ...
RENEW_SECONDS = 5.0
# ... and counts for this long after each write: a batch slower than this
# only costs an event that was not needed.
VALID_FOR = timedelta(seconds=20)


def announce(store: Store, name: str, owner: str, now: datetime | None = None) -> None:
    """Records that `owner`, a run of drain `name`, polls until `now + VALID_FOR`."""
    with store.write_across_tenants() as session:
        until = lease_time.after(session, VALID_FOR, now)
        build = postgresql.insert if store.backend == "postgresql" else sqlite.insert
        statement = build(DrainPresence).values(name=name, owner=owner, until=until)
        # One row per drain; the latest run to write it is the one present.
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[DrainPresence.name],
                set_={"owner": statement.excluded.owner, "until": until},
            )
        )


def withdraw(store: Store, name: str, owner: str) -> None:
    """Removes `owner`'s presence; another run's, which replaced it, stays."""
    with store.write_across_tenants() as session:
        session.execute(
            delete(DrainPresence).where(
                DrainPresence.name == name, DrainPresence.owner == owner
            )
        )


def all_present(
    store: Store, names: Iterable[str], now: datetime | None = None
) -> bool:
    """Whether a run of every drain in `names` is polling and will look again."""
    wanted = set(names)
    with store.read_across_tenants() as session:
        present = session.scalar(
            select(func.count()).where(
                DrainPresence.name.in_(wanted),
                DrainPresence.until > lease_time.now(session, now),
            )
        )
    return present == len(wanted)


def pending_drains_polling(store: Store, now: datetime | None = None) -> bool:
    """Whether every drain the `leads.pending` event starts is polling now.

    Whoever has just committed outbox rows may then leave the event out. False
    when the store cannot tell: an event too many costs little.
    """
    try:
        return all_present(store, PENDING_DRAINS, now)
    except SQLAlchemyError:
        return False


class Presence:
    """One drain run's presence: written when due, withdrawn before its last look."""

    def __init__(
        self,
        store: Store,
        name: str,
        owner: str,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.name = name
        self.owner = owner
        self._monotonic = monotonic
        self._written: float | None = None

    def keep(self) -> None:
        """Writes the presence when it is not written or due for renewal.

        Never raises: a drain that cannot say it polls goes on draining, and
        the API, finding it absent, sends its events as before.
        """
        moment = self._monotonic()
        if self._written is not None and moment - self._written < RENEW_SECONDS:
            return
        try:
            announce(self.store, self.name, self.owner)
        except SQLAlchemyError as exc:
            logger.warning(
                "drain %s could not record that it polls (%s)",
                self.name,
                type(exc).__name__,
            )
            return
        self._written = moment

    def leave(self) -> None:
        """Withdraws the presence; the next `keep` writes it again."""
        withdraw(self.store, self.name, self.owner)
        self._written = None

    def leave_quietly(self) -> None:
        """`leave` unless left already; an error is not raised (the run is ending).

        A presence that could not be withdrawn runs out by itself.
        """
        if self._written is None:
            return
        with suppress(SQLAlchemyError):
            self.leave()
