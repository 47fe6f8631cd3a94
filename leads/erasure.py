"""Erasure: a person removed from every table of the store, in one transaction.

What stays afterwards is a hashed suppression entry per address the person
used (reason `erased`, so no marketing e-mail reaches the address again),
an audit record of ids and counts, and, when the CRM may hold the person,
one `crm_sync` outbox row that owes the CRM its own deletion. That row names
CRM records by the CRM's id and account digest; where no id is known it keeps
the address sealed with the secret key (the least a lookup needs), and the
drain deletes the whole row once the CRM is done.

Rows that named the person without belonging to the lead are found by the
addresses and phone numbers the lead held over time (its timeline says which):
stored webhook deliveries are scrubbed to a tombstone rather than deleted, so
a sender redelivering an old event cannot bring the person back, and import
reject rows are deleted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update

from leads.email_sends import EMAIL_SEND
from leads.matching import mailbox_key
from leads.normalise import email_key
from leads.store import audit, duplicates, lease_time, outbox, timeline
from leads.store.database import TenantScope
from leads.store.duplicates import FLAG_PREFIX
from leads.store.inserts import insert_if_absent
from leads.store.leads import get_lead
from leads.store.tables import (
    DuplicateReview,
    EmailEvent,
    EmailSend,
    EmailSuppression,
    ImportReject,
    Lead,
    MatchKey,
    OutboxItem,
    SequenceStep,
    TimelineEvent,
    TriggerKey,
    WebhookDelivery,
    utcnow,
)
from leads.suppression import SCOPE_MARKETING, address_hash

ERASED = "erased"
# The outbox row owing the CRM a deletion: in the CRM sync's topic, so the one
# drain that writes leads to the CRM also takes them out again.
ERASE_KEY_PREFIX = "erase:"
ERASE_ACTION = "erase"
# Scanned in pieces: a tenant may hold many rejects and deliveries.
_SCAN_BATCH = 500
# A phone number is told apart from other digits by at least this many.
_MIN_PHONE_DIGITS = 7
_MAX_PHONE_DIGITS = 15
_MIN_NATIONAL_DIGITS = 8
_NOT_DIGITS = re.compile(r"\D+")
_SCRUBBED_REASON = {
    "field": "body",
    "reason": ERASED,
    "message": "the person this delivery named was erased; its content was removed",
}
_PERSON_FIELDS = ("email", "email_display", "phone", "phone_raw")

Seal = Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class Erasure:
    """What one erasure removed, by kind of row, and what it left owed.

    Attributes:
        lead_id: the erased lead.
        removed: rows deleted (or, for webhook deliveries, scrubbed) by kind.
        suppressed: `erased` suppression entries added (one per address).
        crm_erasure_queued: whether the CRM is owed a deletion.
    """

    lead_id: str
    removed: dict[str, int]
    suppressed: int
    crm_erasure_queued: bool


@dataclass
class Person:
    """What identifies the person in rows that do not name the lead."""

    addresses: set[str] = field(default_factory=set)
    phones: set[str] = field(default_factory=set)
    # Leads merged into this one earlier (their rows name their old ids).
    absorbed: dict[str, str | None] = field(default_factory=dict)

    def named_in(self, text: str) -> bool:
        """Whether an address of the person occurs in `text`, in any case."""
        lowered = text.lower()
        return any(address in lowered for address in self.addresses)

    def holds(self, value: str) -> bool:
        """Whether a value (a cell, a JSON string) is the person's address or phone."""
        if self.named_in(value):
            return True
        digits = _NOT_DIGITS.sub("", value)
        if not _MIN_PHONE_DIGITS <= len(digits) <= _MAX_PHONE_DIGITS:
            return False
        # A national spelling (`(415) 555-0134`, `020 7946 0018`) is the E.164
        # form's digits (`+14155550134`, `+442079460018`) without the country
        # code, and perhaps with a trunk prefix of 0.
        national = digits.lstrip("0")
        return any(
            digits == phone
            or (len(national) >= _MIN_NATIONAL_DIGITS and phone.endswith(national))
            for phone in self.phones
        )


