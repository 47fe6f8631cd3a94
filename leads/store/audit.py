"""The audit log: every mutating call and automated decision, appended only.

Writers add their record inside the transaction that makes the change, so a
change and its record are committed together or not at all. Records carry
ids, counts and reason codes, never personal data: they outlive erasure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import insert
from sqlalchemy.orm import Session

from leads.flow_run import current_flow_run_id
from leads.store.database import TenantScope
from leads.store.paging import decode_cursor, encode_cursor, invalid_cursor
from leads.store.tables import AuditEvent, utcnow

# Leads a batch intake merges are appended one INSERT each (they are stored
# one by one too), not with `append_decisions`.
SYSTEM = "system"
Kind = Literal["request", "decision"]
# Who the work in progress acts for: set around an API call, read when its
# key is known (the key is checked inside the call, after this is set).
_acting_key: ContextVar[Callable[[], str | None] | None] = ContextVar(
    "audit_acting_key", default=None
)


@contextmanager
def acting_for(key_of: Callable[[], str | None]) -> Iterator[None]:
    """Decisions appended inside the block name the key `key_of()` returns.

    `key_of` is asked at each append, so it may learn the key after the block
    begins; while it returns None, decisions are the system's. A context
    variable, so only this thread or task, and what it starts, sees it.
    """
    token = _acting_key.set(key_of)
    try:
        yield
    finally:
        _acting_key.reset(token)


# Inserted through the table, not the entity: an ORM statement would flush
# the session's pending rows first, reordering the caller's writes.
_TABLE = AuditEvent.__table__


def current_actor() -> str:
    """The key the current work acts for, or `system` outside any API call."""
    key_of = _acting_key.get()
    key_id = key_of() if key_of is not None else None
    return key_id or SYSTEM


def append_decision(
    session: Session,
    tenant_id: str,
    action: str,
    target_type: str,
    target_id: str,
    detail: dict[str, Any] | None = None,
    *,
    actor: str | None = None,
) -> None:
    """Records what the product decided about one object, such as `lead.merged`.

    `actor` is the key that asked for it (an erasure); when not given, the
    key of the API call this runs in (`acting_for`), else `system`. The flow
    run, when inside one, is recorded with it.
    """
    session.execute(
        insert(_TABLE).values(
            tenant_id=tenant_id,
            at=utcnow(),
            actor=actor or current_actor(),
            kind="decision",
            action=action,
            target_type=target_type,
            target_id=target_id,
            flow_run_id=current_flow_run_id(),
            detail=detail or {},
        )
    )


def append_decisions(
    session: Session,
    tenant_id: str,
    action: str,
    target_type: str,
    details: Mapping[str, dict[str, Any] | None],
    *,
    actor: str | None = None,
    flow_run_id: str | None = None,
) -> None:
    """Records one decision about many objects, in one INSERT per thousand.

    For batch writers (a CRM sync settling hundreds of leads): `details`
    maps each target's id to its detail. Nothing is written when it is empty.

    Args:
        session: the open transaction making the change.
        tenant_id: the tenant of every target.
        action: the decision, e.g. `crm.parked`.
        target_type: what the ids are, e.g. `lead`.
        details: target id → ids and reason codes of that target's record.
        actor: as for `append_decision`.
        flow_run_id: the run deciding; the current flow run when not given.
    """
    if not details:
        return
    now = utcnow()
    common = {
        "tenant_id": tenant_id,
        "at": now,
        "actor": actor or current_actor(),
        "kind": "decision",
        "action": action,
        "target_type": target_type,
        "status": None,
        "flow_run_id": flow_run_id or current_flow_run_id(),
    }
    rows = [
        common | {"target_id": target_id, "detail": detail or {}}
        for target_id, detail in details.items()
    ]
    _insert_rows(session, rows)


def _insert_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    # An executemany of one compiled statement: SQLAlchemy sends it as
    # multi-row VALUES batches, and compiles it once per process, where a
    # `.values(rows)` list would be compiled again for every call.
    if rows:
        session.execute(insert(_TABLE), rows)


@dataclass(frozen=True)
class CallRecord:
    """One mutating API call to record: the key, the route template, the answer."""

    tenant_id: str
    key_id: str
    action: str
    status: int
    target_type: str | None = None
    target_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    # When it was answered; None: when it is appended. A record kept aside
    # while the store was away (`api.audit_spool`) keeps its own time.
    at: datetime | None = None


def append_requests(session: Session, calls: Sequence[CallRecord]) -> None:
    """Records mutating API calls, in one executemany."""
    now = utcnow()
    rows = [
        {
            "tenant_id": call.tenant_id,
            "at": call.at or now,
            "actor": call.key_id,
            "kind": "request",
            "action": call.action,
            "target_type": call.target_type,
            "target_id": call.target_id,
            "status": call.status,
            "flow_run_id": None,
            "detail": call.detail,
        }
        for call in calls
    ]
    _insert_rows(session, rows)


@dataclass(frozen=True)
class AuditFilter:
    """Which records a listing shows; None matches any. Times are aware UTC."""

    kind: Kind | None = None
    action: str | None = None
    actor: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def page(
    scope: TenantScope, filters: AuditFilter, limit: int, cursor: str | None
) -> tuple[list[AuditEvent], str | None]:
    """One page of the tenant's records, newest first, and the next page's cursor.

    Newest by id: records are numbered as they are appended. `since` is
    inclusive and `until` exclusive.

    Raises:
        LeadRejected: the cursor was not one this listing handed out.
    """
    query = scope.select(AuditEvent)
    for column, wanted in (
        (AuditEvent.kind, filters.kind),
        (AuditEvent.action, filters.action),
        (AuditEvent.actor, filters.actor),
        (AuditEvent.target_type, filters.target_type),
        (AuditEvent.target_id, filters.target_id),
    ):
        if wanted is not None:
            query = query.where(column == wanted)
    if filters.since is not None:
        query = query.where(AuditEvent.at >= filters.since)
    if filters.until is not None:
        query = query.where(AuditEvent.at < filters.until)
    if cursor is not None:
        (before_id,) = decode_cursor(cursor, 1)
        # bool is an int to Python; ids are 64-bit on PostgreSQL.
        if type(before_id) is not int or not 0 < before_id < 2**63:
            raise invalid_cursor()
        query = query.where(AuditEvent.id < before_id)
    query = query.order_by(AuditEvent.id.desc()).limit(limit + 1)
    rows = list(scope.session.scalars(query))
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], encode_cursor([rows[limit - 1].id])
