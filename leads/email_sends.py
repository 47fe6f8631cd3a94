"""One-off e-mails: accepting them, and moving each through its sending states.

A send is accepted in one transaction with its outbox row (topic `email_send`)
and, for a lead, an `email.queued` timeline event; the one-off flow sends it
later. Every state move is a conditional UPDATE from the states it may start
in, so of two runs racing for one send exactly one moves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.exc import IntegrityError

from leads.errors import FieldError, LeadError, LeadRejected
from leads.store import outbox, timeline
from leads.store.database import Store, TenantScope
from leads.store.leads import get_lead
from leads.store.moves import move_if_in
from leads.store.tables import EmailSend, Lead, OutboxItem, utcnow
from leads.suppression import blocked_reason

EMAIL_SEND = "email_send"
SOURCE = "one_off"
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


class SendStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    UNKNOWN = "unknown"
    FAILED = "failed"
    REFUSED = "refused"


# Nothing more happens to these without a person.
SETTLED = (SendStatus.SENT, SendStatus.UNKNOWN, SendStatus.FAILED, SendStatus.REFUSED)


class SendRefused(LeadError):
    """The recipient may not get an e-mail of this category (suppressed)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"the recipient cannot be sent this e-mail: {reason}")


class IdempotencyConflict(LeadError):
    """An idempotency key already names a send with a different request."""

    def __init__(self, send_id: str) -> None:
        self.send_id = send_id
        super().__init__(
            f"this Idempotency-Key was used for send {send_id} with another body; "
            "use a new key for a new e-mail"
        )


@dataclass(frozen=True)
class SendRequest:
    """A one-off e-mail as a caller asked for it, already checked by the caller.

    `recipient` is set for a bare address and `lead_id` for a lead, never both.
    `template` is set, or `text` (with `html` optional), never both; `subject`
    is plain text either way.
    """

    category: str
    subject: str
    lead_id: str | None = None
    recipient: str | None = None
    template: str | None = None
    text: str | None = None
    html: str | None = None
    idempotency_key: str | None = None

    def matches(self, send: EmailSend) -> bool:
        """Whether `send` was accepted from this very request."""
        return (
            send.category,
            send.subject,
            send.lead_id,
            send.recipient,
            send.template,
            send.body_text,
            send.body_html,
        ) == (
            self.category,
            self.subject,
            self.lead_id,
            self.recipient,
            self.template,
            self.text,
            self.html,
        )


@dataclass(frozen=True)
class Accepted:
    """The stored send, and whether it was stored earlier under the same key."""

    send: EmailSend
    replayed: bool


def template_fields(lead: Lead | None, address: str | None = None) -> dict[str, Any]:
    """The lead's fields templates may use, each present (None when empty).

    For a bare address every field is None but the address itself.
    """
    if lead is None:
        fields: dict[str, Any] = dict.fromkeys(TEMPLATE_FIELDS)
        fields.update(email=address, email_display=address, custom={})
        return fields
    fields = {name: getattr(lead, name) for name in TEMPLATE_FIELDS}
    fields["custom"] = dict(lead.custom or {})
    return fields


def accept(
    store: Store, tenant_id: str, request: SendRequest, *, message_id: str
) -> Accepted:
    """Stores the send, its outbox row and its timeline event in one transaction.

    A request carrying an idempotency key already used returns the send stored
    under it, and stores nothing new.

    Args:
        store: the lead store.
        tenant_id: the caller's tenant.
        request: the e-mail asked for.
        message_id: the Message-ID the message will carry, made now so the
            caller can be told it.

    Raises:
        LeadNotFound: no such lead in the tenant.
        LeadRejected: the lead has no e-mail address.
        SendRefused: the recipient is suppressed for this category.
        IdempotencyConflict: the key names a send of another request.
    """
    with store.write(tenant_id) as scope:
        if request.idempotency_key is not None:
            earlier = _by_key(scope, request.idempotency_key)
            if earlier is not None:
                return _replay(request, earlier)

        lead = None
        if request.lead_id is not None:
            lead = get_lead(scope, request.lead_id)
            if not lead.email:
                raise LeadRejected(
                    [FieldError("lead_id", "missing_email", "the lead has no e-mail")]
                )
        reason = blocked_reason(
            scope, lead=lead, address=request.recipient, category=request.category
        )
        if reason is not None:
            raise SendRefused("lead_id" if lead is not None else "to", reason)

        send = EmailSend(
            lead_id=request.lead_id,
            recipient=request.recipient,
            category=request.category,
            template=request.template,
            subject=request.subject,
            body_text=request.text,
            body_html=request.html,
            status=SendStatus.PENDING,
            message_id=message_id,
            idempotency_key=request.idempotency_key,
        )
        try:
            with scope.session.begin_nested():
                scope.add(send)
        except IntegrityError:
            # The same key from a concurrent request, committed after our read.
            assert request.idempotency_key is not None
            earlier = _by_key(scope, request.idempotency_key)
            if earlier is None:
                raise
            return _replay(request, earlier)

        payload = {"send_id": send.id}
        if lead is not None:
            outbox.enqueue(
                scope, EMAIL_SEND, lead, key=send.id, payload=payload, requeue=False
            )
            _record(scope, send, "email.queued", None)
        else:
            scope.add(
                OutboxItem(topic=EMAIL_SEND, key=send.id, lead_id=None, payload=payload)
            )
        return Accepted(send, replayed=False)