def erase(
    scope: TenantScope,
    lead_id: str,
    *,
    actor: str,
    seal: Seal | None,
    trigger: Mapping[str, str],
    crm_gone: Collection[str] = (),
    forget_messages: Callable[[Iterable[str]], int] | None = None,
) -> Erasure:
    """Erases the tenant's lead and every row that names the person.

    Deletes the lead, its timeline, outbox rows, sequence steps, e-mail sends
    and events, match keys, duplicate reviews, trigger keys and the import
    reject rows holding its address or phone; scrubs the webhook deliveries
    that were its (or, unlinked, hold its address); takes the
    `possible_duplicate_of` flag naming it off other leads; adds an `erased`
    suppression per address; queues the CRM's deletion when the CRM may hold
    the person; and appends `lead.erased` to the audit log. All of it in the
    caller's transaction, so it happens whole or not at all.

    Args:
        scope: the tenant's open write transaction.
        lead_id: the lead to erase.
        actor: the API key asking, or `system`.
        seal: encrypts the address a CRM lookup needs when no CRM id is known;
            None keeps none (such a record is then looked for by lead id
            only, which finds it only where the CRM keys records by it).
        trigger: ids naming what asked (`{"via": "api"}`, a webhook's
            delivery id); goes on the audit record.
        crm_gone: CRM ids the CRM has deleted already (its own privacy
            deletion): no call is owed for them.
        forget_messages: deletes the copies the e-mail backend kept of the
            messages sent to the person, by Message-ID (`kept_copies`); None
            when it keeps none. Files are not part of the transaction: a copy
            is gone even if the erasure then fails, and is not needed by a
            retry.

    Returns:
        What was removed, and whether the CRM is owed a deletion.

    Raises:
        LeadNotFound: no such lead in the tenant.
    """
    # The person's mailboxes before the lead's row, in the order intake takes
    # them (no deadlock): an import chunk holding this person waits, then
    # finds the `erased` entry this transaction adds (`erased_since`).
    _lock_mailboxes_of(scope, get_lead(scope, lead_id))
    lead = get_lead(scope, lead_id, lock=True)
    events = _events_of(scope, lead)
    person = _person(scope, lead, events)
    crm_targets, available_at = _crm_targets(scope, lead, events, person, seal)
    crm_targets = [t for t in crm_targets if t.get("crm_id") not in set(crm_gone)]

    removed: dict[str, int] = {}
    removed["duplicate_flags"] = _unflag_others(scope, lead.id)
    removed["duplicate_reviews"] = _delete(
        scope,
        DuplicateReview,
        (DuplicateReview.lead_id == lead.id)
        | (DuplicateReview.duplicate_of_id == lead.id),
    )
    removed["webhook_deliveries"] = _scrub_deliveries(scope, lead.id, person)
    removed["import_rejects"] = _delete_rejects(scope, person)
    removed["email_files"] = (
        forget_messages(_messages_to(scope, lead.id, person))
        if forget_messages is not None
        else 0
    )
    removed["email_sends"] = _delete_sends(scope, lead.id, person)
    hashes = {address_hash(address) for address in person.addresses}
    removed["email_events"] = _delete(
        scope,
        EmailEvent,
        (EmailEvent.lead_id == lead.id) | EmailEvent.address_hash.in_(hashes),
    )
    removed["sequence_steps"] = _delete(
        scope, SequenceStep, SequenceStep.lead_id == lead.id
    )
    removed["outbox_items"] = _delete(scope, OutboxItem, OutboxItem.lead_id == lead.id)
    removed["timeline_events"] = _delete(
        scope, TimelineEvent, TimelineEvent.lead_id == lead.id
    )
    removed["match_keys"] = _delete(scope, MatchKey, MatchKey.lead_id == lead.id)
    removed["trigger_keys"] = _delete(scope, TriggerKey, TriggerKey.lead_id == lead.id)
    # Kept (the person's wishes outlive them), no longer tied to a lead id.
    ids = [lead.id, *person.absorbed]
    scope.session.execute(
        update(EmailSuppression)
        .where(
            EmailSuppression.tenant_id == scope.tenant_id,
            EmailSuppression.lead_id.in_(ids),
        )
        .values(lead_id=None)
        .execution_options(synchronize_session=False)
    )
    removed["leads"] = _delete(scope, Lead, Lead.id == lead.id)
    scope.session.expunge(lead)

    suppressed = sum(_suppress_erased(scope, digest) for digest in sorted(hashes))
    if crm_targets:
        _queue_crm_erasure(scope, lead.id, crm_targets, available_at)
    audit.append_decision(
        scope.session,
        scope.tenant_id,
        "lead.erased",
        "lead",
        lead.id,
        {
            **dict(trigger),
            "removed": removed,
            "suppressed": suppressed,
            "merged_leads": len(person.absorbed),
            "crm_records_owed": len(crm_targets),
        },
        actor=actor,
    )
    return Erasure(lead.id, removed, suppressed, bool(crm_targets))


