"""Editing a stored lead by id: replacing it whole (PUT) or patching fields (PATCH)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.exc import IntegrityError

from leads.changes import (
    Verdicts,
    check_email_free,
    commit_change,
    jsonable,
    keep_found_warnings,
    require_contact,
    set_value,
)
from leads.errors import LeadConflict, LeadRejected
from leads.fields import TEXT_FIELDS
from leads.intake import parse_input
from leads.normalise import clean_fields
from leads.store import TenantScope
from leads.store.leads import find_by_email, get_lead
from leads.store.tables import Lead

# Every column a caller may write, as `clean_fields` names them.
_EDITABLE = [name for name in TEXT_FIELDS if name not in ("email", "phone")] + [
    "email",
    "email_display",
    "phone",
    "phone_raw",
    "status",
    "captured_at",
]


def replace(
    scope: TenantScope,
    lead_id: str,
    submitted: Mapping[str, Any],
    *,
    channel: str,
    region: str,
) -> Lead:
    """Replaces every editable field: a field left out or null is cleared.

    `source` is the exception: left out, it keeps its value.

    Raises:
        LeadNotFound: no such lead in this tenant.
        LeadRejected: the new values are invalid.
        LeadConflict: the new e-mail belongs to another lead.
    """
    given = parse_input(submitted).given()
    # `source` records where the lead came from: kept unless a new one is sent.
    cleared = [name for name in TEXT_FIELDS if name != "source"]
    full = {name: None for name in cleared} | {"status": None, "captured_at": None}
    full |= given
    full["custom"] = given.get("custom") or {}
    return _apply(scope, lead_id, full, channel=channel, region=region, merge=False)


def patch(
    scope: TenantScope,
    lead_id: str,
    submitted: Mapping[str, Any],
    *,
    channel: str,
    region: str,
) -> Lead:
    """Changes only the fields sent (JSON merge patch): null clears a field.

    In `custom`, each key sent replaces that key and a null removes it.

    Raises:
        LeadNotFound, LeadRejected, LeadConflict: as for `replace`.
    """
    given = parse_input(submitted).given()
    return _apply(scope, lead_id, given, channel=channel, region=region, merge=True)


def _apply(
    scope: TenantScope,
    lead_id: str,
    given: dict[str, Any],
    *,
    channel: str,
    region: str,
    merge: bool,
) -> Lead:
    lead = get_lead(scope, lead_id, lock=True)
    cleaned = clean_fields(given, region)
    if cleaned.errors:
        raise LeadRejected(cleaned.errors)
    values = cleaned.values
    sent = values.get("email")
    if sent is not None and sent == lead.email == values.get("email_display"):
        # The key sent back (a fetched lead re-sent) is not a new typed form.
        values.pop("email_display")

    after = {name: values.get(name, getattr(lead, name)) for name in _EDITABLE}
    require_contact(after["email"], after["phone"], after["phone_raw"])
    check_email_free(scope, lead, after["email"])

    # The changes go in under a savepoint: on PostgreSQL another transaction
    # can take the new e-mail between our check and our write, and its unique
    # key then refuses ours; we answer 409 naming the holder, not a 500.
    email = after["email"]
    before = Verdicts.of(lead)
    try:
        with scope.session.begin_nested():
            changes = _set_fields(lead, values, merge=merge)
            scope.session.flush()
    except IntegrityError as exc:
        with scope.session.no_autoflush:
            other = find_by_email(scope, email) if email else None
        raise LeadConflict("email", other.id if other else "unknown") from exc
    if changes:
        commit_change(
            scope,
            lead,
            "lead.edited",
            channel=channel,
            detail={"channel": channel, "changes": jsonable(changes)},
            created=False,
            before=before,
        )
    return lead


def _set_fields(lead: Lead, values: dict[str, Any], *, merge: bool) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for name in _EDITABLE:
        if name in values:
            set_value(lead, name, values[name], changes)
    if "custom" in values:
        # `"custom": null` clears it, as null clears any other field.
        keep = merge and values["custom"] is not None
        custom = dict(lead.custom or {}) if keep else {}
        for key, value in (values["custom"] or {}).items():
            if merge and value is None:
                custom.pop(key, None)
            else:
                custom[key] = value
        set_value(lead, "custom", custom, changes)
    keep_found_warnings(lead, values.get("warnings"), changes)
    return changes
