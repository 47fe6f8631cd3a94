"""Webhook deliveries: kept once by delivery id, claimed for processing, listed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update

from leads.store import lease_time
from leads.store.database import Store, TenantScope
from leads.store.inserts import insert_if_absent
from leads.store.paging import decode_cursor, encode_cursor, invalid_cursor
from leads.store.tables import WebhookDelivery, utcnow

PENDING = "pending"
APPLIED = "applied"
STALE = "stale"
IGNORED = "ignored"
REJECTED = "rejected"
# Kept after processing failed unexpectedly again and again; retried on request.
FAILED = "failed"
STATUSES = (PENDING, APPLIED, STALE, IGNORED, REJECTED, FAILED)
MAX_UNEXPECTED = 5

# How long a processor holds a delivery before another may take it.
LEASE = timedelta(minutes=2)
# Waits after failed attempts (a locked database, a CRM that is down): the
# delivery is kept, so nothing is lost by waiting longer each time.
BACKOFF = (timedelta(seconds=10), timedelta(minutes=1), timedelta(minutes=5))


@dataclass(frozen=True)
class Stored:
    """A delivery as `keep` left it: new, or a redelivery of one already kept."""

    id: int
    delivery_id: str
    new: bool
    status: str


@dataclass(frozen=True)
class Claimed:
    """A delivery taken for processing (a plain copy, usable after its session)."""

    id: int
    tenant_id: str
    source: str
    delivery_id: str
    event_type: str | None
    subject: str | None
    body: bytes
    occurred_at: datetime
    attempts: int


def keep(
    scope: TenantScope,
    source: str,
    delivery_id: str,
    *,
    body: bytes,
    occurred_at: datetime,
    event_type: str | None = None,
    subject: str | None = None,
    signature_digest: str | None = None,
) -> Stored:
    """Stores a delivery under its unique id, or counts a redelivery of it.

    The insert is `ON CONFLICT DO NOTHING`, so two copies arriving at once
    store one row: the claim is atomic, never read-then-write. A delivery
    whose signature was seen before is a redelivery too, whatever its id.
    """
    now = utcnow()
    new_id = insert_if_absent(
        scope,
        WebhookDelivery,
        {
            "source": source,
            "delivery_id": delivery_id,
            "signature_digest": signature_digest,
            "event_type": event_type,
            "subject": subject,
            "body": body,
            "occurred_at": occurred_at,
            "received_at": now,
            "last_received_at": now,
            "receipts": 1,
            "status": PENDING,
            "reasons": [],
            "attempts": 0,
            "next_attempt_at": now,
        },
    )
    if new_id is not None:
        return Stored(new_id, delivery_id, True, PENDING)
    table = WebhookDelivery.__table__
    same = table.c.delivery_id == delivery_id
    if signature_digest is not None:
        same = or_(same, table.c.signature_digest == signature_digest)
    row = scope.session.execute(
        update(table)
        .where(table.c.tenant_id == scope.tenant_id, table.c.source == source, same)
        .values(receipts=table.c.receipts + 1, last_received_at=now)
        .returning(table.c.id, table.c.delivery_id, table.c.status)
    ).first()
    return Stored(row.id, row.delivery_id, False, row.status)


def claim(
    scope: TenantScope, delivery_pk: int, now: datetime | None = None
) -> Claimed | None:
    """Takes a pending delivery for `LEASE`, or None if it is done or held.

    The lease is stamped and judged by the database server's clock where it
    can be (`lease_time`), unless `now` is given.
    """
    table, session = WebhookDelivery.__table__, scope.session
    expired = table.c.claimed_until < lease_time.now(session, now)
    row = session.execute(
        update(table)
        .where(
            table.c.id == delivery_pk,
            table.c.tenant_id == scope.tenant_id,
            table.c.status == PENDING,
            or_(table.c.claimed_until.is_(None), expired),
        )
        .values(
            claimed_until=lease_time.after(session, LEASE, now),
            attempts=table.c.attempts + 1,
        )
        .returning(*table.columns)
    ).one_or_none()
    if row is None:
        return None
    return Claimed(
        id=row.id,
        tenant_id=row.tenant_id,
        source=row.source,
        delivery_id=row.delivery_id,
        event_type=row.event_type,
        subject=row.subject,
        body=row.body,
        occurred_at=row.occurred_at,
        attempts=row.attempts,
    )


def still_claimed(scope: TenantScope, delivery: Claimed) -> bool:
    """Locks the delivery and says whether it is still this processor's claim.

    A processor that outlived its lease may find the delivery claimed again
    (`attempts` moved on) or settled by another; it must then write nothing.
    The row stays locked (PostgreSQL) until the transaction ends, so no other
    processor settles it meanwhile.
    """
    query = (
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.id == delivery.id,
            WebhookDelivery.tenant_id == scope.tenant_id,
            WebhookDelivery.status == PENDING,
            WebhookDelivery.attempts == delivery.attempts,
        )
        .with_for_update()
    )
    return scope.session.scalar(query) is not None


def settle(
    scope: TenantScope,
    delivery: Claimed,
    status: str,
    *,
    lead_id: str | None = None,
    reasons: list[dict[str, str]] | None = None,
    flow_run_id: str | None = None,
) -> None:
    """Records how a claimed delivery ended; it is not processed again."""
    _set_claimed(
        scope,
        delivery,
        status=status,
        lead_id=lead_id,
        reasons=reasons or [],
        processed_at=utcnow(),
        claimed_until=None,
        last_error=None,
        flow_run_id=flow_run_id,
    )


def retry_later(scope: TenantScope, delivery: Claimed, error: str) -> None:
    """Leaves a claimed delivery pending, due again after a growing wait."""
    wait = BACKOFF[min(max(delivery.attempts, 1), len(BACKOFF)) - 1]
    _set_claimed(
        scope,
        delivery,
        claimed_until=None,
        next_attempt_at=utcnow() + wait,
        last_error=error[:2000],
    )


def _set_claimed(scope: TenantScope, delivery: Claimed, **values: Any) -> None:
    """Updates the delivery only while it is still this claim (same attempt)."""
    scope.session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery.id,
            WebhookDelivery.tenant_id == scope.tenant_id,
            WebhookDelivery.status == PENDING,
            WebhookDelivery.attempts == delivery.attempts,
        )
        .values(**values)
    )


def reopen(scope: TenantScope, delivery_pk: int) -> bool:
    """Puts a rejected, ignored or failed delivery back to pending (after a fix)."""
    result = scope.session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_pk,
            WebhookDelivery.tenant_id == scope.tenant_id,
            WebhookDelivery.status.in_((REJECTED, IGNORED, FAILED)),
        )
        .values(status=PENDING, next_attempt_at=utcnow(), reasons=[])
    )
    return result.rowcount == 1


def newest_applied(
    scope: TenantScope, lead_id: str, subject: str | None
) -> datetime | None:
    """When the newest event applied to the lead (about `subject`) happened."""
    same_subject = (
        WebhookDelivery.subject.is_(None)
        if subject is None
        else WebhookDelivery.subject == subject
    )
    return scope.session.scalar(
        select(func.max(WebhookDelivery.occurred_at)).where(
            WebhookDelivery.tenant_id == scope.tenant_id,
            WebhookDelivery.lead_id == lead_id,
            WebhookDelivery.status == APPLIED,
            same_subject,
        )
    )


def due(store: Store, limit: int, now: datetime | None = None) -> list[tuple[str, int]]:
    """(tenant, id) of deliveries waiting to be processed, oldest first, all tenants.

    Judged by the clock `claim` stamps leases with, unless `now` is given.
    """
    with store.engine.connect() as connection:
        moment = lease_time.now(connection, now)
        query = (
            select(WebhookDelivery.tenant_id, WebhookDelivery.id)
            .where(
                WebhookDelivery.status == PENDING,
                WebhookDelivery.next_attempt_at <= moment,
                or_(
                    WebhookDelivery.claimed_until.is_(None),
                    WebhookDelivery.claimed_until < moment,
                ),
            )
            .order_by(WebhookDelivery.id)
            .limit(limit)
        )
        return [(row.tenant_id, row.id) for row in connection.execute(query)]


def get(scope: TenantScope, delivery_pk: int) -> WebhookDelivery | None:
    """The tenant's delivery by its row id."""
    return scope.session.scalar(
        scope.select(WebhookDelivery).where(WebhookDelivery.id == delivery_pk)
    )


def page(
    scope: TenantScope,
    *,
    statuses: Iterable[str] = (),
    source: str | None = None,
    limit: int,
    cursor: str | None,
) -> tuple[list[WebhookDelivery], str | None]:
    """One page of deliveries, newest first, and the cursor of the next."""
    query: Any = scope.select(WebhookDelivery)
    statuses = list(statuses)
    if statuses:
        query = query.where(WebhookDelivery.status.in_(statuses))
    if source is not None:
        query = query.where(WebhookDelivery.source == source)
    if cursor is not None:
        (before,) = decode_cursor(cursor, 1)
        if type(before) is not int or not 0 < before < 2**63:
            raise invalid_cursor()
        query = query.where(WebhookDelivery.id < before)
    rows = list(
        scope.session.scalars(
            query.order_by(WebhookDelivery.id.desc()).limit(limit + 1)
        )
    )
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], encode_cursor([rows[limit - 1].id])