def is_crm_erasure(topic: str, key: str) -> bool:
    """Whether an outbox row owes the CRM a deletion rather than a write."""
    return topic == outbox.CRM_SYNC and key.startswith(ERASE_KEY_PREFIX)


def _person(scope: TenantScope, lead: Lead, events: list[TimelineEvent]) -> Person:
    """The addresses and phones the lead held, and the leads merged into it."""
    person = Person()
    values: list[Any] = [getattr(lead, name) for name in _PERSON_FIELDS]
    for event in events:
        detail = event.detail or {}
        received = detail.get("received")
        if isinstance(received, Mapping):
            values += [received.get(name) for name in _PERSON_FIELDS]
        changes = detail.get("changes")
        if isinstance(changes, Mapping):
            for name in _PERSON_FIELDS:
                change = changes.get(name)
                if isinstance(change, Mapping):
                    values += [change.get("from"), change.get("to")]
        if event.kind == "lead.merged":
            merged_id = detail.get("merged_lead_id")
            merged_email = detail.get("merged_email")
            if isinstance(merged_id, str):
                person.absorbed[merged_id] = (
                    email_key(merged_email) if isinstance(merged_email, str) else None
                )
            values.append(merged_email)
    reviews = scope.session.scalars(
        select(DuplicateReview.lead_id).where(
            DuplicateReview.tenant_id == scope.tenant_id,
            DuplicateReview.duplicate_of_id == lead.id,
            DuplicateReview.status == "merged",
        )
    )
    for merged_id in reviews:
        person.absorbed.setdefault(merged_id, None)

    for value in values:
        if not isinstance(value, str) or not value.strip():
            continue
        key = email_key(value) if "@" in value else None
        if key is not None:
            person.addresses |= {key, value.strip().lower()}
            continue
        digits = _NOT_DIGITS.sub("", value)
        if len(digits) >= _MIN_PHONE_DIGITS:
            person.phones.add(digits)
    return person


def _crm_targets(
    scope: TenantScope,
    lead: Lead,
    events: list[TimelineEvent],
    person: Person,
    seal: Seal | None,
) -> tuple[list[dict[str, Any]], datetime]:
    """The CRM records to delete, and when the deletion may first run.

    By CRM id wherever one is known (the lead's, and those its `crm.*` events
    recorded, which include records in an account the tenant used before).
    By our key where the CRM may hold a record whose id never came back: a
    sync that was tried without an answer, or is in flight now, and leads
    merged into this one. A sync in flight may still write after this
    transaction: the deletion waits until that claim's lease has run out.
    """
    by_id: dict[str, str | None] = {}
    if lead.crm_id:
        by_id[lead.crm_id] = lead.crm_account
    for event in events:
        detail = event.detail or {}
        crm_id = detail.get("crm_id")
        if event.kind.startswith("crm.") and isinstance(crm_id, str) and crm_id:
            account = detail.get("account")
            by_id.setdefault(crm_id, account if isinstance(account, str) else None)
    targets: list[dict[str, Any]] = [
        {"crm_id": crm_id, "account": account} for crm_id, account in by_id.items()
    ]

    sync_row = scope.session.scalars(
        scope.select(OutboxItem)
        .where(OutboxItem.topic == outbox.CRM_SYNC, OutboxItem.lead_id == lead.id)
        .with_for_update()
    ).one_or_none()
    # By the clock the sync's claims judge leases and due times with.
    now = lease_time.read(scope.session)
    available_at = now
    in_flight = sync_row is not None and sync_row.status == "claimed"
    if in_flight and sync_row.lease_expires_at and sync_row.lease_expires_at > now:
        available_at = sync_row.lease_expires_at
    tried = in_flight or lead.crm_sync_status != "pending"
    tried |= sync_row is not None and (
        sync_row.attempts > 0 or sync_row.status in ("done", "parked")
    )
    if (tried and not by_id) or in_flight:
        targets.append(_by_key(lead.id, lead.email, seal))
    if targets:
        # The CRM was in use for this person: a lead merged into this one may
        # have been written there under its own key.
        targets += [
            _by_key(merged_id, address, seal)
            for merged_id, address in person.absorbed.items()
        ]
    return targets, available_at


def _by_key(lead_id: str, address: str | None, seal: Seal | None) -> dict[str, Any]:
    """A record found by our key: the lead id, or its sealed address."""
    target: dict[str, Any] = {"lead_id": lead_id}
    if address:
        # None says an address existed but was not kept: a CRM keyed by
        # e-mail cannot be searched, and the deletion is left to a person.
        target["sealed"] = seal({"email": address}) if seal is not None else None
    return target


