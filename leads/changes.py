"""Applying cleaned values to a stored lead, and what every write leaves behind.

Every path that changes a lead (intake, replace, patch) ends in `commit_change`:
the timeline event and the outbox rows go into the same transaction as the lead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import insert

from leads import rulebook
from leads.countries import UNKNOWN_COUNTRY, is_country_code
from leads.email_domains import (
    DISPOSABLE_EMAIL,
    FREE_MAIL,
    email_flags,
    email_warnings,
)
from leads.errors import FieldError, LeadConflict, LeadRejected
from leads.models import LeadStatus
from leads.phones import INVALID_PHONE, PHONE_MANGLED, phone_warning
from leads.postcodes import ZIP_ZERO_PADDED, may_be_padded
from leads.sequences import enrolling
from leads.store import match_keys, outbox, timeline
from leads.store.database import TenantScope
from leads.store.leads import find_by_email
from leads.store.tables import Lead, OutboxItem, utcnow

# Warnings and flags the store derives from the lead itself, recomputed on
# every write: a later value without the fault clears them.
DERIVED_WARNINGS = (
    "missing_email",
    DISPOSABLE_EMAIL,
    INVALID_PHONE,
    PHONE_MANGLED,
    UNKNOWN_COUNTRY,
)
DERIVED_FLAGS = (FREE_MAIL,)


def jsonable(value: Any) -> Any:
    """The value with datetimes as ISO text, ready for a JSON column."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def require_contact(
    email: str | None, phone: str | None, phone_raw: str | None
) -> None:
    """A lead needs a valid e-mail or a valid phone.

    Raises:
        LeadRejected: neither is there; names both fields.
    """
    if email or phone:
        return
    # One error, named on both fields: the same words on each let a rejects
    # file say it once.
    needed = "an e-mail or a phone is needed"
    if phone_raw and phone_warning(None, phone_raw) == PHONE_MANGLED:
        phone_error = FieldError(
            "phone",
            PHONE_MANGLED,
            f"{phone_raw!r} is a phone number a spreadsheet turned into a number, "
            "its digits lost; export the column as text",
        )
    elif phone_raw:
        phone_error = FieldError(
            "phone", "invalid_phone", f"{phone_raw!r} is not a valid phone number"
        )
    else:
        phone_error = FieldError("phone", "missing_contact", needed)
    raise LeadRejected([FieldError("email", "missing_contact", needed), phone_error])


def set_value(lead: Lead, name: str, value: Any, changes: dict[str, Any]) -> None:
    """Sets one column, noting the change when the value differs."""
    if name == "status" and value is None:
        value = LeadStatus.NEW.value
    elif isinstance(value, LeadStatus):
        value = value.value
    old = getattr(lead, name)
    if old == value:
        return
    changes[name] = {"from": jsonable(old), "to": jsonable(value)}
    setattr(lead, name, value)


def keep_found_warnings(
    lead: Lead, found: list[str] | None, changes: dict[str, Any]
) -> None:
    """Adds warnings cleaning found (`zip_zero_padded`) to the ones the lead has.

    Added, never replacing: a value cleaned in one write says nothing about the
    fields it left alone. `derive_warnings` drops one once its field no longer
    fits it.
    """
    added = [w for w in found or [] if w not in (lead.warnings or [])]
    if added:
        set_value(lead, "warnings", [*(lead.warnings or []), *added], changes)


def check_email_free(scope: TenantScope, lead: Lead, email: str | None) -> None:
    """Raises LeadConflict when another lead of the tenant holds `email`."""
    if email is None or email == lead.email:
        return
    other = find_by_email(scope, email)
    if other is not None and other.id != lead.id:
        raise LeadConflict("email", other.id)


def derive_warnings(lead: Lead) -> list[str]:
    """The lead's warnings, with the derived ones recomputed from its fields.

    A warning found while cleaning (`zip_zero_padded`) has no trace in the
    stored value, so it is kept until the value changes to one it cannot
    describe. Every write ends here through `commit_change`, so the derived
    flags (`free_mail`) are refreshed on the lead at the same time.
    """
    kept = [w for w in lead.warnings or [] if w not in DERIVED_WARNINGS]
    if ZIP_ZERO_PADDED in kept and not may_be_padded(lead.postal_code, lead.country):
        kept.remove(ZIP_ZERO_PADDED)
    if not lead.email:
        kept.append("missing_email")
    kept += email_warnings(lead.email)
    phone = phone_warning(lead.phone, lead.phone_raw)
    if phone:
        kept.append(phone)
    if lead.country and not is_country_code(lead.country):
        kept.append(UNKNOWN_COUNTRY)

    flags = [f for f in lead.flags or [] if f not in DERIVED_FLAGS]
    flags += email_flags(lead.email)
    if flags != lead.flags:
        lead.flags = flags
    return kept


