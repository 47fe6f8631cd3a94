"""The outbox: work owed to a lead, written in the same transaction as the lead."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from leads.store.database import TenantScope
from leads.store.tables import Lead, OutboxItem, utcnow

CRM_SYNC = "crm_sync"
SEQUENCE_ENROLMENT = "sequence_enrolment"
TOPICS = (CRM_SYNC, SEQUENCE_ENROLMENT)
# The Prefect event that says rows are waiting (the API's coalesced signal, an
# import's chunks), and the resource the drains' triggers match it on.
PENDING_EVENT = "leads.pending"
PENDING_RESOURCE = "orchestrator.leads"
# The drain deployments that event starts, each present (`leads.store.presence`)
# under its name while it polls every lead's rows.
CRM_SYNC_DRAIN = "crm_sync"
DISPATCHER_DRAIN = "sequence_dispatcher"
PENDING_DRAINS = (CRM_SYNC_DRAIN, DISPATCHER_DRAIN)


def enqueue(
    scope: TenantScope,
    topic: str,
    lead: Lead,
    *,
    key: str | None = None,
    payload: dict[str, Any] | None = None,
    requeue: bool = True,
    new: bool = False,
) -> OutboxItem:
    """Owes `lead` one piece of `topic` work, at most one row per (topic, key).

    With `requeue`, an existing row is made due again and its generation bumped
    (a drain holding an older generation leaves it pending when it finishes);
    without, an existing row is left as it is (enrol once, never twice). With
    `new` (a lead created in this transaction, whose keys no row can hold yet)
    the row is added without looking for one.
    """
    key = key or lead.id
    row = (
        None
        if new
        else scope.session.scalars(
            scope.select(OutboxItem).where(
                OutboxItem.topic == topic, OutboxItem.key == key
            )
        ).one_or_none()
    )
    if row is None:
        row = OutboxItem(topic=topic, key=key, lead_id=lead.id, payload=payload or {})
        scope.add(row)
        return row
    if requeue:
        row.generation += 1
        if row.status != "claimed":
            row.status = "pending"
            row.attempts = 0
            row.available_at = utcnow()
            row.last_error = None
    return row


def enrol(
    scope: TenantScope, lead: Lead, sequence: str, *, new: bool = False
) -> OutboxItem:
    """Owes the lead its `sequence`, once: an existing enrolment is left as it is.

    The enrolment keeps when it began (delays count from it) and the lead's
    CRM lifecycle stage then (the `lifecycle_stage_changed` stop condition
    compares with it). `new` as for `enqueue`: a lead created in this
    transaction.
    """
    return enqueue(
        scope,
        SEQUENCE_ENROLMENT,
        lead,
        key=enrolment_key(lead.id, sequence),
        payload=enrolment_payload(lead, sequence),
        requeue=False,
        new=new,
    )


def enrolment_key(lead_id: str, sequence: str) -> str:
    """The outbox key of a lead's enrolment in a sequence."""
    return f"{lead_id}:{sequence}"


def enrolment_payload(lead: Lead, sequence: str) -> dict[str, Any]:
    """What an enrolment row carries: the sequence, its start, the stage then."""
    return {
        "sequence": sequence,
        "enrolled_at": utcnow().isoformat(),
        "stage": (lead.crm_state or {}).get("lifecycle_stage"),
    }


def wake_enrolments(scope: TenantScope, lead_id: str) -> int:
    """Makes the lead's waiting enrolments due now, so stop conditions apply at once.

    For news that may end a sequence (an unsubscribe, a complaint, a bounce, a
    reply): the dispatcher's next run stops it and says why, rather than at
    the time its next step would have been due.

    Returns:
        How many enrolments were woken.
    """
    result = scope.session.execute(
        update(OutboxItem)
        .where(
            OutboxItem.tenant_id == scope.tenant_id,
            OutboxItem.lead_id == lead_id,
            OutboxItem.topic == SEQUENCE_ENROLMENT,
            OutboxItem.status == "pending",
        )
        .values(available_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)


def count_by_status(scope: TenantScope) -> dict[str, dict[str, int]]:
    """How many outbox rows each topic has in each status."""
    query = (
        select(OutboxItem.topic, OutboxItem.status, func.count())
        .where(OutboxItem.tenant_id == scope.tenant_id)
        .group_by(OutboxItem.topic, OutboxItem.status)
    )
    counts: dict[str, dict[str, int]] = {topic: {} for topic in TOPICS}
    for topic, status, count in scope.session.execute(query):
        counts.setdefault(topic, {})[status] = count
    return counts
