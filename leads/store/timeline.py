"""A lead's timeline: appending events and reading them oldest first.

Every event names the flow run that wrote it: the one given, else the one
current (`leads.flow_run.within_flow_run`), else none (an API request).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert

from leads.flow_run import current_flow_run_id
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
        flow_run_id=flow_run_id or current_flow_run_id(),
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
    append_all(
        scope,
        [
            event_row(
                scope,
                lead_id,
                kind,
                source=source,
                detail=detail,
                flow_run_id=flow_run_id,
            )
        ],
    )


def event_row(
    scope: TenantScope,
    lead_id: str,
    kind: str,
    *,
    source: str | None = None,
    detail: dict[str, Any] | None = None,
    flow_run_id: str | None = None,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """One event as `append_all` takes it; the flow run as `record` finds it."""
    return {
        "tenant_id": scope.tenant_id,
        "lead_id": lead_id,
        "occurred_at": occurred_at or utcnow(),
        "kind": kind,
        "source": source,
        "detail": detail or {},
        "flow_run_id": flow_run_id or current_flow_run_id(),
    }


def append_all(scope: TenantScope, rows: Sequence[dict[str, Any]]) -> None:
    """Writes events made by `event_row` now, in one statement however many.

    For writers recording an event for each lead of a batch (a CRM sync, an
    import chunk): one executemany, in the list's order.
    """
    if rows:
        scope.session.execute(_APPEND, list(rows))


def page(
    scope: TenantScope, lead_id: str, limit: int, cursor: str | None
) -> tuple[list[TimelineEvent], str | None]:
    """One page of a lead's events, oldest first, and the cursor of the next."""
    query = scope.select(TimelineEvent).where(TimelineEvent.lead_id == lead_id)
    return page_by_id(scope, query, TimelineEvent.id, limit, cursor)