def _by_key(scope: TenantScope, key: str) -> EmailSend | None:
    query = scope.select(EmailSend).where(EmailSend.idempotency_key == key)
    return scope.session.scalars(query).one_or_none()


def _replay(request: SendRequest, earlier: EmailSend) -> Accepted:
    if not request.matches(earlier):
        raise IdempotencyConflict(earlier.id)
    return Accepted(earlier, replayed=True)


def begin_sending(scope: TenantScope, send_id: str, *, flow_run_id: str | None) -> bool:
    """Marks a pending send `sending`, just before its message is handed over.

    Returns:
        True for the one caller who may now send it.
    """
    moved = _move(
        scope,
        send_id,
        (SendStatus.PENDING,),
        status=SendStatus.SENDING,
        flow_run_id=flow_run_id,
    )
    return moved is not None


def mark_sent(
    scope: TenantScope,
    send_id: str,
    *,
    message_id: str,
    flow_run_id: str | None,
    now: datetime | None = None,
) -> bool:
    """Records that the message went out, with `email.sent` on a lead's timeline.

    A send parked `unknown` meanwhile becomes `sent` too: its sender was slow.
    """
    row = _move(
        scope,
        send_id,
        (SendStatus.SENDING, SendStatus.UNKNOWN),
        status=SendStatus.SENT,
        sent_at=now or utcnow(),
        message_id=message_id,
        flow_run_id=flow_run_id,
        error=None,
    )
    if row is None:
        return False
    _record(scope, row, "email.sent", flow_run_id, message_id=message_id)
    return True


def revert_to_pending(scope: TenantScope, send_id: str, *, error: str) -> bool:
    """Puts a `sending` send back to `pending` when nothing provably went out."""
    row = _move(
        scope, send_id, (SendStatus.SENDING,), status=SendStatus.PENDING, error=error
    )
    return row is not None


def mark_unknown(
    scope: TenantScope, send_id: str, *, reason: str, flow_run_id: str | None
) -> bool:
    """Parks a `sending` send as `unknown`: it may have gone, so it never goes again."""
    row = _move(
        scope, send_id, (SendStatus.SENDING,), status=SendStatus.UNKNOWN, error=reason
    )
    if row is None:
        return False
    _record(scope, row, "email.unknown", flow_run_id)
    return True


def mark_failed(
    scope: TenantScope, send_id: str, *, reason: str, flow_run_id: str | None
) -> bool:
    """Ends a send that did not go out and cannot by retrying as `failed`."""
    row = _move(
        scope,
        send_id,
        (SendStatus.PENDING, SendStatus.SENDING),
        status=SendStatus.FAILED,
        error=reason,
        flow_run_id=flow_run_id,
    )
    if row is None:
        return False
    _record(scope, row, "email.failed", flow_run_id, reason=reason)
    return True


def mark_refused(
    scope: TenantScope, send_id: str, *, reason: str, flow_run_id: str | None
) -> bool:
    """Ends a pending send whose recipient became suppressed as `refused`."""
    row = _move(
        scope,
        send_id,
        (SendStatus.PENDING,),
        status=SendStatus.REFUSED,
        error=reason,
        flow_run_id=flow_run_id,
    )
    if row is None:
        return False
    _record(scope, row, "email.refused", flow_run_id, reason=reason)
    return True


def _move(
    scope: TenantScope, send_id: str, sources: tuple[SendStatus, ...], **values: Any
) -> Any:
    """Updates the send if it is in one of `sources`; None when it was not."""
    return move_if_in(scope, EmailSend, send_id, sources, values)


def _record(
    scope: TenantScope,
    send: EmailSend,
    kind: str,
    flow_run_id: str | None,
    **detail: Any,
) -> None:
    """Adds the event to the timeline of the send's lead (a bare address has none)."""
    lead = scope.get(Lead, send.lead_id) if send.lead_id else None
    if lead is None:
        return
    timeline.record(
        scope,
        lead,
        kind,
        source=SOURCE,
        detail={
            "send_id": send.id,
            "category": send.category,
            "template": send.template,
            **detail,
        },
        flow_run_id=flow_run_id,
    )
