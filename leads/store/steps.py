"""A lead's sequence steps: created once, then moved through their sending states.

Every move is a conditional UPDATE from the states it may start in, so when two
runs race for one step exactly one of them moves it. Each function works inside
the caller's write transaction, so a dispatcher can move a step and settle its
claim in one commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Row, bindparam, select

from leads.store import timeline
from leads.store.database import TenantScope
from leads.store.inserts import insert_if_absent
from leads.store.moves import move_if_in
from leads.store.tables import SequenceStep, utcnow

if TYPE_CHECKING:
    from leads.sequences import Sequence


class StepStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    UNKNOWN = "unknown"
    SKIPPED = "skipped"
    FAILED = "failed"


# A step as read or moved here: a plain row with the table's columns as
# attributes (no ORM object, so nothing is flushed or kept in the session).
StepRow = Row[Any]

# A failed step never went out, so it may be tried again once someone requeues it.
SENDABLE = (StepStatus.PENDING, StepStatus.FAILED)
# Nothing more will happen to these without a person.
SETTLED = (StepStatus.SENT, StepStatus.UNKNOWN, StepStatus.SKIPPED)


def enrolment_start(payload: Mapping[str, Any], created_at: datetime) -> datetime:
    """When the lead entered the sequence, from its enrolment row's payload.

    Rows from before enrolments were stamped (#6) fall back to when the lead
    came in.
    """
    stamp = payload.get("enrolled_at")
    if isinstance(stamp, str):
        return datetime.fromisoformat(stamp)
    return created_at


class SettledStep(Protocol):
    """What `step_anchor` reads of a step row: a `steps_of` row or a `SequenceStep`."""

    @property
    def status(self) -> str: ...
    @property
    def sent_at(self) -> datetime | None: ...
    @property
    def updated_at(self) -> datetime: ...


def step_anchor(
    sequence: Sequence,
    index: int,
    rows: Mapping[str, SettledStep],
    enrolled_at: datetime,
) -> datetime:
    """What step `index`'s delay counts from: the enrolment or the step before it.

    `rows` are the lead's step rows of the sequence by step id: the latest
    settled one before the step anchors it, at its send or, skipped, when it
    was settled.
    """
    if sequence.steps[index].after == "enrolment":
        return enrolled_at
    for earlier in reversed(sequence.steps[:index]):
        row = rows.get(earlier.id)
        if row is not None and row.status in SETTLED:
            return row.sent_at or row.updated_at
    return enrolled_at


def steps_of(scope: TenantScope, lead_id: str, sequence: str) -> dict[str, StepRow]:
    """The lead's rows for `sequence`, by step id."""
    rows = scope.session.execute(
        _STEPS_OF,
        {"tenant_id": scope.tenant_id, "lead_id": lead_id, "sequence": sequence},
    )
    return {row.step_key: row for row in rows}


_STEPS_OF = select(*SequenceStep.__table__.columns).where(
    SequenceStep.tenant_id == bindparam("tenant_id"),
    SequenceStep.lead_id == bindparam("lead_id"),
    SequenceStep.sequence == bindparam("sequence"),
)


def ensure_step(
    scope: TenantScope,
    lead_id: str,
    sequence: str,
    step_key: str,
    *,
    position: int,
    template: str,
    due_at: datetime,
    known: SequenceStep | None = None,
) -> StepRow:
    """The lead's row for step `step_key` of `sequence`, created `pending` if missing.

    An existing row is returned as it is, whatever its state and due time.

    Args:
        scope: the tenant's write transaction.
        lead_id: the lead.
        sequence: the sequence's name.
        step_key: the step's `id` in the configuration.
        position: where the step stands in the sequence (1-based), for people.
        template: the step's template, for the timeline.
        due_at: when the step is due, aware.
        known: the row when the caller has read it already in this transaction.
    """
    if known is not None:
        return known
    values = {
        "lead_id": lead_id,
        "sequence": sequence,
        "step_key": step_key,
        "step": position,
        "template": template,
        "status": StepStatus.PENDING,
        "due_at": due_at,
    }
    return _insert_or_read(scope, values)


def insert_sending(
    scope: TenantScope,
    lead_id: str,
    sequence: str,
    step_key: str,
    *,
    position: int,
    template: str,
    due_at: datetime,
    flow_run_id: str | None,
    message_id: str,
    recipient_hash: str | None = None,
) -> int | None:
    """Creates a step that is due now straight in `sending` (`begin_sending` for new).

    Returns:
        The new step's id, for the caller who may now send; None when a row
        for the step appeared meanwhile (another run made it; it decides).
    """
    values = {
        "lead_id": lead_id,
        "sequence": sequence,
        "step_key": step_key,
        "step": position,
        "template": template,
        "status": StepStatus.SENDING,
        "due_at": due_at,
        "flow_run_id": flow_run_id,
        "message_id": message_id,
        "recipient_hash": recipient_hash,
    }
    inserted = insert_if_absent(scope, SequenceStep, values)
    return int(inserted) if inserted is not None else None


def _insert_or_read(scope: TenantScope, values: dict[str, Any]) -> StepRow:
    inserted = insert_if_absent(scope, SequenceStep, values)
    query = select(*SequenceStep.__table__.columns).where(
        SequenceStep.tenant_id == scope.tenant_id,
        SequenceStep.lead_id == values["lead_id"],
        SequenceStep.sequence == values["sequence"],
        SequenceStep.step_key == values["step_key"],
    )
    if inserted is not None:
        query = select(*SequenceStep.__table__.columns).where(
            SequenceStep.id == inserted
        )
    # Another run's row when the insert found one (PostgreSQL: its transaction
    # has committed by the time ON CONFLICT DO NOTHING returns).
    return scope.session.execute(query).one()


def begin_sending(
    scope: TenantScope,
    step_id: int,
    *,
    flow_run_id: str | None = None,
    message_id: str | None = None,
    recipient_hash: str | None = None,
) -> bool:
    """Marks the step `sending` just before its message is handed over.

    Of concurrent callers exactly one wins; a `failed` step may be sent again.
    The message's id is kept on the step, so that if the sender dies the next
    run can ask the outbox whether that very message arrived.

    Returns:
        True for the caller who may now send; False when the step was not
        `pending` or `failed` (someone else is sending it, or it is settled).
    """
    row = _move(
        scope,
        step_id,
        SENDABLE,
        status=StepStatus.SENDING,
        flow_run_id=flow_run_id,
        message_id=message_id,
        recipient_hash=recipient_hash,
    )
    return row is not None


def mark_sent(
    scope: TenantScope,
    step_id: int,
    *,
    message_id: str,
    flow_run_id: str | None,
    now: datetime | None = None,
) -> bool:
    """Records that the step's message went out, with an `email.sent` event.

    A step parked `unknown` meanwhile (a later run gave its sender up for dead)
    becomes `sent` too: the sender was only slow, and now we know.

    Returns:
        True when the step is now `sent`; False when it was in another state.
    """
    row = _move(
        scope,
        step_id,
        (StepStatus.SENDING, StepStatus.UNKNOWN),
        status=StepStatus.SENT,
        sent_at=now or utcnow(),
        message_id=message_id,
        flow_run_id=flow_run_id,
        error=None,
    )
    if row is None:
        return False
    _record(
        scope,
        row,
        "email.sent",
        flow_run_id,
        template=row.template,
        message_id=message_id,
    )
    return True


def park_unknown(
    scope: TenantScope, step_id: int, *, flow_run_id: str | None = None
) -> bool:
    """Parks a step left `sending` by a run that died as `unknown`.

    Whether its message went out cannot be told, and marketing e-mail is sent
    at most once, so it is never re-sent by itself: a person resolves it. The
    `email.unknown` event names the run that found it; the step keeps the run
    that was sending.

    Returns:
        True when the step is now `unknown`; False when it was not `sending`.
    """
    row = _move(
        scope,
        step_id,
        (StepStatus.SENDING,),
        status=StepStatus.UNKNOWN,
        error="its sender stopped while sending; whether it went out is unknown",
    )
    if row is None:
        return False
    _record(
        scope,
        row,
        "email.unknown",
        flow_run_id,
        sending_flow_run_id=row.flow_run_id,
    )
    return True


def mark_skipped(
    scope: TenantScope,
    step_id: int,
    *,
    reason: str,
    flow_run_id: str | None = None,
) -> bool:
    """Settles a step that will not be sent (`unsubscribed`, …) as `skipped`.

    Returns:
        True when the step is now `skipped`; False when it was not sendable.
    """
    return _close(scope, step_id, SENDABLE, StepStatus.SKIPPED, reason, flow_run_id)


def mark_failed(
    scope: TenantScope,
    step_id: int,
    *,
    reason: str,
    flow_run_id: str | None = None,
) -> bool:
    """Marks a step `failed`: its message did not go out, and retrying cannot help.

    For a template that does not render for this lead, a recipient the relay
    refuses for good, and the like. Someone may requeue it once that is fixed.

    Returns:
        True when the step is now `failed`; False when it was sent or settled.
    """
    return _close(
        scope,
        step_id,
        (*SENDABLE, StepStatus.SENDING),
        StepStatus.FAILED,
        reason,
        flow_run_id,
    )


def _close(
    scope: TenantScope,
    step_id: int,
    allowed: tuple[StepStatus, ...],
    status: StepStatus,
    reason: str,
    flow_run_id: str | None,
) -> bool:
    """Ends a step unsent (`skipped`, `failed`) with its reason on the timeline."""
    row = _move(
        scope,
        step_id,
        allowed,
        status=status,
        flow_run_id=flow_run_id,
        error=reason,
    )
    if row is None:
        return False
    _record(scope, row, f"email.{status.value}", flow_run_id, reason=reason)
    return True


def revert_to_pending(scope: TenantScope, step_id: int, *, error: str) -> bool:
    """Puts a `sending` step back to `pending` when its send provably did not happen.

    For failures before anything left this machine (the outbox file could not
    be written, the relay refused the connection), so the step can be retried.

    Returns:
        True when the step is `pending` again; False when it was not `sending`.
    """
    row = _move(
        scope,
        step_id,
        (StepStatus.SENDING,),
        status=StepStatus.PENDING,
        error=error,
    )
    return row is not None


def reschedule(scope: TenantScope, step_id: int, due_at: datetime) -> None:
    """Moves a step not yet sent to a new due time (a delay or window changed)."""
    _move(scope, step_id, SENDABLE, due_at=due_at)


def _move(
    scope: TenantScope,
    step_id: int,
    sources: tuple[StepStatus, ...],
    **values: Any,
) -> StepRow | None:
    """Updates the step if it is in one of `sources`; None when it was not."""
    return move_if_in(scope, SequenceStep, step_id, sources, values)


def _record(
    scope: TenantScope,
    row: StepRow,
    kind: str,
    flow_run_id: str | None,
    **detail: Any,
) -> None:
    timeline.append(
        scope,
        row.lead_id,
        kind,
        source=f"sequence:{row.sequence}",
        detail={
            "sequence": row.sequence,
            "step": row.step,
            "step_id": row.step_key,
            **detail,
        },
        flow_run_id=flow_run_id,
    )
