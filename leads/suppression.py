"""The suppression list: addresses e-mail may no longer go to, and why.

Entries are kept by a hash of the normalised address, so they outlive the
person's erasure without keeping the address itself. An unsubscribe or a
complaint stops marketing e-mail; a hard bounce stops every e-mail, since the
mailbox is gone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import bindparam, select

from leads.matching import address_digest
from leads.normalise import email_key
from leads.store import audit, outbox, timeline
from leads.store.database import TenantScope
from leads.store.inserts import insert_if_absent
from leads.store.leads import find_by_email
from leads.store.tables import EmailSuppression, Lead, utcnow

Reason = Literal["unsubscribed", "complained", "bounced", "manual"]
Category = Literal["marketing", "transactional"]
REASONS: tuple[Reason, ...] = ("unsubscribed", "complained", "bounced", "manual")
CATEGORIES: tuple[Category, ...] = ("marketing", "transactional")
# A bounced mailbox takes nothing at all; the other reasons are the person's
# wish not to be marketed to, and leave room for receipts and confirmations.
SCOPE_ALL = "all"
SCOPE_MARKETING = "marketing"
# Which suppression a blocked send is reported by when an address has several:
# the mailbox being gone outweighs the person's wishes.
_PRECEDENCE = {"bounced": 0, "complained": 1, "unsubscribed": 2}


def address_hash(address: str) -> str:
    """The SHA-256 hex digest of the address's normalised key (`email_key`).

    Raises:
        ValueError: the text is not an e-mail address.
    """
    key = email_key(address)
    if key is None:
        raise ValueError("not an e-mail address, so it has no suppression key")
    return _digest(key)


def scope_of(reason: str) -> str:
    """Which e-mail a suppression for `reason` stops: `all` or `marketing`."""
    if reason not in REASONS:
        raise ValueError(f"suppression reason must be one of {REASONS}, not {reason!r}")
    return SCOPE_ALL if reason == "bounced" else SCOPE_MARKETING


def suppress(
    scope: TenantScope,
    *,
    address: str,
    reason: str,
    lead_id: str | None,
    source: str | None,
) -> bool:
    """Adds the address to the tenant's suppression list for `reason`, once.

    Args:
        scope: the tenant's open write transaction.
        address: the address, in any spelling of it.
        reason: `unsubscribed`, `complained`, `bounced` or `manual`; a bounce
            stops every e-mail, the others stop marketing.
        lead_id: the lead it was made for, kept for the record only.
        source: where it came from (`unsubscribe_page`, `provider_event`, …).

    Returns:
        True when the entry is new; False when the address had it already.

    Raises:
        ValueError: the address is not an e-mail address, or the reason is
            unknown.
    """
    return suppress_hash(
        scope,
        address_hash=address_hash(address),
        reason=reason,
        lead_id=lead_id,
        source=source,
    )


def suppress_hash(
    scope: TenantScope,
    *,
    address_hash: str,
    reason: str,
    lead_id: str | None,
    source: str | None,
) -> bool:
    """`suppress` for an address known only by its hash (a one-off's link).

    Returns:
        True when the entry is new; False when the address had it already.
    """
    inserted = insert_if_absent(
        scope,
        EmailSuppression,
        {
            "address_hash": address_hash,
            "reason": reason,
            "scope": scope_of(reason),
            "lead_id": lead_id,
            "source": source[:255] if source else None,
            "created_at": utcnow(),
        },
    )
    if inserted is not None:
        audit.append_decision(
            scope.session,
            scope.tenant_id,
            "email.suppressed",
            "lead" if lead_id else "suppression",
            lead_id or str(inserted),
            {"suppression_id": inserted, "reason": reason, "source": source},
        )
    return inserted is not None


# Built once (a dispatcher asks before every e-mail): what stops marketing,
# and what stops every e-mail.
_MARKETING_BLOCKS = select(EmailSuppression.reason).where(
    EmailSuppression.address_hash == bindparam("address_hash"),
    EmailSuppression.tenant_id == bindparam("tenant_id"),
)
_EVERY_BLOCK = _MARKETING_BLOCKS.where(EmailSuppression.scope == SCOPE_ALL)


def blocked_reason(
    scope: TenantScope,
    *,
    lead: Lead | None,
    address: str | None,
    category: str,
) -> str | None:
    """Why an e-mail of `category` may not go to this lead or address; None if it may.

    Marketing is stopped by the lead's own opt-out (an unsubscribe or a
    complaint), its `unsubscribed` status, the CRM's opt-out, or any
    suppression of the address; transactional e-mail only by a hard bounce.
    A bare address is checked as the lead it belongs to, if any. Asks the
    store once for a lead, twice for a bare address. A `manual` suppression reads as
    `unsubscribed`: someone recorded the person's wish on their behalf.

    Args:
        scope: the tenant's open transaction.
        lead: the lead the e-mail is for, if any.
        address: the address it goes to; the lead's when not given.
        category: `marketing` or `transactional`.

    Returns:
        `unsubscribed`, `complained` or `bounced`; None when nothing stops it.

    Raises:
        ValueError: an unknown category.
    """
    if category not in CATEGORIES:
        raise ValueError(f"category must be one of {CATEGORIES}, not {category!r}")
    marketing = category == "marketing"
    if marketing and lead is None and address is not None:
        # A bare address that is a lead's is that lead: its own opt-out (set
        # in the CRM, or on a lead merged into it) holds for the address too.
        key = email_key(address)
        lead = find_by_email(scope, key) if key else None
    if marketing and lead is not None:
        if lead.email_opt_out:
            complained = "complained_at" in (lead.email_state or {})
            return "complained" if complained else "unsubscribed"
        if lead.status == "unsubscribed" or (lead.crm_state or {}).get("opted_out"):
            return "unsubscribed"

    recipient = address if address is not None else (lead.email if lead else None)
    key = email_key(recipient) if recipient else None
    if key is None:
        return None
    query = _MARKETING_BLOCKS if marketing else _EVERY_BLOCK
    found = scope.session.scalars(
        query, {"address_hash": _digest(key), "tenant_id": scope.tenant_id}
    )
    reasons = [_PRECEDENCE.get(reason, 2) for reason in found]
    if not reasons:
        return None
    best = min(reasons)
    return next(name for name, rank in _PRECEDENCE.items() if rank == best)


def unsubscribe(
    scope: TenantScope, lead: Lead, *, source: str, at: datetime | None = None
) -> bool:
    """Stops marketing e-mail to the lead at its own request, and tells the CRM.

    Sets the lead's opt-out and `email_state.unsubscribed_at`, adds its address
    to the suppression list, records `email.unsubscribed` on the timeline and
    owes the lead a CRM sync, so the CRM's opt-out follows. The lead's row is
    locked first, so two clicks at once record one unsubscribe.

    Args:
        scope: the tenant's open write transaction.
        lead: the lead, loaded in this transaction.
        source: how the request came (`one_click`, `unsubscribe_page`,
            `provider_event`, …); goes on the timeline.
        at: when the person asked, aware; now when not given.

    Returns:
        True when the lead is newly unsubscribed; False when it already was
        (nothing is recorded twice).
    """
    moment = _iso(at)
    _lock(scope, lead)
    if lead.email:
        suppress(
            scope,
            address=lead.email,
            reason="unsubscribed",
            lead_id=lead.id,
            source=source,
        )
    state = dict(lead.email_state or {})
    if lead.email_opt_out and "unsubscribed_at" in state:
        return False

    lead.email_opt_out = True
    lead.email_state = state | {"unsubscribed_at": moment}
    timeline.record(
        scope, lead, "email.unsubscribed", source=source, detail={"source": source}
    )
    audit.append_decision(
        scope.session,
        scope.tenant_id,
        "lead.unsubscribed",
        "lead",
        lead.id,
        {"source": source},
    )
    _owe_crm_sync(scope, lead)
    return True


def record_complaint(
    scope: TenantScope, lead: Lead, *, source: str, at: datetime | None = None
) -> bool:
    """Stops marketing e-mail to a lead who reported one as spam, and tells the CRM.

    Like `unsubscribe`, with the `complained` suppression and
    `email_state.complained_at`, and `email.complained` on the timeline.

    Returns:
        True when the complaint is new; False when the lead had complained
        already (nothing is recorded twice).
    """
    moment = _iso(at)
    _lock(scope, lead)
    new = True
    if lead.email:
        new = suppress(
            scope,
            address=lead.email,
            reason="complained",
            lead_id=lead.id,
            source=source,
        )
    state = dict(lead.email_state or {})
    if not new and lead.email_opt_out and "complained_at" in state:
        return False

    lead.email_opt_out = True
    lead.email_state = state | {
        "complained_at": _newest(state, "complained_at", moment)
    }
    timeline.record(
        scope, lead, "email.complained", source=source, detail={"source": source}
    )
    _owe_crm_sync(scope, lead)
    return True


def record_bounce(
    scope: TenantScope, lead: Lead, *, source: str, at: datetime | None = None
) -> bool:
    """Stops every e-mail to the lead's address after its mailbox refused one for good.

    Adds the `bounced` suppression (scope `all`), sets `email_state.bounced_at`
    and records `email.bounced` on the timeline. The opt-out is left alone: it
    is the person's wish, and a new address of theirs may take mail again.

    Returns:
        True when the bounce is new for this address; False when it was
        suppressed as bounced already (no second timeline event).
    """
    moment = _iso(at)
    new = False
    if lead.email:
        new = suppress(
            scope,
            address=lead.email,
            reason="bounced",
            lead_id=lead.id,
            source=source,
        )
    state = dict(lead.email_state or {})
    newest = _newest(state, "bounced_at", moment)
    if state.get("bounced_at") != newest:
        lead.email_state = state | {"bounced_at": newest}
    if not new:
        return False
    outbox.wake_enrolments(scope, lead.id)
    timeline.record(
        scope, lead, "email.bounced", source=source, detail={"source": source}
    )
    return True


def _digest(key: str) -> str:
    digest = address_digest(key)
    assert digest is not None, "an address key is never empty"
    return digest


def _lock(scope: TenantScope, lead: Lead) -> None:
    """Re-reads the lead under a row lock, keeping the caller's changes."""
    # Flushed first: the refresh reloads the row and would drop what the
    # caller changed but had not written yet.
    scope.session.flush()
    scope.session.refresh(lead, with_for_update=True)


def _owe_crm_sync(scope: TenantScope, lead: Lead) -> None:
    # As `leads.changes.commit_change` does for any other change: the CRM's
    # copy is behind until the sync writes the opt-out. Its sequences stop at
    # the dispatcher's next run.
    outbox.wake_enrolments(scope, lead.id)
    lead.version += 1
    outbox.enqueue(scope, outbox.CRM_SYNC, lead)
    lead.crm_sync_status = "pending"
    lead.crm_sync_reason = None


def _iso(at: datetime | None) -> str:
    if at is None:
        return utcnow().isoformat()
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r} given; pass aware UTC times")
    return at.astimezone(UTC).isoformat()


def _newest(state: dict[str, Any], key: str, moment: str) -> str:
    """The later of the stored time under `key` and `moment` (both ISO, UTC)."""
    stored = state.get(key)
    if not isinstance(stored, str):
        return moment
    try:
        return max(stored, moment, key=datetime.fromisoformat)
    except ValueError:
        return moment
