"""The e-mail ledger: what a fault case owed in sequence e-mail, against what arrived.

After a fault and a catch-up, every step that was due must be accounted for:

- `sent`: exactly one message with the step's Message-ID reached the relay,
  to the lead's address (compared case-blind, as ASCII), and the lead's
  timeline has exactly one `email.sent` for it, naming that message;
- `unknown` (its sender died mid-send), `skipped` or `failed`: settled with
  the reason in the step's `error`; an `unknown` step reached the relay at
  most once, a skipped or failed one never.

And nothing is left unexplained: no message the relay got that no step names
(a step sent twice under two Message-IDs leaves one of them nameless), no
Message-ID received twice, no step still `sending`, no step due and `pending`,
no enrolment still claimed or due and untouched.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select

from leads.store import Store
from leads.store.outbox import SEQUENCE_ENROLMENT
from leads.store.tables import Lead, OutboxItem, SequenceStep, TimelineEvent
from tests.faults.email_relay import Received

# (lead id, sequence, step id in the configuration)
StepKey = tuple[str, str, str]

EXPLAINED = frozenset({"unknown", "skipped", "failed"})
# Shown in a failure; the rest are counted.
SHOWN_PROBLEMS = 25


@dataclass
class EmailLedger:
    """How every step ended, what the relay got, and what does not add up."""

    statuses: dict[StepKey, str] = field(default_factory=dict)
    messages: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        """How many steps ended in `status`."""
        return sum(1 for value in self.statuses.values() if value == status)

    def assert_clean(self) -> None:
        """Fails listing the problems, if there are any."""
        if self.problems:
            shown = "\n".join(self.problems[:SHOWN_PROBLEMS])
            more = len(self.problems) - SHOWN_PROBLEMS
            raise AssertionError(
                f"the e-mail ledger does not add up ({len(self.problems)} problems; "
                f"steps by status {dict(Counter(self.statuses.values()))}, "
                f"{sum(self.messages.values())} messages):\n{shown}"
                + (f"\n… and {more} more" if more > 0 else "")
            )


@dataclass(frozen=True)
class _Step:
    lead_id: str
    sequence: str
    step_key: str
    status: str
    due_at: datetime
    message_id: str | None
    error: str | None
    address: str | None

    @property
    def key(self) -> StepKey:
        return (self.lead_id, self.sequence, self.step_key)


def read_ledger(
    store: Store,
    received: Iterable[Received],
    due: Iterable[StepKey],
    *,
    now: datetime | None = None,
) -> EmailLedger:
    """Compares the store's steps and enrolments with the messages the relay got.

    Args:
        store: the lead store the dispatchers worked on.
        received: every message the relay received.
        due: the steps the case made due (each must be accounted for).
        now: the latest time any dispatcher's clock read; what is due by then
            must have been handled. The machine's clock when not given.
    """
    moment = now or datetime.now(UTC)
    steps, sent_events, enrolments = _read_store(store)
    ledger = EmailLedger()
    problems = ledger.problems

    # TODO(#8): one-off e-mails (`email_sends`) are not in the ledger yet; a
    # case that queues them would see their messages reported as no step's.
    by_id: dict[str, list[Received]] = defaultdict(list)
    for message in received:
        by_id[message.message_id].append(message)
        ledger.messages[message.message_id] += 1
    named = {step.message_id for step in steps if step.message_id}

    for message_id, copies in by_id.items():
        if len(copies) > 1:
            problems.append(
                f"message {message_id} to {copies[0].recipient} arrived "
                f"{len(copies)} times"
            )
        if message_id not in named:
            problems.append(
                f"message {message_id} to {copies[0].recipient} "
                f"({copies[0].subject!r}) is no step's: sent again under a new id?"
            )

    for step in steps:
        ledger.statuses[step.key] = step.status
        problems.extend(_step_problems(step, by_id, sent_events, moment))

    for key in due:
        if key not in ledger.statuses:
            problems.append(f"step {key} was due and never handled (no row)")

    for topic_key, status, available_at in enrolments:
        if status == "claimed":
            problems.append(f"enrolment {topic_key} is still claimed")
        elif status == "pending" and available_at <= moment:
            problems.append(f"enrolment {topic_key} is due and was never taken")
    return ledger


def _step_problems(
    step: _Step,
    by_id: dict[str, list[Received]],
    sent_events: dict[StepKey, list[str]],
    moment: datetime,
) -> list[str]:
    found: list[str] = []
    copies = by_id.get(step.message_id or "", [])
    events = sent_events.get(step.key, [])
    if step.status == "sent":
        if len(copies) != 1:
            found.append(f"step {step.key} is sent; {len(copies)} messages arrived")
        if events != [step.message_id]:
            found.append(
                f"step {step.key} is sent as {step.message_id}; its email.sent "
                f"events name {events}"
            )
        wrong = [c.recipient for c in copies if not _same_address(c, step.address)]
        if wrong:
            found.append(f"step {step.key} went to {wrong}, not the lead's address")
    elif step.status in EXPLAINED:
        if not step.error:
            found.append(f"step {step.key} is {step.status} without a reason")
        allowed = 1 if step.status == "unknown" else 0
        if len(copies) > allowed:
            found.append(
                f"step {step.key} is {step.status}; {len(copies)} messages arrived"
            )
        if events:
            found.append(f"step {step.key} is {step.status}; email.sent {events}")
    elif step.status == "sending":
        found.append(f"step {step.key} is still sending")
    elif step.status == "pending" and step.due_at <= moment:
        found.append(f"step {step.key} is pending, due since {step.due_at}")
    return found


def _same_address(message: Received, address: str | None) -> bool:
    return address is not None and message.recipient.lower() == address.lower()


def _read_store(
    store: Store,
) -> tuple[list[_Step], dict[StepKey, list[str]], list[tuple[str, str, datetime]]]:
    with store.read_across_tenants() as session:
        rows = session.execute(
            select(
                SequenceStep.lead_id,
                SequenceStep.sequence,
                SequenceStep.step_key,
                SequenceStep.status,
                SequenceStep.due_at,
                SequenceStep.message_id,
                SequenceStep.error,
                Lead.email,
            ).join(Lead, Lead.id == SequenceStep.lead_id)
        ).all()
        events = session.execute(
            select(TimelineEvent.lead_id, TimelineEvent.detail).where(
                TimelineEvent.kind == "email.sent"
            )
        ).all()
        enrolments = session.execute(
            select(OutboxItem.key, OutboxItem.status, OutboxItem.available_at).where(
                OutboxItem.topic == SEQUENCE_ENROLMENT
            )
        ).all()
    steps = [_Step(*row) for row in rows]
    sent_events: dict[StepKey, list[str]] = defaultdict(list)
    for lead_id, detail in events:
        detail = detail or {}
        key = (lead_id, str(detail.get("sequence")), str(detail.get("step_id")))
        sent_events[key].append(str(detail.get("message_id")))
    return steps, sent_events, [tuple(row) for row in enrolments]
