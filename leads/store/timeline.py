"""A lead's timeline: appending events and reading them oldest first."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert

from leads.store.database import TenantScope
from leads.store.paging import page_by_id
from leads.store.tables import Lead, TimelineEvent, utcnow

# Built once: the parameters come with each execution.
_APPEND = insert(TimelineEvent.__table__)


def record(
    scope: TenantScope,
    lead: Lead | str,
    kind: str,
    *,
    source: str | None = None,
    detail: dict[str, Any] | None = None,
    flow_run_id: str | None = None,
) -> TimelineEvent:
    """Adds an event to the lead's timeline in the current transaction.

    `lead` is the lead or its id (a sender recording a step need not load it).
    """
    event = TimelineEvent(
        lead_id=lead if isinstance(lead, str) else lead.id,
        kind=kind,
        source=source,
        detail=detail or {},
        flow_run_id=flow_run_id,
    )
    scope.add(event)
    return event


def append(
    scope: TenantScope,
    lead_id: str,
    kind: str,
    *,
    source: str | None = None,
    detail: dict[str, Any] | None = None,
    flow_run_id: str | None = None,
) -> None:
    """`record` as one INSERT at once, for a lead already stored.

    For senders recording an event per message, where the ORM's unit of work
    costs more than the statement. Unlike `record`, the row is written now,
    so the lead must be in the database already (not only in the session).
    """
    scope.session.execute(
        _APPEND,
        {
            "tenant_id": scope.tenant_id,
            "lead_id": lead_id,
            "occurred_at": utcnow(),
            "kind": kind,
            "source": source,
            "detail": detail or {},
            "flow_run_id": flow_run_id,
        },
    )


def page(
    scope: TenantScope, lead_id: str, limit: int, cursor: str | None
) -> tuple[list[TimelineEvent], str | None]:
    """One page of a lead's events, oldest first, and the cursor of the next."""
    query = scope.select(TimelineEvent).where(TimelineEvent.lead_id == lead_id)
    return page_by_id(scope, query, TimelineEvent.id, limit, cursor)
