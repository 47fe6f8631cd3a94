"""Sending claimed sequence enrolments their due steps, each e-mail at most once.

One outbox row per (lead, sequence) is the enrolment. Its `available_at` is
when the dispatcher should look at it next: each visit works out the lead's
current step from its step rows and the sequence as configured now, checks the
stop conditions and the suppression list, and then sends the step, waits for
its due time, or ends the sequence. `dispatch_claims` does the work and needs
no Prefect server; `send_sequence_steps` is the task the dispatcher flow runs
it as.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

from prefect import runtime, task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import Row, bindparam, select, update

from connectors.email.backends import Outbox
from connectors.email.errors import (
    EmailAuthenticationError,
    EmailDeliveryError,
    EmailOutcomeUnknownError,
    EmailRejectedError,
    EmailRenderError,
)
from connectors.email.messages import build_message, parse_sender
from connectors.email.templates import RenderedEmail, TemplateRenderer
from leads import clock, suppression
from leads.email_sends import template_fields
from leads.flow_run import within_flow_run
from leads.local_time import lead_zone, next_send_time, schedule_step
from leads.sequences import FieldCondition, Sequence, Step
from leads.store import Store, lease_time, timeline
from leads.store.claims import (
    Claim,
    extend_in,
    finish_in,
    release,
    release_in,
    reschedule_in,
)
from leads.store.database import TenantScope
from leads.store.outbox import SEQUENCE_ENROLMENT
from leads.store.steps import (
    SETTLED,
    StepRow,
    StepStatus,
    begin_sending,
    enrolment_start,
    ensure_step,
    insert_sending,
    mark_failed,
    mark_sent,
    mark_skipped,
    park_unknown,
    reschedule,
    revert_to_pending,
    step_anchor,
    steps_of,
)
from leads.store.tables import Lead, OutboxItem
from leads.tracebacks import withholding

logger = logging.getLogger(__name__)
# A lead as the dispatcher reads it: its columns as a plain row, by name.
LeadRow = Row[Any]

# A message the outbox could not take is tried again this much later.
RETRY_DELAY = timedelta(minutes=1)
# An enrolment whose sequence is gone from the file or cannot be rendered
# waits this long before it is looked at again.
BROKEN_RETRY = timedelta(minutes=10)
DEFAULT_LEASE = timedelta(seconds=60)


@dataclass(frozen=True)
class DispatchContext:
    """What sending needs besides the store: configuration and the way out.

    `unsubscribe_link(tenant_id, lead_id)` makes a lead's signed one-click
    unsubscribe address; marketing messages carry it in their body and their
    `List-Unsubscribe` header.
    """

    sequences: Mapping[str, Sequence]
    renderer: TemplateRenderer
    outbox: Outbox
    sender_address: str
    # Required: a marketing message without a way out must not be sent.
    unsubscribe_link: Callable[[str, str], str]
    flow_run_id: str | None = None
    default_timezone: str = "UTC"
    lease: timedelta = DEFAULT_LEASE


@dataclass(frozen=True)
class DispatchSummary:
    """How a batch of enrolments ended, in counts only (no one's personal data).

    `waiting` counts enrolments whose next step is not due yet (or is due
    outside its send window); `held` those whose sequence is gone from the
    file or whose templates are broken; `finished` those with no step left; `stopped`
    those a stop condition or the suppression list ended; `settled` claims
    closed without news; `contended` claims left to expire because another
    run holds the step.
    """

    sent: int = 0
    waiting: int = 0
    held: int = 0
    finished: int = 0
    stopped: int = 0
    unknown: int = 0
    failed: int = 0
    bounced: int = 0
    requeued: int = 0
    settled: int = 0
    contended: int = 0

    def as_counts(self) -> dict[str, int]:
        """Each outcome and how many claims ended in it."""
        return asdict(self)


def dispatch_claims(
    store: Store, claims: Iterable[Claim], context: DispatchContext
) -> DispatchSummary:
    """Handles each claimed enrolment once: sends its due step, waits, or ends it.

    At most once per (lead, sequence, step), even when runs overlap: the step
    is marked `sending` by a conditional update only one run can win, and that
    is committed before the message is handed over. A step another run left
    `sending` (it died, or is slow and lost its lease) becomes `unknown` unless
    the outbox shows the message arrived, and is never sent again by itself;
    the sequence goes on with the next step.

    Claims end as follows: rescheduled to the next step's due time after a
    send or when the step is not due; done when no step is left or a stop
    condition holds (every remaining step `skipped` with the reason); parked
    when the message cannot be made or the relay refuses it for good (the step
    `failed`); released for a retry a minute later when the outbox cannot take
    it now; left to expire when another run holds the step.

    A sequence gone from the file, or whose templates or subjects do not
    load, holds only its own enrolments (for ten minutes at a time); the
    others are sent.

    Raises:
        ValueError: a claim is not a sequence enrolment.
        EmailRenderError: the sender address or the unsubscribe links are
            broken; raised before any claim is touched, so they return to the
            queue when their leases run out instead of failing every lead.
    """
    batch = list(claims)
    other_topics = sorted({held.topic for held in batch} - {SEQUENCE_ENROLMENT})
    if other_topics:
        raise ValueError(
            f"only {SEQUENCE_ENROLMENT} claims are sent; got {other_topics}"
        )
    parse_sender(context.sender_address)
    _check_link(context.unsubscribe_link("tenant", "lead"))
    broken = _broken_sequences(
        context, {held.payload.get("sequence") for held in batch}
    )

    visitor = _Visitor(store, context, broken)
    outcomes: Counter[str] = Counter()
    # One relay connection for the whole batch, opened at the first send.
    with context.outbox.session():
        for held in batch:
            outcome = visitor.visit(held)
            logger.debug("Enrolment %s of lead %s: %s", held.id, held.lead_id, outcome)
            outcomes[outcome] += 1
    summary = DispatchSummary(**outcomes)
    logger.info("Dispatched %d enrolments: %s", len(batch), summary.as_counts())
    return summary


@dataclass(frozen=True)
class _Lead:
    """What scheduling a lead's next step needs, so recording needs no read."""

    id: str
    zone: Any
    enrolled_at: datetime


@dataclass
class _Send:
    """A step message made and marked `sending`, to hand over after commit."""

    step_id: int
    index: int
    message: EmailMessage
    lead: _Lead


@dataclass(frozen=True)
class _Visitor:
    store: Store
    context: DispatchContext
    # Sequences whose templates cannot be made, with why.
    broken: Mapping[str, str] = field(default_factory=dict)
    _zones: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    def visit(self, held: Claim) -> str:
        """Handles one claim; returns the DispatchSummary field it counts in."""
        name = held.payload.get("sequence")
        sequence = self.context.sequences.get(name) if isinstance(name, str) else None
        problem = (
            self.broken.get(str(name))
            if sequence is not None
            else (f"sequence {name!r} is not in the sequences file")
        )
        if problem is not None:
            # Waits, rather than parks: once the file is fixed (or the
            # sequence is back) the enrolment goes on where it was. Other
            # sequences are not held up.
            release(
                self.store,
                held,
                error=problem,
                retry_at=clock.now() + BROKEN_RETRY,
                count_attempt=False,
            )
            return "held"
        assert sequence is not None
        with self.store.write(held.tenant_id) as scope:
            decided = self._decide(scope, held, str(name), sequence)
        if isinstance(decided, str):
            return decided
        return self._hand_over(held, str(name), sequence, decided)

    def _decide(
        self,
        scope: TenantScope,
        held: Claim,
        name: str,
        sequence: Sequence,
    ) -> str | _Send:
        """Settles the claim, or makes the message and marks its step `sending`."""
        session, run = scope.session, self.context.flow_run_id
        # Only a run that still holds the claim may act on its steps: a slow
        # run whose lease ran out and was taken over must neither send beside
        # the new holder nor settle a step the new holder is sending.
        if not extend_in(session, held, self.context.lease):
            return "contended"
        # Due or not by the clock the claim was judged by (`lease_time`): a
        # machine whose clock runs behind the database's would hand back a
        # step its claim found due, and take it again at once, until its own
        # clock caught up.
        moment = lease_time.read(session)
        lead = _read_lead(scope, held.lead_id)
        if lead is None:
            # Deleting a lead deletes its outbox rows: nothing is owed.
            finish_in(session, held, "done")
            return "settled"

        rows = steps_of(scope, lead.id, name)
        enrolled_at = enrolment_start(held.payload, lead.created_at)
        person = _Lead(lead.id, self._zone_of(lead), enrolled_at)
        index = sequence.current_index({key: row.status for key, row in rows.items()})
        self._settle_passed(scope, name, sequence, lead.id, rows, index)
        if index is not None:
            row = rows.get(sequence.steps[index].id)
            if row is not None and row.status == StepStatus.SENDING:
                outcome = self._resolve_sending(scope, row)
                self._advance(scope, held, sequence, person, index, moment)
                return outcome
        if index is None:
            finish_in(session, held, "done")
            return "settled"

        step = sequence.steps[index]
        reason, detail = _stop_reason(scope, held, sequence, lead, enrolled_at)
        if reason is not None:
            self._stop(scope, held, name, sequence, lead, index, reason, detail)
            return "stopped"

        zone = person.zone
        window = sequence.window_of(step)
        anchor = step_anchor(sequence, index, rows, enrolled_at)
        due = schedule_step(anchor, step.parsed_delay, window, zone)
        send_at = next_send_time(due, moment, window, zone)
        place = {"position": index + 1, "template": step.template}
        row = rows.get(step.id)
        if send_at > moment:
            row = ensure_step(
                scope, lead.id, name, step.id, due_at=send_at, known=row, **place
            )
            if row.due_at != send_at:
                reschedule(scope, row.id, send_at)
            reschedule_in(session, held, send_at)
            return "waiting"

        # Made before the step is marked `sending`, so a template that fails
        # leaves a step that provably went nowhere.
        try:
            message = self._message(held, sequence, step, lead, moment)
        except EmailRenderError as exc:
            row = ensure_step(
                scope, lead.id, name, step.id, due_at=due, known=row, **place
            )
            mark_failed(scope, row.id, reason=str(exc), flow_run_id=run)
            finish_in(session, held, "parked", str(exc))
            return "failed"
        message_id = str(message["Message-ID"])
        sent_to = suppression.address_hash(lead.email)
        if row is None:
            step_id = insert_sending(
                scope,
                lead.id,
                name,
                step.id,
                due_at=due,
                flow_run_id=run,
                message_id=message_id,
                recipient_hash=sent_to,
                **place,
            )
        elif begin_sending(
            scope,
            row.id,
            flow_run_id=run,
            message_id=message_id,
            recipient_hash=sent_to,
        ):
            step_id = row.id
        else:
            step_id = None
        if step_id is None:
            # Another run holds the step. Our claim stays until its lease runs
            # out; whichever run takes the row next sees how the step ended.
            return "contended"
        return _Send(step_id, index, message, person)

    def _hand_over(
        self, held: Claim, name: str, sequence: Sequence, pending: _Send
    ) -> str:
        """Sends a message whose step is committed `sending`, and records the end."""
        run, store = self.context.flow_run_id, self.store
        try:
            message_id = self.context.outbox.send(pending.message)
        except (EmailDeliveryError, EmailAuthenticationError) as exc:
            # Nothing left this machine: the step may go again later.
            with store.write(held.tenant_id) as scope:
                revert_to_pending(scope, pending.step_id, error=str(exc))
                release_in(
                    scope.session,
                    held,
                    error=str(exc),
                    retry_at=clock.now() + RETRY_DELAY,
                )
            if isinstance(exc, EmailAuthenticationError):
                # The relay refuses our login: every other message of the
                # batch would fail the same way, and the run should say so.
                raise
            return "requeued"
        except EmailRejectedError as exc:
            with store.write(held.tenant_id) as scope:
                mark_failed(scope, pending.step_id, reason=str(exc), flow_run_id=run)
                lead = scope.get(Lead, held.lead_id)
                if exc.bounce and lead is not None and lead.email:
                    suppression.record_bounce(scope, lead, source=f"sequence:{name}")
                finish_in(scope.session, held, "parked", str(exc))
            return "bounced" if exc.bounce else "failed"
        except EmailOutcomeUnknownError:
            with store.write(held.tenant_id) as scope:
                park_unknown(scope, pending.step_id, flow_run_id=run)
                self._advance(
                    scope, held, sequence, pending.lead, pending.index, clock.now()
                )
            return "unknown"
        # Any other error leaves the step `sending`: the next run parks it
        # `unknown` rather than risk sending it twice.

        with store.write(held.tenant_id) as scope:
            sent_at = clock.now()
            recorded = mark_sent(
                scope,
                pending.step_id,
                message_id=message_id,
                flow_run_id=run,
                now=sent_at,
            )
            self._advance(scope, held, sequence, pending.lead, pending.index, sent_at)
        if not recorded:
            # Only a person can have moved a step we held `sending`; the
            # message went, and the step says what they decided.
            logger.warning("Step %s was sent but had been settled meanwhile", pending)
            return "contended"
        return "sent"

    def _settle_passed(
        self,
        scope: TenantScope,
        name: str,
        sequence: Sequence,
        lead_id: str,
        rows: Mapping[str, StepRow],
        index: int | None,
    ) -> None:
        """Says what became of steps an edit of the sequence put out of reach.

        A step added behind the lead's place (or moved there) is recorded
        `skipped` rather than silently never sent; a step row left open whose
        step is gone from the file, or behind the lead, is closed the same way
        (`unknown` when it was being sent).
        """
        run = self.context.flow_run_id
        reached = len(sequence.steps) if index is None else index
        behind = {step.id: number for number, step in enumerate(sequence.steps)}
        for number, step in enumerate(sequence.steps[:reached], start=1):
            if step.id not in rows:
                row = ensure_step(
                    scope,
                    lead_id,
                    name,
                    step.id,
                    position=number,
                    template=step.template,
                    due_at=clock.now(),
                )
                mark_skipped(scope, row.id, reason="behind_the_lead", flow_run_id=run)
        for key, row in rows.items():
            place = behind.get(key)
            if row.status in SETTLED or (place is not None and place >= reached):
                continue
            reason = "removed_from_sequence" if place is None else "behind_the_lead"
            if row.status == StepStatus.SENDING:
                self._resolve_sending(scope, row)
            else:
                mark_skipped(scope, row.id, reason=reason, flow_run_id=run)

    def _resolve_sending(self, scope: TenantScope, row: StepRow) -> str:
        """Settles a step another run left `sending`.

        That run may have died, or be only slow and still sending: a message
        missing from the outbox proves nothing. So only a message the outbox
        shows arrived settles the step as `sent`; otherwise it is parked
        `unknown` and never sent again by itself (a late sender that finishes
        still records it `sent`).
        """
        run = self.context.flow_run_id
        if self._was_delivered(row.message_id):
            sent = mark_sent(
                scope,
                row.id,
                message_id=str(row.message_id),
                flow_run_id=run,
                now=clock.now(),
            )
            return "sent" if sent else "settled"
        parked = park_unknown(scope, row.id, flow_run_id=run)
        return "unknown" if parked else "settled"

    def _advance(
        self,
        scope: TenantScope,
        held: Claim,
        sequence: Sequence,
        lead: _Lead,
        index: int,
        after: datetime,
    ) -> None:
        """Hands the enrolment back due at its next step, or ends it after the last."""
        name = str(held.payload.get("sequence"))
        if index + 1 >= len(sequence.steps):
            finish_in(scope.session, held, "done")
            timeline.append(
                scope,
                lead.id,
                "sequence.finished",
                source=f"sequence:{name}",
                detail={"sequence": name},
                flow_run_id=self.context.flow_run_id,
            )
            return
        following = sequence.steps[index + 1]
        anchor = after if following.after == "previous" else lead.enrolled_at
        window = sequence.window_of(following)
        due = schedule_step(anchor, following.parsed_delay, window, lead.zone)
        reschedule_in(scope.session, held, due)

    def _stop(
        self,
        scope: TenantScope,
        held: Claim,
        name: str,
        sequence: Sequence,
        lead: LeadRow,
        index: int,
        reason: str,
        detail: dict[str, Any],
    ) -> None:
        """Skips the current step and every later one with `reason`; ends the claim."""
        run, moment = self.context.flow_run_id, clock.now()
        for position, step in enumerate(sequence.steps[index:], start=index + 1):
            row = ensure_step(
                scope,
                lead.id,
                name,
                step.id,
                position=position,
                template=step.template,
                due_at=moment,
            )
            mark_skipped(scope, row.id, reason=reason, flow_run_id=run)
        timeline.append(
            scope,
            lead.id,
            "sequence.stopped",
            source=f"sequence:{name}",
            detail={"sequence": name, "reason": reason, **detail},
            flow_run_id=run,
        )
        finish_in(scope.session, held, "done")

    def _message(
        self,
        held: Claim,
        sequence: Sequence,
        step: Step,
        lead: LeadRow,
        moment: datetime,
    ) -> EmailMessage:
        link = None
        if sequence.category == "marketing":
            link = self.context.unsubscribe_link(held.tenant_id, lead.id)
        rendered = self.context.renderer.render(
            step.template, step.subject, template_fields(lead), unsubscribe_url=link
        )
        return build_message(
            rendered,
            sender=self.context.sender_address,
            recipient=str(lead.email_display or lead.email),
            now=moment,
            unsubscribe_url=link,
        )

    def _zone_of(self, lead: LeadRow) -> Any:
        key = (lead.timezone, lead.country, lead.phone)
        zone = self._zones.get(key)
        if zone is None:
            zone = lead_zone(
                lead.timezone, lead.country, lead.phone, self.context.default_timezone
            )
            self._zones[key] = zone
        return zone

    def _was_delivered(self, message_id: str | None) -> bool | None:
        if message_id is None:
            return None
        ask = getattr(self.context.outbox, "delivered", None)
        return ask(message_id) if ask is not None else None


def _broken_sequences(context: DispatchContext, names: set[Any]) -> dict[str, str]:
    """The claimed sequences whose templates or subjects do not load, with why."""
    broken = {}
    for name in names:
        if not isinstance(name, str) or name not in context.sequences:
            continue
        try:
            for step in context.sequences[name].steps:
                context.renderer.check(step.template, step.subject)
        except EmailRenderError as exc:
            logger.error("Sequence %s cannot be sent until it is fixed: %s", name, exc)
            broken[name] = str(exc)
    return broken


def _check_link(link: str) -> None:
    """Refuses unsubscribe links no message could carry, before any claim."""
    try:
        build_message(
            RenderedEmail("check", "check", "check"),
            sender="check <check@localhost>",
            recipient="check@localhost.localdomain",
            unsubscribe_url=link,
        )
    except EmailRenderError as exc:
        raise EmailRenderError(
            f"unsubscribe links cannot be made: {exc}; check ORCH_PUBLIC_BASE_URL"
        ) from exc


def _read_lead(scope: TenantScope, lead_id: str | None) -> LeadRow | None:
    """The lead's columns as a plain row (read-only here, and cheaper than the ORM)."""
    if lead_id is None:
        return None
    return scope.session.execute(
        _LEAD, {"lead_id": lead_id, "tenant_id": scope.tenant_id}
    ).one_or_none()


_LEAD = select(Lead.__table__).where(
    Lead.__table__.c.id == bindparam("lead_id"),
    Lead.__table__.c.tenant_id == bindparam("tenant_id"),
)


def _stop_reason(
    scope: TenantScope,
    held: Claim,
    sequence: Sequence,
    lead: LeadRow,
    enrolled_at: datetime,
) -> tuple[str | None, dict[str, Any]]:
    """Why the lead's sequence ends now, with detail for the timeline; None: it goes on.

    The suppression list always applies (marketing stops at an unsubscribe,
    a complaint or a CRM opt-out; transactional at a hard bounce); the
    sequence's own conditions come after it.
    """
    if not lead.email:
        return "missing_email", {}
    blocked = suppression.blocked_reason(
        scope, lead=lead, address=lead.email, category=sequence.category
    )
    if blocked is not None:
        return blocked, {}
    email_state, crm_state = lead.email_state or {}, lead.crm_state or {}
    for condition in sequence.stop_when:
        if isinstance(condition, FieldCondition):
            if condition.holds(lead):
                return "lead_field", {"condition": condition.describe()}
        elif condition == "replied":
            replies = [email_state.get("replied_at"), crm_state.get("replied_at")]
            if any(_at_or_after(stamp, enrolled_at) for stamp in replies):
                return "replied", {}
        elif condition == "unsubscribed":
            if (
                lead.email_opt_out
                or crm_state.get("opted_out")
                or lead.status == "unsubscribed"
            ):
                return "unsubscribed", {}
        elif condition == "bounced":
            if email_state.get("bounced_at"):
                return "bounced", {}
        elif condition == "converted":
            if crm_state.get("converted") or lead.status == "converted":
                return "converted", {}
        elif condition == "lifecycle_stage_changed" and _stage_changed(
            scope, held, crm_state, enrolled_at
        ):
            return "lifecycle_stage_changed", {}
    return None, {}


def _stage_changed(
    scope: TenantScope, held: Claim, crm_state: Mapping[str, Any], since: datetime
) -> bool:
    """Whether the CRM stage moved since enrolment.

    Reconciliation notes when it sees a stage move (`lifecycle_stage_changed_at`),
    so a move between two of the dispatcher's looks is not missed. The stage at
    enrolment is also kept on the enrolment; a lead not yet in the CRM then
    has none, and the first stage read back (the one the sync itself set)
    becomes the one to compare with.
    """
    if _at_or_after(crm_state.get("lifecycle_stage_changed_at"), since):
        return True
    stage = crm_state.get("lifecycle_stage")
    if not stage:
        return False
    baseline = held.payload.get("stage")
    if baseline is None:
        scope.session.execute(
            update(OutboxItem)
            .where(OutboxItem.id == held.id, OutboxItem.tenant_id == held.tenant_id)
            .values(payload={**held.payload, "stage": stage})
            .execution_options(synchronize_session=False)
        )
        return False
    return stage != baseline


def _at_or_after(stamp: Any, moment: datetime) -> bool:
    if not isinstance(stamp, str):
        return False
    try:
        return datetime.fromisoformat(stamp) >= moment
    except (TypeError, ValueError):
        return False


# Sending is a side effect: never cached, never retried by Prefect. A failed
# send is released back to the outbox with a delay, and a later run retries it.
@task(name="send sequence steps", cache_policy=NO_CACHE, retries=0)
@withholding
def send_sequence_steps(
    claims: list[Claim], *, store: Store, context: DispatchContext
) -> dict[str, int]:
    """Runs `dispatch_claims` on one batch; returns its counts (no personal data)."""
    with within_flow_run(runtime.flow_run.id):
        return dispatch_claims(store, claims, context).as_counts()
