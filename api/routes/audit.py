"""The audit log: the tenant's mutating calls and automated decisions, for admins."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from api.auth import KEYED
from api.deps import AdminDep, StoreDep, as_utc
from leads.errors import FieldError, LeadRejected
from leads.store import audit

router = APIRouter(prefix="/api/audit", tags=["audit"], dependencies=KEYED)


class AuditEventView(BaseModel):
    """One record: a mutating call (`request`) or a decision (`decision`)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    actor: str = Field(
        description="The API key's id (for a refused call, the key it named), "
        "or `system` for work no key asked for."
    )
    kind: audit.Kind
    action: str = Field(
        description="The route template of a call (`PUT /api/leads/{lead_id}`), "
        "or the decision (`lead.merged`, `crm.parked`, `email.suppressed`, …)."
    )
    target_type: str | None = Field(description="`lead`, `review`, `import`, …")
    target_id: str | None
    status: int | None = Field(description="The answer's status, for a call.")
    flow_run_id: str | None = Field(description="The flow run that decided, if any.")
    detail: dict[str, Any] = Field(description="Ids, counts and reason codes only.")


class AuditPage(BaseModel):
    data: list[AuditEventView]
    next_cursor: str | None


When = Annotated[datetime | None, Query(description="ISO 8601; without a zone, UTC.")]


@router.get("", response_model=AuditPage, responses={403: {}})
def list_audit_events(
    store: StoreDep,
    context: AdminDep,
    kind: audit.Kind | None = None,
    action: Annotated[
        str | None,
        Query(max_length=128, description="Exactly, e.g. `POST /api/leads`."),
    ] = None,
    actor: Annotated[
        str | None, Query(max_length=64, description="A key's id, or `system`.")
    ] = None,
    target_type: Annotated[str | None, Query(max_length=32)] = None,
    target_id: Annotated[str | None, Query(max_length=64)] = None,
    since: When = None,
    until: When = None,
    limit: Annotated[
        int, Query(ge=1, le=500, description="Most records on one page.")
    ] = 50,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the last page.")
    ] = None,
) -> AuditPage:
    """Lists the tenant's audit records newest first, filtered (admin keys only)."""
    filters = audit.AuditFilter(
        kind=kind,
        action=action,
        actor=actor,
        target_type=target_type,
        target_id=target_id,
        since=as_utc("since", since),
        until=as_utc("until", until),
    )
    if filters.since and filters.until and filters.until < filters.since:
        raise LeadRejected(
            [FieldError("until", "before_since", "must not be before `since`")]
        )
    with store.read(context.tenant_id) as scope:
        rows, next_cursor = audit.page(scope, filters, limit, cursor)
        return AuditPage(
            data=[AuditEventView.model_validate(row) for row in rows],
            next_cursor=next_cursor,
        )
