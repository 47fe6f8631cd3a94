"""A lead's timeline: appending events and reading them oldest first."""

from __future__ import annotations

from typing import Any

from leads.store.database import TenantScope
from leads.store.paging import page_by_id
from leads.store.tables import Lead, TimelineEvent


def record(
    scope: TenantScope,
    lead: Lead,
    kind: str,
    *,
    source: str | None = None,
    detail: dict[str, Any] | None = None,
    flow_run_id: str | None = None,
) -> TimelineEvent:
    """Adds an event to the lead's timeline in the current transaction."""
    event = TimelineEvent(
        lead_id=lead.id,
        kind=kind,
        source=source,
        detail=detail or {},
        flow_run_id=flow_run_id,
    )
    scope.add(event)
    return event


def page(
    scope: TenantScope, lead_id: str, limit: int, cursor: str | None
) -> tuple[list[TimelineEvent], str | None]:
    """One page of a lead's events, oldest first, and the cursor of the next."""
    query = scope.select(TimelineEvent).where(TimelineEvent.lead_id == lead_id)
    return page_by_id(scope, query, TimelineEvent.id, limit, cursor)
