"""Claiming outbox rows under a lease, and settling each claim once its work is done."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

from sqlalchemy import Float, Select, and_, bindparam, or_, select, tuple_, update
from sqlalchemy.orm import Session

from leads.store import lease_time
from leads.store.database import Store
from leads.store.tables import OutboxItem, utcnow

# The outbox's `lease_owner` column is this wide.
MAX_OWNER_LENGTH = 64


@dataclass(frozen=True)
class Claim:
    """An outbox row one owner holds until its lease runs out."""

    id: int
    tenant_id: str
    topic: str
    key: str
    # None for work owed to no lead (a one-off e-mail to a bare address).
    lead_id: str | None
    payload: dict[str, Any]
    generation: int
    attempts: int
    lease_owner: str


def claim(
    store: Store,
    topic: str,
    owner: str,
    *,
    limit: int,
    lease: timedelta,
    lead_id: str | None = None,
    now: datetime | None = None,
) -> list[Claim]:
    """Takes up to `limit` due rows of `topic` for `owner`, oldest first, any tenant.

    A row is due when it is `pending` and available, or `claimed` under a lease
    that has run out (its owner is taken to be dead, and the row returns to the
    queue). Each row taken becomes `claimed` by `owner` until `now + lease`, and
    its `attempts` goes up by one. This is system work across every tenant; each
    claim says which tenant its row belongs to.

    Concurrent claimers never share a row: on PostgreSQL each skips rows another
    is taking (`FOR UPDATE SKIP LOCKED`) instead of waiting for them; on SQLite
    the write transaction holds the database's write lock from its first
    statement.

    Args:
        store: the lead store.
        topic: the outbox topic to drain, e.g. `sequence_enrolment`.
        owner: who holds the claims, unique per claimer (a flow run id); a claim
            can only be settled by the owner that took it.
        limit: the most rows to take.
        lease: how long the claims last before another owner may take them.
        lead_id: take only this lead's rows (an on-demand run for one lead).
        now: the current time, aware; when not given, the database server's
            on PostgreSQL, the installed clock's elsewhere (`lease_time`).

    Returns:
        The claims taken, oldest row first; empty when nothing is due.

    Raises:
        ValueError: `limit` or `lease` is not positive, `owner` is empty or too
            long for the outbox, or `now` is naive.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if lease <= timedelta(0):
        raise ValueError(f"lease must be positive, got {lease}")
    if not 0 < len(owner) <= MAX_OWNER_LENGTH:
        raise ValueError(
            f"owner must be 1 to {MAX_OWNER_LENGTH} characters, got {len(owner)}"
        )
    if now is not None:
        now = _aware(now)

    def due(session: Session) -> Select[tuple[int]]:
        # Judged by the database server's clock where it can be, as the
        # lease is stamped (`lease_time`): workers' clocks never meet.
        moment = lease_time.now(session, now)
        query = select(OutboxItem.id).where(
            OutboxItem.topic == topic,
            or_(
                and_(OutboxItem.status == "pending", OutboxItem.available_at <= moment),
                and_(
                    OutboxItem.status == "claimed", OutboxItem.lease_expires_at < moment
                ),
            ),
        )
        if lead_id is not None:
            query = query.where(OutboxItem.lead_id == lead_id)
        return query

    # A draining run polls an empty outbox most of the time. Look first in a
    # read transaction: on SQLite the claim's write transaction would hold
    # the one write lock, and the API's intake would wait for it, at every poll.
    with store.read_across_tenants() as session:
        if session.scalar(due(session).limit(1)) is None:
            return []

    # Two statements rather than an UPDATE over a LIMIT subquery: the ids are
    # fixed, and locked until commit, before anything changes, whatever plan
    # the database picks. SQLite renders no FOR UPDATE; its write lock
    # already keeps others out.
    with store.write_across_tenants() as session:
        ids = list(
            session.scalars(
                due(session)
                .order_by(OutboxItem.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        if not ids:
            return []
        session.execute(
            update(OutboxItem)
            .where(OutboxItem.id.in_(ids))
            .values(
                status="claimed",
                lease_owner=owner,
                lease_expires_at=lease_time.after(session, lease, now),
                attempts=OutboxItem.attempts + 1,
            )
            .execution_options(synchronize_session=False)
        )
        rows = session.scalars(
            select(OutboxItem).where(OutboxItem.id.in_(ids)).order_by(OutboxItem.id)
        )
        return [
            Claim(
                id=row.id,
                tenant_id=row.tenant_id,
                topic=row.topic,
                key=row.key,
                lead_id=row.lead_id,
                payload=dict(row.payload),
                generation=row.generation,
                attempts=row.attempts,
                lease_owner=owner,
            )
            for row in rows
        ]


def complete(store: Store, held: Claim, now: datetime | None = None) -> bool:
    """Marks the claim's work done, unless the row changed while it was held.

    A row whose `generation` moved on during the claim (the lead changed while
    the work ran) goes back to `pending`, due at once, so the newer state is
    handled too. A claim whose lease another owner has taken changes nothing.

    Returns:
        True when the row is now `done`; False when it was made due again or
        the lease was lost.
    """
    return _finish(store, held, "done", None, now)


def release(
    store: Store,
    held: Claim,
    *,
    error: str,
    retry_at: datetime,
    count_attempt: bool = True,
) -> bool:
    """Returns the row to the queue after a failure that may pass, due at `retry_at`.

    Args:
        store: the lead store.
        held: the claim.
        error: why, kept on the row.
        retry_at: when the row is due again, aware.
        count_attempt: False when the row only had to wait (no CRM configured,
            the day's allowance spent): the claim's attempt is given back, so
            waiting never uses up the tries a real failure gets.

    Returns:
        True when the row was still this claim's and is now `pending`.
    """
    with store.write(held.tenant_id) as scope:
        return release_in(
            scope.session,
            held,
            error=error,
            retry_at=retry_at,
            count_attempt=count_attempt,
        )


def release_in(
    session: Session,
    held: Claim,
    *,
    error: str,
    retry_at: datetime,
    count_attempt: bool = True,
) -> bool:
    """`release` inside the caller's transaction (one of the claim's tenant)."""
    values: dict[str, Any] = {
        "status": "pending",
        "available_at": _aware(retry_at),
        "last_error": error,
    }
    if not count_attempt:
        values["attempts"] = max(0, held.attempts - 1)
    return _settle(session, held, None, **values)


def park(store: Store, held: Claim, *, reason: str) -> bool:
    """Sets the row aside as `parked` after a failure that retrying cannot fix.

    A parked row is never claimed again until someone makes it `pending`. A
    row whose lead changed while it was held (perhaps the very fix) goes back
    to `pending` instead, as in `complete`.

    Returns:
        True when the row was still this claim's and is now `parked`.
    """
    return _finish(store, held, "parked", reason, None)


def _finish(
    store: Store,
    held: Claim,
    status: str,
    last_error: str | None,
    now: datetime | None,
) -> bool:
    """Ends the claim as `status`; a row changed meanwhile is made due again."""
    with store.write(held.tenant_id) as scope:
        return finish_in(scope.session, held, status, last_error, now=now)


def finish_in(
    session: Session,
    held: Claim,
    status: str,
    last_error: str | None = None,
    *,
    now: datetime | None = None,
) -> bool:
    """Ends the claim as `done` or `parked` inside the caller's transaction.

    As `complete` and `park`: a row whose generation moved on while it was
    held goes back to `pending`, due at once.

    Returns:
        True when the row is now `status`; False when it was made due again or
        the lease was lost.
    """
    if _settle(session, held, "same", status=status, last_error=last_error):
        return True
    _settle(
        session,
        held,
        "moved",
        status="pending",
        # Due at once by the clock `claim` judges it with.
        available_at=lease_time.read(session, now and _aware(now)),
        attempts=0,
        last_error=last_error,
    )
    return False


def finish_all_in(
    session: Session,
    claims: list[Claim],
    status: str,
    *,
    now: datetime | None = None,
) -> set[int]:
    """`finish_in` for many claims of one owner, in two statements however many.

    Returns:
        The ids of the rows now `status`; the others were made due again (their
        lead changed while held) or are another owner's now.

    Raises:
        ValueError: the claims have different owners.
    """
    if not claims:
        return set()
    owners = {held.lease_owner for held in claims}
    if len(owners) != 1:
        raise ValueError(f"claims of one owner expected, got {sorted(owners)}")
    (owner,) = owners
    held_by_owner = (OutboxItem.status == "claimed", OutboxItem.lease_owner == owner)
    released = {"lease_owner": None, "lease_expires_at": None}
    finished = set(
        session.scalars(
            update(OutboxItem)
            .where(
                tuple_(OutboxItem.id, OutboxItem.generation).in_(
                    [(held.id, held.generation) for held in claims]
                ),
                *held_by_owner,
            )
            .values(status=status, last_error=None, **released)
            .returning(OutboxItem.id)
            .execution_options(synchronize_session=False)
        )
    )
    moved = [held.id for held in claims if held.id not in finished]
    if moved:
        session.execute(
            update(OutboxItem)
            .where(OutboxItem.id.in_(moved), *held_by_owner)
            .values(
                status="pending",
                available_at=lease_time.now(session, now and _aware(now)),
                attempts=0,
                last_error=None,
                **released,
            )
            .execution_options(synchronize_session=False)
        )
    return finished


def held_in(session: Session, claims: list[Claim]) -> set[int]:
    """The ids of the claims' rows their owners still hold, locked until commit.

    A claim missing from it was taken over by another owner once its lease ran
    out (and perhaps settled by it since): its result is that owner's to
    record. Locked (on PostgreSQL; SQLite's write lock does it there), so no
    one takes a row over between this check and the caller's settling it.
    """
    if not claims:
        return set()
    return set(
        session.scalars(
            select(OutboxItem.id)
            .where(
                tuple_(OutboxItem.id, OutboxItem.lease_owner).in_(
                    [(held.id, held.lease_owner) for held in claims]
                ),
                OutboxItem.status == "claimed",
            )
            .with_for_update()
        )
    )


def extend(
    store: Store, held: Claim, lease: timedelta, now: datetime | None = None
) -> bool:
    """Moves the claim's lease out to `now + lease`, for work that runs long.

    Returns:
        True when the row is still this claim's; False when the lease was lost.

    Raises:
        ValueError: `lease` is not positive or `now` is naive.
    """
    with store.write(held.tenant_id) as scope:
        return extend_in(scope.session, held, lease, now)


def extend_in(
    session: Session, held: Claim, lease: timedelta, now: datetime | None = None
) -> bool:
    """`extend` inside the caller's transaction (one of the claim's tenant)."""
    if lease <= timedelta(0):
        raise ValueError(f"lease must be positive, got {lease}")
    return _extend_held(session, held, lease, now)


def reschedule_in(session: Session, held: Claim, at: datetime) -> bool:
    """Hands the row back, due at `at`, as work that is on time rather than failed.

    For work done in steps (a sequence's next e-mail): the row waits for its
    next step with its attempts cleared and no error.

    Returns:
        True when the row was still this claim's and is now `pending`.
    """
    return _settle(
        session,
        held,
        None,
        status="pending",
        available_at=_aware(at),
        attempts=0,
        last_error=None,
    )


def extend_all(
    store: Store,
    tenant_id: str,
    claims: list[Claim],
    lease: timedelta,
    now: datetime | None = None,
) -> set[int]:
    """Moves every claim's lease out to `now + lease` in one transaction.

    Returns:
        The ids of the rows still held by their claims; a claim missing from
        it was taken over (its lease had run out) and must not be acted on.

    Raises:
        ValueError: `lease` is not positive or `now` is naive.
    """
    if lease <= timedelta(0):
        raise ValueError(f"lease must be positive, got {lease}")
    if now is not None:
        now = _aware(now)
    with store.write(tenant_id) as scope:
        return {
            held.id for held in claims if _extend_held(scope.session, held, lease, now)
        }


# Whether the row's generation must be the claim's (`same`), must have moved
# on (`moved`: the lead changed while held), or is not looked at (None).
Generation = Literal["same", "moved"] | None


def _settle(
    session: Session, held: Claim, generation: Generation, **values: Any
) -> bool:
    """Ends the claim with `values` if the row is still held by it."""
    values |= {"lease_owner": None, "lease_expires_at": None}
    return _update_held(session, held, values, generation)


def _extend_held(
    session: Session, held: Claim, lease: timedelta, now: datetime | None
) -> bool:
    """Moves the claim's lease out to `lease` from now, by `lease_time`'s clock."""
    if lease_time.on_server(session, now):
        return _update_held(session, held, {}, lease_from_server=lease)
    return _update_held(session, held, {"lease_expires_at": _aware(now) + lease})


def _update_held(
    session: Session,
    held: Claim,
    values: dict[str, Any],
    generation: Generation = None,
    lease_from_server: timedelta | None = None,
) -> bool:
    """Updates the claim's row if it is still held by the claim's owner.

    With `lease_from_server`, the lease also runs out that long after the
    database server's current time.
    """
    statement = _held_update(
        tuple(sorted(values)), generation, lease_from_server is not None
    )
    parameters = {f"new_{name}": value for name, value in values.items()}
    if lease_from_server is not None:
        parameters["lease_seconds"] = lease_from_server.total_seconds()
    updated = session.execute(
        statement,
        {
            "held_id": held.id,
            "held_tenant": held.tenant_id,
            "held_owner": held.lease_owner,
            "held_generation": held.generation,
            **parameters,
        },
    ).all()
    return bool(updated)


@lru_cache(maxsize=64)
def _held_update(
    columns: tuple[str, ...], generation: Generation, lease_from_server: bool
) -> Any:
    """The UPDATE of a held row setting `columns`, built once per shape.

    Built with bind parameters and kept: this runs for every claim a drain
    settles, and making the statement anew costs more than running it.
    """
    table = OutboxItem.__table__
    # An expired lease nobody has taken over is still this owner's: finishing
    # late is better than leaving finished work to be done twice.
    conditions = [
        table.c.id == bindparam("held_id"),
        table.c.tenant_id == bindparam("held_tenant"),
        table.c.status == "claimed",
        table.c.lease_owner == bindparam("held_owner"),
    ]
    if generation == "same":
        conditions.append(table.c.generation == bindparam("held_generation"))
    elif generation == "moved":
        conditions.append(table.c.generation != bindparam("held_generation"))
    assignments: dict[str, Any] = {name: bindparam(f"new_{name}") for name in columns}
    if lease_from_server:
        if "lease_expires_at" in assignments:
            raise ValueError("the lease is set from the server or given, not both")
        span = bindparam("lease_seconds", type_=Float())
        assignments["lease_expires_at"] = lease_time.server_after(span)
    return update(table).where(*conditions).values(assignments).returning(table.c.id)


def _aware(moment: datetime | None) -> datetime:
    if moment is None:
        return utcnow()
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r} given; pass aware UTC times")
    return moment