def _unflag_others(scope: TenantScope, lead_id: str) -> int:
    """Takes `possible_duplicate_of:<lead_id>` off the leads it was put on."""
    flag = FLAG_PREFIX + lead_id
    later_ids = scope.session.scalars(
        select(DuplicateReview.lead_id).where(
            DuplicateReview.tenant_id == scope.tenant_id,
            DuplicateReview.duplicate_of_id == lead_id,
        )
    ).all()
    if not later_ids:
        return 0
    changed = 0
    for other in scope.session.scalars(
        scope.select(Lead).where(Lead.id.in_(later_ids)).with_for_update()
    ):
        if flag not in (other.flags or []):
            continue
        other.flags = [f for f in other.flags if f != flag]
        timeline.record(
            scope, other, "duplicate.other_erased", detail={"other_lead_id": lead_id}
        )
        changed += 1
    scope.session.flush()
    return changed


def _scrub_deliveries(scope: TenantScope, lead_id: str, person: Person) -> int:
    """Empties the deliveries of the person; returns how many.

    A delivery linked to the lead (or a lead merged into it) is the person's
    whatever it holds; an unlinked one (pending, rejected, ignored) is theirs
    when its body holds one of their addresses or phones. The row stays with
    its ids, so a redelivery is still recognised and not taken in again.
    """
    linked = [lead_id, *person.absorbed]
    found = set(
        scope.session.scalars(
            select(WebhookDelivery.id).where(
                WebhookDelivery.tenant_id == scope.tenant_id,
                WebhookDelivery.lead_id.in_(linked),
            )
        )
    )
    unlinked = (
        select(WebhookDelivery.id, WebhookDelivery.body)
        .where(
            WebhookDelivery.tenant_id == scope.tenant_id,
            WebhookDelivery.lead_id.is_(None),
        )
        .execution_options(yield_per=_SCAN_BATCH)
    )
    for delivery_id, body in scope.session.execute(unlinked):
        if _body_names(bytes(body or b""), person):
            found.add(delivery_id)
    if not found:
        return 0
    ids = sorted(found)
    for start in range(0, len(ids), _SCAN_BATCH):
        part = ids[start : start + _SCAN_BATCH]
        scope.session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(part))
            .values(
                body=b"",
                lead_id=None,
                reasons=[_SCRUBBED_REASON],
                last_error=None,
                claimed_until=None,
            )
            .execution_options(synchronize_session=False)
        )
        # One still waiting is settled: there is nothing left to process,
        # and a processor holding it now finds its claim gone.
        scope.session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(part), WebhookDelivery.status == "pending")
            .values(status="ignored", processed_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    return len(ids)


def _body_names(body: bytes, person: Person) -> bool:
    text = body.decode("utf-8", "replace")
    if person.named_in(text):
        return True
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return any(person.holds(value) for value in _strings(document))


def _strings(document: Any) -> Iterable[str]:
    """Every string in a JSON document, keys excepted (escapes undone)."""
    stack = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _delete_rejects(scope: TenantScope, person: Person) -> int:
    """Deletes the import reject rows whose cells hold the person's address or phone.

    A rejected record made no lead, so it is found by its cells only. An
    import's uploaded file is deleted when the import finishes or fails
    (`leads.importer`), so rejects are all a finished import keeps.
    """
    # The file of an import still queued or running is left as it is
    # (rewriting it would move the offsets a resumed run reads from); the run
    # refuses the person's records instead (`erased_since`).
    query = (
        select(ImportReject.id, ImportReject.values)
        .where(ImportReject.tenant_id == scope.tenant_id)
        .execution_options(yield_per=_SCAN_BATCH)
    )
    found = [
        reject_id
        for reject_id, values in scope.session.execute(query)
        if any(person.holds(str(v)) for v in (values or {}).values() if v)
    ]
    for start in range(0, len(found), _SCAN_BATCH):
        part = found[start : start + _SCAN_BATCH]
        _delete(scope, ImportReject, ImportReject.id.in_(part))
    return len(found)


def _messages_to(scope: TenantScope, lead_id: str, person: Person) -> set[str]:
    """The Message-IDs of the e-mails sent to the person: steps and one-offs."""
    steps = select(SequenceStep.message_id).where(
        SequenceStep.tenant_id == scope.tenant_id, SequenceStep.lead_id == lead_id
    )
    theirs = EmailSend.lead_id == lead_id
    if person.addresses:
        theirs = theirs | (
            EmailSend.lead_id.is_(None)
            & func.lower(func.trim(EmailSend.recipient)).in_(sorted(person.addresses))
        )
    sends = select(EmailSend.message_id).where(
        EmailSend.tenant_id == scope.tenant_id, theirs
    )
    found = {*scope.session.scalars(steps), *scope.session.scalars(sends)}
    return {message_id for message_id in found if message_id}


def _delete_sends(scope: TenantScope, lead_id: str, person: Person) -> int:
    """Deletes the lead's one-off e-mails and those sent to its bare address."""
    bare = select(EmailSend.id).where(
        EmailSend.tenant_id == scope.tenant_id,
        EmailSend.lead_id.is_(None),
        func.lower(func.trim(EmailSend.recipient)).in_(sorted(person.addresses)),
    )
    bare_ids = list(scope.session.scalars(bare)) if person.addresses else []
    # A bare address's send is carried by an outbox row owed to no lead.
    if bare_ids:
        _delete(
            scope,
            OutboxItem,
            (OutboxItem.topic == EMAIL_SEND) & OutboxItem.key.in_(bare_ids),
        )
    condition = EmailSend.lead_id == lead_id
    if bare_ids:
        condition = condition | EmailSend.id.in_(bare_ids)
    return _delete(scope, EmailSend, condition)


def _delete(scope: TenantScope, model: Any, condition: Any) -> int:
    result = scope.session.execute(
        delete(model)
        .where(model.tenant_id == scope.tenant_id, condition)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)


def _events_of(scope: TenantScope, lead: Lead) -> list[TimelineEvent]:
    query = scope.select(TimelineEvent).where(TimelineEvent.lead_id == lead.id)
    return list(scope.session.scalars(query))


def _lock_mailboxes_of(scope: TenantScope, lead: Lead) -> None:
    person = _person(scope, lead, _events_of(scope, lead))
    duplicates.lock_mailboxes(scope, map(mailbox_key, person.addresses))


def _suppress_erased(scope: TenantScope, digest: str) -> bool:
    """Adds the address's `erased` entry, or moves its time to now (`erased_since`)."""
    now = utcnow()
    inserted = insert_if_absent(
        scope,
        EmailSuppression,
        {
            "address_hash": digest,
            "reason": ERASED,
            "scope": SCOPE_MARKETING,
            "lead_id": None,
            "source": ERASED,
            "created_at": now,
        },
    )
    if inserted is None:
        # Erased before, taken in again since, and erased once more: an import
        # uploaded in between must not bring the person back either.
        scope.session.execute(
            update(EmailSuppression)
            .where(
                EmailSuppression.tenant_id == scope.tenant_id,
                EmailSuppression.address_hash == digest,
                EmailSuppression.reason == ERASED,
            )
            .values(created_at=now)
        )
    return inserted is not None


def erased_since(
    scope: TenantScope, addresses: Iterable[str], since: datetime
) -> set[str]:
    """The addresses among `addresses` (as spelled) erased at `since` or later.

    An import file uploaded before an erasure still holds the person; its
    records of them are not taken in (`leads.importer`).
    """
    by_hash: dict[str, set[str]] = {}
    for address in addresses:
        if email_key(address) is not None:
            by_hash.setdefault(address_hash(address), set()).add(address)
    if not by_hash:
        return set()
    found = scope.session.scalars(
        select(EmailSuppression.address_hash).where(
            EmailSuppression.tenant_id == scope.tenant_id,
            EmailSuppression.reason == ERASED,
            EmailSuppression.created_at >= since,
            EmailSuppression.address_hash.in_(list(by_hash)),
        )
    )
    return {address for digest in found for address in by_hash[digest]}


def _queue_crm_erasure(
    scope: TenantScope,
    lead_id: str,
    targets: list[dict[str, Any]],
    available_at: datetime,
) -> None:
    """Owes the CRM the deletion of `targets`, once, due at `available_at`."""
    key = ERASE_KEY_PREFIX + lead_id
    scope.session.execute(
        delete(OutboxItem).where(
            OutboxItem.tenant_id == scope.tenant_id,
            OutboxItem.topic == outbox.CRM_SYNC,
            OutboxItem.key == key,
        )
    )
    scope.add(
        OutboxItem(
            topic=outbox.CRM_SYNC,
            key=key,
            # No lead: the row must outlive it (the lead's rows cascade).
            lead_id=None,
            payload={"action": ERASE_ACTION, "lead_id": lead_id, "targets": targets},
            available_at=available_at,
        )
    )
