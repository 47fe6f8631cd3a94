"""Delivery events an e-mail provider reports: stored once, applied once.

Each event is matched to a lead by its id, else by the Message-ID of a
sequence step or one-off send, else by its address. A bounce, complaint,
unsubscribe or reply changes the lead (and the suppression list); deliveries,
deferrals and soft bounces are only recorded. An event id seen before is
acknowledged as a `duplicate` and changes nothing.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)
from pydantic_core import PydanticCustomError
from sqlalchemy import select

from leads.control_characters import has_control_characters
from leads.errors import FieldError
from leads.normalise import email_key
from leads.store import Store, outbox, timeline
from leads.store.database import TenantScope
from leads.store.inserts import insert_if_absent
from leads.store.leads import find_by_email, is_lead_id
from leads.store.tables import EmailEvent, EmailSend, Lead, SequenceStep, utcnow
from leads.suppression import (
    address_hash,
    record_bounce,
    record_complaint,
    suppress_hash,
    unsubscribe,
)

logger = logging.getLogger(__name__)

EventType = Literal[
    "bounced", "complained", "unsubscribed", "replied", "delivered", "deferred"
]
Outcome = Literal["applied", "duplicate", "no_such_recipient", "recorded"]
MAX_EVENTS = 500
SOURCE = "provider_event"
# The suppression each changing event adds (only hard bounces reach it).
_SUPPRESSES = {
    "bounced": "bounced",
    "complained": "complained",
    "unsubscribed": "unsubscribed",
}


def _one_line(value: str) -> str:
    # Ids are stored and compared as given: a control character in one is a
    # broken callback (and PostgreSQL cannot store a NUL at all).
    if has_control_characters(value):
        raise PydanticCustomError(
            "control_characters", "no line breaks or control characters allowed"
        )
    return value


Text255 = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255),
    AfterValidator(_one_line),
]


class EmailEventInput(BaseModel):
    """One event as the provider reports it."""

    model_config = ConfigDict(extra="forbid")

    id: Text255 = Field(description="The provider's id of the event, unique to it.")
    type: EventType
    occurred_at: AwareDatetime = Field(description="ISO 8601 with a zone.")
    lead_id: Annotated[str, StringConstraints(max_length=64)] | None = None
    email: Annotated[str, StringConstraints(max_length=320)] | None = Field(
        None, description="The recipient's address."
    )
    message_id: Text255 | None = Field(
        None, description="The Message-ID the e-mail was sent with."
    )
    bounce_type: Literal["hard", "soft"] | None = Field(
        None, description="Required with `bounced`: a hard bounce stops all e-mail."
    )

    @field_validator("email")
    @classmethod
    def _is_address(cls, email: str | None) -> str | None:
        if email is not None and email_key(email) is None:
            raise PydanticCustomError("invalid_email", "not a valid e-mail address")
        return email


def check_events(events: list[EmailEventInput]) -> list[FieldError]:
    """What the model alone cannot say is wrong, each naming `events.<index>.…`."""
    errors = []
    for index, event in enumerate(events):
        if not (event.lead_id or event.email or event.message_id):
            errors.append(
                FieldError(
                    f"events.{index}",
                    "missing_recipient",
                    "give `lead_id`, `email` or `message_id` to say whom it is about",
                )
            )
        try:
            event.occurred_at.astimezone(UTC)
        except OverflowError:
            errors.append(
                FieldError(
                    f"events.{index}.occurred_at",
                    "invalid_datetime",
                    "out of range once in UTC",
                )
            )
        if event.type == "bounced" and event.bounce_type is None:
            errors.append(
                FieldError(
                    f"events.{index}.bounce_type",
                    "required",
                    "a bounce must say `hard` (the mailbox refuses for good) or `soft`",
                )
            )
    return errors


@dataclass(frozen=True)
class EventOutcome:
    """What became of one event, by its place in the request."""

    index: int
    id: str
    outcome: Outcome
    lead_id: str | None


def apply_events(
    store: Store, tenant_id: str, events: Iterable[EmailEventInput]
) -> list[EventOutcome]:
    """Stores and applies each event in its own transaction, in the order given.

    One transaction each, so no two leads are ever locked by one transaction
    (no deadlock between concurrent callbacks), and an event is stored exactly
    when its effects are.

    Returns:
        One outcome per event, in input order.
    """
    outcomes = []
    for index, event in enumerate(events):
        with store.write(tenant_id) as scope:
            outcome, lead_id = _apply(scope, event)
        outcomes.append(EventOutcome(index, event.id, outcome, lead_id))
    counts = Counter(outcome.outcome for outcome in outcomes)
    logger.info("Took %d e-mail events: %s", len(outcomes), dict(counts))
    return outcomes


def _apply(scope: TenantScope, event: EmailEventInput) -> tuple[Outcome, str | None]:
    lead, address, sent_to = _recipient(scope, event)
    occurred_at = event.occurred_at.astimezone(UTC)
    hard_bounce = event.type == "bounced" and event.bounce_type == "hard"
    changes = hard_bounce or event.type in ("complained", "unsubscribed", "replied")
    outcome: Outcome = (
        "no_such_recipient" if lead is None else "applied" if changes else "recorded"
    )
    stored = insert_if_absent(
        scope,
        EmailEvent,
        {
            "event_id": event.id,
            "kind": event.type,
            "lead_id": lead.id if lead is not None else None,
            "address_hash": sent_to,
            "message_id": event.message_id,
            "occurred_at": occurred_at,
            "received_at": utcnow(),
            "outcome": outcome,
            "detail": {"bounce_type": event.bounce_type} if event.bounce_type else {},
        },
    )
    if stored is None:
        return "duplicate", lead.id if lead is not None else None
    if not changes:
        return outcome, lead.id if lead is not None else None

    reason = _SUPPRESSES.get(event.type)
    current = address_hash(lead.email) if lead is not None and lead.email else None
    elsewhere = sent_to is not None and sent_to != current
    if reason is not None and elsewhere:
        # The address the e-mail went to stops getting it, also when it is
        # no lead's (any more): the lead's own is handled below.
        assert sent_to is not None
        suppress_hash(
            scope,
            address_hash=sent_to,
            reason=reason,
            lead_id=lead.id if lead is not None else None,
            source=SOURCE,
        )
    if lead is None:
        return outcome, None

    if hard_bounce:
        if not elsewhere:
            # A bounce of an address the lead has since left says nothing
            # of the one it has now.
            record_bounce(scope, lead, source=SOURCE, at=occurred_at)
    elif event.type == "complained":
        record_complaint(scope, lead, source=SOURCE, at=occurred_at)
    elif event.type == "unsubscribed":
        unsubscribe(scope, lead, source=SOURCE, at=occurred_at)
    else:
        _record_reply(scope, lead, occurred_at)
    return outcome, lead.id


def _record_reply(scope: TenantScope, lead: Lead, occurred_at: datetime) -> None:
    state = dict(lead.email_state or {})
    stored = state.get("replied_at")
    moment = occurred_at.isoformat()
    if not isinstance(stored, str) or _later(moment, stored):
        lead.email_state = state | {"replied_at": moment}
    outbox.wake_enrolments(scope, lead.id)
    timeline.record(
        scope,
        lead,
        "email.replied",
        source=SOURCE,
        detail={"occurred_at": moment},
    )


def _later(moment: str, stored: str) -> bool:
    try:
        return datetime.fromisoformat(moment) > datetime.fromisoformat(stored)
    except ValueError:
        return True


def _recipient(
    scope: TenantScope, event: EmailEventInput
) -> tuple[Lead | None, str | None, str | None]:
    """The lead the event is about (locked), the address it went to, its hash.

    A sequence step keeps only the hash of the address it went to, so for an
    event found by a step's Message-ID the address is None and the hash says
    which address it was.
    """
    lead, address, sent_to = None, event.email, None
    if event.lead_id and is_lead_id(event.lead_id):
        lead = scope.get(Lead, event.lead_id, lock=True)
    if lead is None and event.message_id:
        lead_id, recipient, sent_to = _by_message_id(
            scope, _bracketed(event.message_id)
        )
        if lead_id is not None:
            lead = scope.get(Lead, lead_id, lock=True)
        address = address or recipient
    if lead is None and event.email:
        key = email_key(event.email)
        lead = find_by_email(scope, key, lock=True) if key else None
    if address is None and sent_to is None and lead is not None:
        address = lead.email
    if address is not None:
        sent_to = address_hash(address)
    return lead, address, sent_to


def _by_message_id(
    scope: TenantScope, message_id: str
) -> tuple[str | None, str | None, str | None]:
    """The lead, bare address and address hash the message with this id went to."""
    step = scope.session.execute(
        select(SequenceStep.lead_id, SequenceStep.recipient_hash)
        .where(
            SequenceStep.message_id == message_id,
            SequenceStep.tenant_id == scope.tenant_id,
        )
        .limit(1)
    ).first()
    if step is not None:
        return step.lead_id, None, step.recipient_hash
    send = scope.session.execute(
        select(EmailSend.lead_id, EmailSend.recipient)
        .where(
            EmailSend.message_id == message_id,
            EmailSend.tenant_id == scope.tenant_id,
        )
        .limit(1)
    ).first()
    if send is None:
        return None, None, None
    return send.lead_id, send.recipient, None


def _bracketed(message_id: str) -> str:
    # Providers report the id with or without its angle brackets; it is
    # stored as the header carries it, with them.
    text = message_id.strip()
    return text if text.startswith("<") else f"<{text.strip('<>')}>"
