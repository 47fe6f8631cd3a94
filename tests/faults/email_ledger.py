"""The e-mail ledger: what a fault case owed in e-mail, against what arrived.

After a fault and a catch-up, every step that was due must be accounted for:

- `sent`: exactly one message with the step's Message-ID reached the relay,
  to the lead's address (compared case-blind, as ASCII), and the lead's
  timeline has exactly one `email.sent` for it, naming that message;
- `unknown` (its sender died mid-send), `skipped` or `failed`: settled with
  the reason in the step's `error`; an `unknown` step reached the relay at
  most once, a skipped or failed one never.

One-off e-mails (`email_sends`) are held to the same: `sent` arrived exactly
once, to its address (the lead's, or the one it was sent to); `unknown` at
most once, with its reason; `failed` or `refused` never, with its reason.

And nothing is left unexplained: no message the relay got that no step or
one-off names (a step sent twice under two Message-IDs leaves one of them
nameless), no Message-ID received twice, no step or one-off still `sending`,
no step due and `pending`, no enrolment or one-off's outbox row still claimed
or due and untouched.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select

from leads.email_sends import EMAIL_SEND
from leads.store import Store
from leads.store.outbox import SEQUENCE_ENROLMENT
from leads.store.tables import EmailSend, Lead, OutboxItem, SequenceStep, TimelineEvent
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
    # One-off e-mails' statuses by send id.
    sends: dict[str, str] = field(default_factory=dict)
    messages: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        """How many steps ended in `status`."""
        return sum(1 for value in self.statuses.values() if value == status)

    def count_sends(self, status: str) -> int:
        """How many one-off e-mails ended in `status`."""
        return sum(1 for value in self.sends.values() if value == status)

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


@dataclass(frozen=True)
class _Send:
    id: str
    status: str
    message_id: str | None
    error: str | None
    address: str | None


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
    sends = _read_sends(store)
    ledger = EmailLedger()
    problems = ledger.problems

    by_id: dict[str, list[Received]] = defaultdict(list)
    for message in received:
        by_id[message.message_id].append(message)
        ledger.messages[message.message_id] += 1
    named = {step.message_id for step in steps if step.message_id}
    named |= {send.message_id for send in sends if send.message_id}

    for message_id, copies in by_id.items():
        if len(copies) > 1:
            problems.append(
                f"message {message_id} to {copies[0].recipient} arrived "
                f"{len(copies)} times"
            )
        if message_id not in named:
            problems.append(
                f"message {message_id} to {copies[0].recipient} "
                f"({copies[0].subject!r}) is no step's or one-off's: sent again "
                "under a new id?"
            )

    for step in steps:
        ledger.statuses[step.key] = step.status
        problems.extend(_step_problems(step, by_id, sent_events, moment))

    for key in due:
        if key not in ledger.statuses:
            problems.append(f"step {key} was due and never handled (no row)")

    for send in sends:
        ledger.sends[send.id] = send.status
        problems.extend(_send_problems(send, by_id))

    for topic, topic_key, status, available_at in enrolments:
        what = "enrolment" if topic == SEQUENCE_ENROLMENT else "one-off's outbox row"
        if status == "claimed":
            problems.append(f"{what} {topic_key} is still claimed")
        elif status == "pending" and available_at <= moment:
            problems.append(f"{what} {topic_key} is due and was never taken")
    return ledger


def _send_problems(send: _Send, by_id: dict[str, list[Received]]) -> list[str]:
    found: list[str] = []
    copies = by_id.get(send.message_id or "", [])
    if send.status == "sent":
        if len(copies) != 1:
            found.append(f"one-off {send.id} is sent; {len(copies)} messages arrived")
        wrong = [c.recipient for c in copies if not _same_address(c, send.address)]
        if wrong:
            found.append(f"one-off {send.id} went to {wrong}, not {send.address}")
    elif send.status in ("unknown", "failed", "refused"):
        if not send.error:
            found.append(f"one-off {send.id} is {send.status} without a reason")
        allowed = 1 if send.status == "unknown" else 0
        if len(copies) > allowed:
            found.append(
                f"one-off {send.id} is {send.status}; {len(copies)} messages arrived"
            )
    elif send.status == "sending":
        found.append(f"one-off {send.id} is still sending")
    elif copies:
        found.append(f"one-off {send.id} is {send.status}; {len(copies)} arrived")
    return found


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
) -> tuple[list[_Step], dict[StepKey, list[str]], list[tuple[str, str, str, datetime]]]:
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
            select(
                OutboxItem.topic,
                OutboxItem.key,
                OutboxItem.status,
                OutboxItem.available_at,
            ).where(OutboxItem.topic.in_([SEQUENCE_ENROLMENT, EMAIL_SEND]))
        ).all()
    steps = [_Step(*row) for row in rows]
    sent_events: dict[StepKey, list[str]] = defaultdict(list)
    for lead_id, detail in events:
        detail = detail or {}
        key = (lead_id, str(detail.get("sequence")), str(detail.get("step_id")))
        sent_events[key].append(str(detail.get("message_id")))
    return steps, sent_events, [tuple(row) for row in enrolments]


def _read_sends(store: Store) -> list[_Send]:
    """Every one-off e-mail, with the address it was for."""
    with store.read_across_tenants() as session:
        rows = session.execute(
            select(
                EmailSend.id,
                EmailSend.status,
                EmailSend.message_id,
                EmailSend.error,
                func.coalesce(EmailSend.recipient, Lead.email),
            ).outerjoin(Lead, Lead.id == EmailSend.lead_id)
        ).all()
    return [_Send(*row) for row in rows]