# What scoring and matching read of a lead: its own details, not bookkeeping.
DETAIL_COLUMNS = tuple(
    column.key
    for column in Lead.__table__.c
    if column.key not in ("id", "tenant_id", "score", "score_reasons", "version")
)


def lead_values(lead: Lead) -> dict[str, Any]:
    """The lead's details as stored, the way scoring and matching read them."""
    return {name: getattr(lead, name) for name in DETAIL_COLUMNS}


@dataclass(frozen=True)
class Verdicts:
    """What checking and scoring said of a lead: warnings, flags, score and why.

    Taken before a write and compared after it, for the write's timeline event.
    """

    warnings: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    score: int | None = None
    score_reasons: tuple[str, ...] = ()

    @classmethod
    def of(cls, lead: Lead) -> Verdicts:
        return cls(
            tuple(lead.warnings or ()),
            tuple(lead.flags or ()),
            lead.score,
            tuple(lead.score_reasons or ()),
        )

    def since(self, earlier: Verdicts) -> dict[str, Any]:
        """What changed since `earlier`, as timeline detail; empty when nothing did.

        `warnings_added`, `warnings_cleared`, `flags_added`, `flags_cleared`
        (reason codes, each only when not empty) and `score` (`from`, `to` and
        the reasons now) when the score or its reasons changed.
        """
        found: dict[str, Any] = {}
        for name, now, then in (
            ("warnings", self.warnings, earlier.warnings),
            ("flags", self.flags, earlier.flags),
        ):
            added = [code for code in now if code not in then]
            cleared = [code for code in then if code not in now]
            if added:
                found[f"{name}_added"] = added
            if cleared:
                found[f"{name}_cleared"] = cleared
        if (self.score, self.score_reasons) != (earlier.score, earlier.score_reasons):
            found["score"] = {
                "from": earlier.score,
                "to": self.score,
                "reasons": list(self.score_reasons),
            }
        return found


NOTHING_SAID = Verdicts()


def apply_score(lead: Lead) -> None:
    """Scores the lead by the rules and model in use (none: left unscored)."""
    current = rulebook.scorer()
    if current is None:
        return
    result = current.score(lead_values(lead))
    if result.value != lead.score:
        lead.score = result.value
    if list(result.reasons) != lead.score_reasons:
        lead.score_reasons = list(result.reasons)


def match_keys_of(lead: Lead) -> frozenset[str]:
    """The lead's blocking keys under the matching rules in use (none: none)."""
    rules = rulebook.matching_rules()
    if rules is None:
        return frozenset()
    return rules.blocking_keys(rules.profile(lead_values(lead)))


def refresh_match_keys(scope: TenantScope, lead: Lead) -> None:
    """Stores the blocking keys the lead's current values give, beside its old ones."""
    keys = match_keys_of(lead)
    if keys:
        match_keys.refresh(scope, lead.id, keys)


def commit_change(
    scope: TenantScope,
    lead: Lead,
    kind: str,
    *,
    channel: str,
    detail: dict[str, Any],
    created: bool,
    before: Verdicts | None = None,
) -> None:
    """Records a create or a change on the timeline and owes the lead its follow-ups.

    The lead enters each sequence whose enrolment rules admit it, once, whether
    it qualified when it came in or later (a phone-only lead given an e-mail, a
    score that rose); any new or changed lead is owed a CRM sync (one row per
    lead, made due again). The event's detail gains what checking and scoring
    now say differently (`Verdicts.since`).

    Args:
        scope: the tenant's open write transaction.
        lead: the lead, its new values set.
        kind: the timeline event (`lead.created`, `lead.updated`, …).
        channel: the door the change came in by; the event's source.
        detail: the event's detail.
        created: the lead is new.
        before: the lead's verdicts before the caller changed it; by default
            none for a new lead, and as they are now for a stored one.
    """
    if before is None:
        before = NOTHING_SAID if created else Verdicts.of(lead)
    warnings = derive_warnings(lead)
    if warnings != lead.warnings:
        lead.warnings = warnings
    apply_score(lead)
    if not created:
        lead.version += 1
    scope.session.flush()
    if created:
        # A new id has no keys or outbox rows yet: nothing to read first (two
        # of the statements a single lead costs, and a merged outbox INSERT).
        match_keys.add(scope, [(lead.id, match_keys_of(lead))])
    else:
        refresh_match_keys(scope, lead)
    admitted = list(enrolling(rulebook.sequences(), lead, channel))
    detail = detail | Verdicts.of(lead).since(before) | _in_sequences(admitted)
    timeline.record(scope, lead, kind, source=channel, detail=jsonable(detail))
    outbox.enqueue(scope, outbox.CRM_SYNC, lead, new=created)
    # The CRM's copy is behind until the change is written (its crm_id stays).
    lead.crm_sync_status = "pending"
    lead.crm_sync_reason = None
    for sequence in admitted:
        outbox.enrol(scope, lead, sequence, new=created)


