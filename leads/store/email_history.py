"""What e-mail a lead is owed and has had: its enrolments, their steps, one-offs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from leads.local_time import lead_zone, next_send_time, schedule_step
from leads.sequences import Sequence
from leads.store.database import TenantScope
from leads.store.outbox import SEQUENCE_ENROLMENT
from leads.store.steps import enrolment_start, step_anchor
from leads.store.tables import EmailSend, Lead, OutboxItem, SequenceStep


@dataclass(frozen=True)
class StepState:
    """One step the lead has a row for, and how it ended (or when it is due)."""

    id: str
    position: int
    template: str | None
    status: str
    reason: str | None
    due_at: datetime | None
    sent_at: datetime | None
    message_id: str | None
    flow_run_id: str | None

    @property
    def outcome(self) -> str:
        """`sent`, `pending`, `planned`, `skipped_<reason>`, `failed`, `unknown`, …"""
        if self.status == "skipped" and self.reason:
            return f"skipped_{self.reason}"
        return self.status


@dataclass(frozen=True)
class Enrolment:
    """The lead's place in one sequence.

    `status` is `active` (a step is owed; the dispatcher looks again at
    `next_check_at`), `finished`, `stopped` (a stop condition skipped the rest)
    or `parked` (a step failed and waits for a person).
    """

    sequence: str
    status: str
    enrolled_at: str | None
    next_check_at: datetime | None
    last_error: str | None
    steps: list[StepState] = field(default_factory=list)


def email_history(
    scope: TenantScope,
    lead: Lead,
    sequences: Mapping[str, Sequence],
    default_timezone: str,
) -> tuple[list[Enrolment], list[EmailSend]]:
    """The lead's enrolments (oldest first, each with its steps) and one-off sends.

    An active enrolment also lists the steps still ahead of the lead in the
    sequence as configured now, as `planned`: the next one with the time the
    dispatcher will send it (its delay from its anchor, in its window in the
    lead's zone, and not before the dispatcher looks again), the later ones
    without, as theirs count from sends yet to happen.
    """
    lead_id = lead.id
    zone = lead_zone(lead.timezone, lead.country, lead.phone, default_timezone)
    rows = scope.session.scalars(
        scope.select(OutboxItem)
        .where(OutboxItem.lead_id == lead_id, OutboxItem.topic == SEQUENCE_ENROLMENT)
        .order_by(OutboxItem.id)
    )
    steps = scope.session.scalars(
        scope.select(SequenceStep)
        .where(SequenceStep.lead_id == lead_id)
        .order_by(SequenceStep.step, SequenceStep.id)
    ).all()
    enrolments = []
    for row in rows:
        sequence = str(row.payload.get("sequence"))
        states = [_state(step) for step in steps if step.sequence == sequence]
        status = {"pending": "active", "claimed": "active"}.get(row.status, row.status)
        configured = sequences.get(sequence)
        if status == "active" and configured is not None:
            enrolled_at = enrolment_start(row.payload, lead.created_at)
            rows_by_id = {
                step.step_key: step for step in steps if step.sequence == sequence
            }
            states += _planned(
                configured, states, rows_by_id, enrolled_at, row.available_at, zone
            )
        if status == "done":
            stopped = any(state.status == "skipped" for state in states)
            status = "stopped" if stopped else "finished"
        enrolments.append(
            Enrolment(
                sequence=sequence,
                status=status,
                enrolled_at=row.payload.get("enrolled_at"),
                next_check_at=row.available_at if status == "active" else None,
                last_error=row.last_error,
                steps=states,
            )
        )
    sends = scope.session.scalars(
        scope.select(EmailSend)
        .where(EmailSend.lead_id == lead_id)
        .order_by(EmailSend.created_at)
    ).all()
    return enrolments, list(sends)


def _state(step: SequenceStep) -> StepState:
    return StepState(
        id=step.step_key,
        position=step.step,
        template=step.template,
        status=step.status,
        reason=step.error if step.status in ("skipped", "failed", "unknown") else None,
        due_at=step.due_at,
        sent_at=step.sent_at,
        message_id=step.message_id,
        flow_run_id=step.flow_run_id,
    )


def _planned(
    sequence: Sequence,
    states: list[StepState],
    rows: Mapping[str, SequenceStep],
    enrolled_at: datetime,
    next_check: datetime,
    zone: ZoneInfo,
) -> list[StepState]:
    """The configured steps still ahead of the lead that have no row yet.

    The first is due when the dispatcher will send it: its delay from its
    anchor, in its window, and not before the enrolment is looked at again.
    A lead's change wakes its enrolment at once, so `next_check` alone is
    not when the step goes.
    """
    had = {state.id: state.status for state in states}
    index = sequence.current_index(had)
    if index is None:
        return []
    step = sequence.steps[index]
    window = sequence.window_of(step)
    anchor = step_anchor(sequence, index, rows, enrolled_at)
    due = schedule_step(anchor, step.parsed_delay, window, zone)
    first_due = next_send_time(due, next_check, window, zone)
    ahead = []
    for position, step in enumerate(sequence.steps[index:], start=index + 1):
        if step.id in had:
            continue
        ahead.append(
            StepState(
                id=step.id,
                position=position,
                template=step.template,
                status="planned",
                reason=None,
                due_at=first_due if not ahead and position == index + 1 else None,
                sent_at=None,
                message_id=None,
                flow_run_id=None,
            )
        )
    return ahead
