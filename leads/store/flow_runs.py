"""Which flow runs touched a lead, from the run ids stored beside its rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from leads.store.database import TenantScope
from leads.store.paging import decode_cursor, encode_cursor, invalid_cursor
from leads.store.tables import EmailSend, LeadImport, SequenceStep, TimelineEvent

# Intake records an imported record's origin as `import:<import id>#<record>`.
IMPORT_REFERENCE = "import:"


@dataclass
class LeadRun:
    """One flow run that touched the lead, as far as the lead store knows."""

    flow_run_id: str
    first_touched_at: datetime
    last_touched_at: datetime
    # The kinds of timeline events it recorded for the lead, first recorded first.
    event_kinds: list[str] = field(default_factory=list)

    def touched(self, at: datetime) -> None:
        self.first_touched_at = min(self.first_touched_at, at)
        self.last_touched_at = max(self.last_touched_at, at)


def runs_of_lead(
    scope: TenantScope, lead_id: str, limit: int, cursor: str | None
) -> tuple[list[LeadRun], str | None]:
    """One page of the runs that touched the lead, and the cursor of the next.

    Newest first, by when each run first touched the lead: that moment does not
    move once recorded, so pages stay stable while runs go on. A run counts
    when the lead's timeline, sequence steps or one-off e-mails carry its id,
    or when it ran the import the lead came in through.

    Raises:
        LeadRejected: the cursor is not one this list returned.
    """
    runs: dict[str, LeadRun] = {}
    kinds: list[tuple[datetime, int, str, str]] = []

    def touch(run_id: str, first: datetime, last: datetime) -> None:
        run = runs.get(run_id)
        if run is None:
            runs[run_id] = LeadRun(run_id, first, last)
        else:
            run.touched(first)
            run.touched(last)

    for run_id, kind, first, last, first_id in _timeline_runs(scope, lead_id):
        touch(run_id, first, last)
        kinds.append((first, first_id, run_id, kind))
    for run_id, first, last in _sending_runs(scope, lead_id):
        touch(run_id, first, last)
    for run_id, kind, at, event_id in _import_runs(scope, lead_id):
        touch(run_id, at, at)
        kinds.append((at, event_id, run_id, kind))

    for _, _, run_id, kind in sorted(kinds):
        if kind not in runs[run_id].event_kinds:
            runs[run_id].event_kinds.append(kind)

    ordered = sorted(
        runs.values(),
        key=lambda run: (run.first_touched_at, run.flow_run_id),
        reverse=True,
    )
    if cursor is not None:
        after = _position(cursor)
        ordered = [r for r in ordered if (r.first_touched_at, r.flow_run_id) < after]
    if len(ordered) <= limit:
        return ordered, None
    last = ordered[limit - 1]
    return ordered[:limit], encode_cursor(
        [last.first_touched_at.isoformat(), last.flow_run_id]
    )


def _position(cursor: str) -> tuple[datetime, str]:
    moment, run_id = decode_cursor(cursor, 2)
    if not isinstance(moment, str) or not isinstance(run_id, str):
        raise invalid_cursor()
    try:
        at = datetime.fromisoformat(moment)
    except ValueError as exc:
        raise invalid_cursor() from exc
    if at.tzinfo is None:
        raise invalid_cursor()
    return at, run_id


def _timeline_runs(
    scope: TenantScope, lead_id: str
) -> list[tuple[str, str, datetime, datetime, int]]:
    """(run, kind, first and last time, first event id) for each kind a run recorded."""
    query = (
        select(
            TimelineEvent.flow_run_id,
            TimelineEvent.kind,
            func.min(TimelineEvent.occurred_at),
            func.max(TimelineEvent.occurred_at),
            func.min(TimelineEvent.id),
        )
        .where(
            TimelineEvent.tenant_id == scope.tenant_id,
            TimelineEvent.lead_id == lead_id,
            TimelineEvent.flow_run_id.is_not(None),
        )
        .group_by(TimelineEvent.flow_run_id, TimelineEvent.kind)
    )
    return [tuple(row) for row in scope.session.execute(query)]  # type: ignore[misc]


def _sending_runs(
    scope: TenantScope, lead_id: str
) -> list[tuple[str, datetime, datetime]]:
    """(run, first and last time) for each run that worked on the lead's e-mail."""
    found: list[tuple[str, datetime, datetime]] = []
    for table in (SequenceStep, EmailSend):
        moment = func.coalesce(table.sent_at, table.updated_at)
        query = (
            select(table.flow_run_id, func.min(moment), func.max(moment))
            .where(
                table.tenant_id == scope.tenant_id,
                table.lead_id == lead_id,
                table.flow_run_id.is_not(None),
            )
            .group_by(table.flow_run_id)
        )
        found.extend(tuple(row) for row in scope.session.execute(query))  # type: ignore[misc]
    return found


def _import_runs(
    scope: TenantScope, lead_id: str
) -> list[tuple[str, str, datetime, int]]:
    """(run, kind, time, event id) for each timeline event an import wrote.

    Those events name the import, whose row holds the run that imported it (the
    latest, when an interrupted import was resumed by another run).
    """
    events = scope.session.execute(
        select(
            TimelineEvent.id,
            TimelineEvent.kind,
            TimelineEvent.occurred_at,
            TimelineEvent.detail,
        ).where(
            TimelineEvent.tenant_id == scope.tenant_id,
            TimelineEvent.lead_id == lead_id,
            TimelineEvent.source == "import",
        )
    ).all()
    by_import: dict[str, list[Any]] = {}
    for event in events:
        import_id = _import_of(event.detail)
        if import_id is not None:
            by_import.setdefault(import_id, []).append(event)
    if not by_import:
        return []

    run_of = dict(
        scope.session.execute(
            select(LeadImport.id, LeadImport.flow_run_id).where(
                LeadImport.tenant_id == scope.tenant_id,
                LeadImport.id.in_(by_import),
                LeadImport.flow_run_id.is_not(None),
            )
        ).all()
    )
    return [
        (run_of[import_id], event.kind, event.occurred_at, event.id)
        for import_id, found in by_import.items()
        if import_id in run_of
        for event in found
    ]


def _import_of(detail: dict[str, Any] | None) -> str | None:
    reference = (detail or {}).get("reference")
    if not isinstance(reference, str) or not reference.startswith(IMPORT_REFERENCE):
        return None
    import_id, _, _ = reference.removeprefix(IMPORT_REFERENCE).partition("#")
    return import_id or None