def _in_sequences(admitted: list[str]) -> dict[str, Any]:
    """For the timeline: the sequences whose rules admit the lead (entered once)."""
    return {"sequences": admitted} if admitted else {}


def commit_creations(
    scope: TenantScope,
    leads: Sequence[Lead],
    details: Sequence[dict[str, Any]],
    *,
    channel: str,
    keys: Sequence[frozenset[str] | None] | None = None,
) -> None:
    """Inserts many new leads with what `commit_change` leaves behind for a create.

    The many-lead twin of `commit_change(created=True)` for imports: the same
    warnings, timeline event (with its verdicts, and the current flow run) and
    outbox rows, written with one multi-row INSERT per table. Only for leads
    no row refers to yet (new ids), so nothing needs looking up first.

    Args:
        scope: the tenant's open write transaction.
        leads: transient leads (not added to the session), with ids set.
        details: each lead's `lead.created` event detail, in the same order.
        channel: the door they came in by.
        keys: each lead's blocking keys where the caller has them already.
    """
    now = utcnow()
    sequences = rulebook.sequences()
    lead_rows, events, owed = [], [], []
    for lead, detail in zip(leads, details, strict=True):
        lead.tenant_id = scope.tenant_id
        _fill_defaults(lead)
        lead.warnings = derive_warnings(lead)
        apply_score(lead)
        lead.created_at = lead.updated_at = now
        lead_rows.append(_insert_row(lead))
        admitted = list(enrolling(sequences, lead, channel))
        said = Verdicts.of(lead).since(NOTHING_SAID) | _in_sequences(admitted)
        events.append(
            timeline.event_row(
                scope,
                lead.id,
                "lead.created",
                source=channel,
                detail=jsonable(detail | said),
                occurred_at=now,
            )
        )
        owed.append(_owed(scope, lead, outbox.CRM_SYNC, lead.id, {}, now))
        for sequence in admitted:
            key = outbox.enrolment_key(lead.id, sequence)
            payload = outbox.enrolment_payload(lead, sequence)
            owed.append(
                _owed(scope, lead, outbox.SEQUENCE_ENROLMENT, key, payload, now)
            )
    if not lead_rows:
        return
    scope.session.execute(insert(Lead.__table__), lead_rows)
    known = keys or [None] * len(leads)
    match_keys.add(
        scope,
        [
            (lead.id, found if found is not None else match_keys_of(lead))
            for lead, found in zip(leads, known, strict=True)
        ],
    )
    timeline.append_all(scope, events)
    scope.session.execute(insert(OutboxItem.__table__), owed)


def _fill_defaults(lead: Lead) -> None:
    """Sets a transient lead's unset columns to their defaults, as a flush would.

    The ORM fills a column's Python-side default (`False`, `dict`, …) at flush,
    for every attribute never set; a lead inserted with many others is never
    flushed. Filled before the lead is scored and warned about, so they see it
    as it will be stored, and the API answers with it as stored. A NULL in a
    NOT NULL column (`email_opt_out`) would also fail the whole INSERT, and
    `store_many` then takes every lead of the chunk alone.
    """
    for column in Lead.__table__.c:
        default = column.default
        if column.key in vars(lead) or default is None:
            continue
        if default.is_callable:
            setattr(lead, column.key, default.arg(None))
        elif default.is_scalar:
            setattr(lead, column.key, default.arg)


def _insert_row(lead: Lead) -> dict[str, Any]:
    """A transient lead's row, for a multi-row INSERT."""
    return {column.key: getattr(lead, column.key) for column in Lead.__table__.c}


def _owed(
    scope: TenantScope,
    lead: Lead,
    topic: str,
    key: str,
    payload: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    return {
        "tenant_id": scope.tenant_id,
        "topic": topic,
        "key": key,
        "lead_id": lead.id,
        "payload": payload,
        "status": "pending",
        "generation": 1,
        "attempts": 0,
        "available_at": now,
        "lease_owner": None,
        "lease_expires_at": None,
        "last_error": None,
        "created_at": now,
        "updated_at": now,
    }
