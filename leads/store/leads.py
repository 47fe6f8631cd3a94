"""Reading leads: by id, by e-mail key, and filtered pages newest first."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Select, and_, bindparam, func, or_, select

from leads.errors import LeadNotFound
from leads.matching import mailbox_key
from leads.store.database import TenantScope
from leads.store.paging import decode_cursor, encode_cursor, invalid_cursor
from leads.store.tables import Lead


def is_lead_id(value: object) -> bool:
    """Whether `value` has the shape of a lead id (a UUID in text)."""
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def get_lead(scope: TenantScope, lead_id: str, *, lock: bool = False) -> Lead:
    """The tenant's lead with this id.

    Raises:
        LeadNotFound: no such lead here (also for text that is no lead id at all).
    """
    lead = scope.get(Lead, lead_id, lock=lock) if is_lead_id(lead_id) else None
    if lead is None:
        raise LeadNotFound(lead_id)
    return lead


def find_by_email(scope: TenantScope, email: str, *, lock: bool = False) -> Lead | None:
    """The lead whose normalised e-mail key is `email`.

    With `lock`, the row stays locked until the transaction ends (FOR UPDATE on
    PostgreSQL; SQLite's write transactions are serialised already), so two
    concurrent updates of one lead merge instead of one overwriting the other.
    """
    query = scope.select(Lead).where(Lead.email == email)
    if lock:
        query = query.with_for_update()
    return scope.session.scalars(query).one_or_none()


# Keys per `IN (…)` list: well inside SQLite's and psycopg's parameter limits.
IN_LIST_SIZE = 500


def stored_addresses(
    scope: TenantScope, emails: Iterable[str | None]
) -> tuple[set[str], set[str]]:
    """Which of these e-mail keys, and which of their mailbox keys, the tenant's
    leads hold.

    The leads holding one of the addresses (those the caller updates) are
    locked until the transaction ends, in e-mail order (FOR UPDATE on
    PostgreSQL; SQLite serialises writers already); those holding only a
    mailbox are not.

    Returns:
        The e-mail keys found, and the mailbox keys found.
    """
    wanted = sorted({email for email in emails if email})
    boxes = sorted({box for email in wanted if (box := mailbox_key(email))})
    # Leads added in this transaction count too (an ORM query would flush).
    scope.session.flush()
    return (
        _found(scope, _STORED_EMAILS, wanted),
        _found(scope, _STORED_MAILBOXES, boxes),
    )


def _found(
    scope: TenantScope, statement: Select[tuple[str]], keys: list[str]
) -> set[str]:
    found: set[str] = set()
    connection = scope.session.connection()
    for start in range(0, len(keys), IN_LIST_SIZE):
        part = keys[start : start + IN_LIST_SIZE]
        found.update(
            connection.execute(
                statement, {"tenant_id": scope.tenant_id, "keys": part}
            ).scalars()
        )
    return found


_LEADS = Lead.__table__
# Core columns, built once: they run for every intake, and an ORM statement
# costs more to run.
_STORED_EMAILS = (
    select(_LEADS.c.email)
    .where(
        _LEADS.c.tenant_id == bindparam("tenant_id"),
        _LEADS.c.email.in_(bindparam("keys", expanding=True)),
    )
    .order_by(_LEADS.c.email)
    .with_for_update()
)
_STORED_MAILBOXES = select(_LEADS.c.mailbox_key).where(
    _LEADS.c.tenant_id == bindparam("tenant_id"),
    _LEADS.c.mailbox_key.in_(bindparam("keys", expanding=True)),
)


@dataclass(frozen=True)
class LeadFilter:
    email: str | None = None
    status: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True)
class Page:
    rows: list[Lead]
    next_cursor: str | None


def page(
    scope: TenantScope, filters: LeadFilter, limit: int, cursor: str | None
) -> Page:
    """One page of leads, newest first, after the position `cursor` marks."""
    query = scope.select(Lead)
    if filters.email is not None:
        query = query.where(Lead.email == filters.email)
    if filters.status is not None:
        query = query.where(Lead.status == filters.status)
    if filters.created_after is not None:
        query = query.where(Lead.created_at > filters.created_after)
    if filters.created_before is not None:
        query = query.where(Lead.created_at < filters.created_before)
    if cursor is not None:
        created_iso, last_id = decode_cursor(cursor, 2)
        try:
            created = datetime.fromisoformat(created_iso).astimezone(UTC)
        except (TypeError, ValueError, OverflowError) as exc:
            raise invalid_cursor() from exc
        if not is_lead_id(last_id):
            raise invalid_cursor()
        query = query.where(
            or_(
                Lead.created_at < created,
                and_(Lead.created_at == created, Lead.id < last_id),
            )
        )
    query = query.order_by(Lead.created_at.desc(), Lead.id.desc()).limit(limit + 1)
    rows = list(scope.session.scalars(query))
    if len(rows) <= limit:
        return Page(rows, None)
    last = rows[limit - 1]
    return Page(rows[:limit], encode_cursor([last.created_at.isoformat(), last.id]))


def count_by_status(scope: TenantScope) -> dict[str, int]:
    """How many leads the tenant has in each status."""
    query = (
        select(Lead.status, func.count())
        .where(Lead.tenant_id == scope.tenant_id)
        .group_by(Lead.status)
    )
    return {status: count for status, count in scope.session.execute(query)}
