"""Sending claimed sequence enrolments their due step, each e-mail at most once.

`dispatch_claims` does the work and needs no Prefect server; `send_sequence_steps`
is the task the dispatcher flow runs it as.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any, Protocol

from prefect import task
from prefect.cache_policies import NO_CACHE

from connectors.email.errors import EmailDeliveryError, EmailRenderError
from connectors.email.messages import build_message, parse_sender
from connectors.email.templates import TemplateRenderer
from leads.sequences import Sequence
from leads.store import Store
from leads.store.claims import Claim, complete, extend, park, release
from leads.store.outbox import SEQUENCE_ENROLMENT
from leads.store.steps import (
    SETTLED,
    StepStatus,
    begin_sending,
    ensure_step,
    mark_failed,
    mark_sent,
    mark_skipped,
    park_unknown,
    revert_to_pending,
)
from leads.store.tables import Lead, utcnow

logger = logging.getLogger(__name__)

# A message the outbox could not take is tried again this much later.
RETRY_DELAY = timedelta(minutes=1)
DEFAULT_LEASE = timedelta(seconds=60)
# Enrolment sends step 1. TODO(#6): later steps, their delays and send windows.
FIRST_STEP = 1
# What a template may read of a lead: the person's own details, never the
# store's bookkeeping (tenant, CRM state, score) or free-text internal notes.
TEMPLATE_FIELDS = (
    "email",
    "email_display",
    "first_name",
    "last_name",
    "company",
    "job_title",
    "website",
    "phone",
    "street",
    "city",
    "state",
    "postal_code",
    "country",
    "timezone",
    "source",
    "custom",
)


class Outbox(Protocol):
    """Where finished messages go: `.eml` files, an SMTP relay."""

    def send(self, message: EmailMessage) -> str:
        """Hands the message over and returns its Message-ID.

        Raises:
            EmailDeliveryError: the message was not handed over; it may be tried
                again.
        """
        ...

    def delivered(self, message_id: str) -> bool | None:
        """Whether that message was handed over; None when this outbox cannot tell."""
        ...


@dataclass(frozen=True)
class DispatchSummary:
    """How a batch of claims ended, in counts only (no one's personal data).

    `settled` counts claims closed without news (the step was already sent,
    unknown or skipped); `contended` counts claims left to expire because another
    run holds the step.
    """

    sent: int = 0
    skipped: int = 0
    unknown: int = 0
    failed: int = 0
    requeued: int = 0
    settled: int = 0
    contended: int = 0

    def as_counts(self) -> dict[str, int]:
        """Each outcome and how many claims ended in it."""
        return asdict(self)


def template_fields(lead: Lead) -> dict[str, Any]:
    """The lead's own fields templates may use, each present (None when empty)."""
    fields = {name: getattr(lead, name) for name in TEMPLATE_FIELDS}
    fields["custom"] = dict(lead.custom or {})
    return fields


def dispatch_claims(
    store: Store,
    claims: Iterable[Claim],
    *,
    sequences: Mapping[str, Sequence],
    renderer: TemplateRenderer,
    outbox: Outbox,
    sender_address: str,
    flow_run_id: str | None,
    now: datetime | None = None,
    lease: timedelta = DEFAULT_LEASE,
) -> DispatchSummary:
    """Sends each claimed enrolment's first step, and settles every claim.

    At most once per (lead, sequence, step), even when runs overlap: the step
    is marked `sending` by a conditional update only one run can win, before the
    message is handed over. A step a dead run left `sending` becomes `unknown`
    and is not sent again. Claims are settled as follows: done once the step is
    sent, skipped (no e-mail address, unsubscribed) or settled already; parked
    when the message cannot be made (the step is `failed`); released for a
    retry a minute later when the outbox refuses it (the step is `pending`
    again); left to expire when another run holds the step.

    Args:
        store: the lead store.
        claims: `sequence_enrolment` claims this run holds.
        sequences: the configured sequences by name.
        renderer: renders the steps' templates.
        outbox: where messages go.
        sender_address: the From value, `ORCH_EMAIL_FROM`.
        flow_run_id: the Prefect flow run sending, recorded on the timeline.
        now: the current time, aware; the clock's when not given.
        lease: how long each claim is renewed for before its message is sent.

    Raises:
        ValueError: a claim is not a sequence enrolment.
        EmailRenderError: the sender address or a sequence's templates are
            broken; raised before any claim is touched, so they return to the
            queue when their leases run out instead of failing every lead.
    """
    batch = list(claims)
    other_topics = sorted({held.topic for held in batch} - {SEQUENCE_ENROLMENT})
    if other_topics:
        raise ValueError(
            f"only {SEQUENCE_ENROLMENT} claims are sent; got {other_topics}"
        )
    parse_sender(sender_address)
    for name in {held.payload.get("sequence") for held in batch}:
        if isinstance(name, str) and name in sequences:
            first = sequences[name].steps[FIRST_STEP - 1]
            renderer.check(first.template, first.subject)

    sender = _StepSender(
        store, sequences, renderer, outbox, sender_address, flow_run_id, now, lease
    )
    outcomes: Counter[str] = Counter()
    for held in batch:
        outcome = sender.send(held)
        logger.debug("Enrolment of lead %s: %s", held.lead_id, outcome)
        outcomes[outcome] += 1
    summary = DispatchSummary(**outcomes)
    logger.info("Dispatched %d enrolments: %s", len(batch), summary.as_counts())
    return summary


@dataclass(frozen=True)
class _Enrolment:
    """What sending one lead's step needs, read in one transaction."""

    step_id: int
    status: StepStatus
    message_id: str | None
    recipient: str | None
    unsubscribed: bool
    fields: dict[str, Any]


@dataclass(frozen=True)
class _StepSender:
    store: Store
    sequences: Mapping[str, Sequence]
    renderer: TemplateRenderer
    outbox: Outbox
    sender_address: str
    flow_run_id: str | None
    now: datetime | None
    lease: timedelta

    def send(self, held: Claim) -> str:
        """Handles one claim; returns the DispatchSummary field it counts in."""
        store, tenant_id, run = self.store, held.tenant_id, self.flow_run_id
        moment = self.now or utcnow()
        name = held.payload.get("sequence")
        if not isinstance(name, str) or name not in self.sequences:
            park(store, held, reason=f"sequence {name!r} is not in the sequences file")
            return "failed"
        configured = self.sequences[name].steps[FIRST_STEP - 1]

        enrolment = self._enrolment(held, name, moment)
        if enrolment is None:
            # Deleting a lead deletes its outbox rows: nothing is owed, and
            # the claim is gone with its row.
            return "settled"
        step_id, status = enrolment.step_id, enrolment.status
        recipient, unsubscribed = enrolment.recipient, enrolment.unsubscribed

        # Only a run that still holds the claim may act on its step: a slow run
        # whose lease ran out and was taken over must neither send beside the
        # new holder nor settle a step the new holder is sending. Renewing the
        # lease also keeps a long batch's later claims alive.
        if not extend(store, held, self.lease, moment):
            return "contended"
        if status in SETTLED:
            complete(store, held, moment)
            return "settled"
        if status is StepStatus.SENDING:
            # Its sender died mid-send. Where the outbox can tell whether that
            # message arrived, the step is settled by the answer; only where
            # it cannot is it parked `unknown` (never sent twice).
            found = self._was_delivered(enrolment.message_id)
            if found is None:
                parked = park_unknown(store, tenant_id, step_id, flow_run_id=run)
                complete(store, held, moment)
                return "unknown" if parked else "settled"
            if found:
                mark_sent(
                    store,
                    tenant_id,
                    step_id,
                    template=configured.template,
                    message_id=str(enrolment.message_id),
                    flow_run_id=run,
                    now=moment,
                )
                complete(store, held, moment)
                return "sent"
            revert_to_pending(
                store,
                tenant_id,
                step_id,
                error="its sender died before handing it over",
            )
        if not recipient or unsubscribed:
            reason = "unsubscribed" if unsubscribed else "missing_email"
            skipped = mark_skipped(
                store, tenant_id, step_id, reason=reason, flow_run_id=run
            )
            complete(store, held, moment)
            return "skipped" if skipped else "settled"

        # Made before the step is marked `sending`, so a template that fails
        # leaves a step that provably went nowhere.
        try:
            rendered = self.renderer.render(
                configured.template, configured.subject, enrolment.fields
            )
            message = build_message(
                rendered, sender=self.sender_address, recipient=recipient, now=moment
            )
        except EmailRenderError as exc:
            mark_failed(store, tenant_id, step_id, reason=str(exc), flow_run_id=run)
            park(store, held, reason=str(exc))
            return "failed"

        if not begin_sending(
            store,
            tenant_id,
            step_id,
            flow_run_id=run,
            message_id=str(message["Message-ID"]),
        ):
            # Another run holds the step. Our claim stays until its lease runs
            # out; whichever run takes the row next sees how the step ended.
            return "contended"
        try:
            message_id = self.outbox.send(message)
        except EmailDeliveryError as exc:
            # Only this error promises nothing went out; any other leaves the
            # step `sending`, to be parked `unknown` rather than sent twice.
            revert_to_pending(store, tenant_id, step_id, error=str(exc))
            release(store, held, error=str(exc), retry_at=moment + RETRY_DELAY)
            return "requeued"
        mark_sent(
            store,
            tenant_id,
            step_id,
            template=configured.template,
            message_id=message_id,
            flow_run_id=run,
            now=moment,
        )
        complete(store, held, moment)
        return "sent"

    def _was_delivered(self, message_id: str | None) -> bool | None:
        if message_id is None:
            return None
        ask = getattr(self.outbox, "delivered", None)
        return ask(message_id) if ask is not None else None

    def _enrolment(
        self, held: Claim, sequence: str, moment: datetime
    ) -> _Enrolment | None:
        """The lead's step, created if new, and its details; None without a lead."""
        with self.store.write(held.tenant_id) as scope:
            lead = scope.get(Lead, held.lead_id)
            if lead is None:
                return None
            step = ensure_step(scope, lead.id, sequence, FIRST_STEP, due_at=moment)
            return _Enrolment(
                step_id=step.id,
                status=StepStatus(step.status),
                message_id=step.message_id,
                recipient=lead.email_display or lead.email,
                unsubscribed=lead.status == "unsubscribed",
                fields=template_fields(lead),
            )


# Sending is a side effect: never cached, never retried by Prefect. A failed
# send is released back to the outbox with a delay, and a later run retries it.
@task(name="send sequence steps", cache_policy=NO_CACHE, retries=0)
def send_sequence_steps(
    claims: list[Claim], *, store: Store, context: Mapping[str, Any]
) -> dict[str, int]:
    """Runs `dispatch_claims` on one batch; returns its counts (no personal data)."""
    return dispatch_claims(store, claims, **context).as_counts()
