"""What a sync would do to each lead's CRM record, without writing anything."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from connectors.crm.accounts import CrmAccount
from connectors.crm.protocol import CrmConnector, CrmField, FieldValue
from connectors.crm.records import plan
from leads.store.database import Store
from leads.store.tables import Lead

# Lead sync states a preview of "what waits" shows.
WAITING = ("pending", "retrying", "parked")


@dataclass(frozen=True)
class FieldChange:
    """One CRM field the sync would write, with what the CRM holds now."""

    field: str
    current: Any
    new: Any


@dataclass(frozen=True)
class PreviewItem:
    """One lead: what would happen to its CRM record and which fields change."""

    lead_id: str
    # create, update, no_change, or skip (with `reason`)
    action: str
    crm_id: str | None = None
    reason: str | None = None
    changes: list[FieldChange] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def preview(
    leads: Sequence[Lead],
    account: CrmAccount,
    connector: CrmConnector,
    *,
    default_zone: str,
    crm_fields: Mapping[str, CrmField] | None = None,
) -> list[PreviewItem]:
    """Each lead's planned write next to the CRM's current values; writes nothing.

    Reads the CRM's records of these leads (one batch read per connector
    batch) for every mapped field.
    """
    planned = plan(
        leads,
        account,
        connector,
        default_zone=default_zone,
        crm_fields=crm_fields,
        read_fields=sorted(account.mapping.fields),
    )
    items = []
    for item in planned:
        snapshot = item.snapshot
        crm_id = snapshot.crm_id if snapshot else None
        if item.record is None:
            items.append(
                PreviewItem(item.lead_id, "skip", crm_id=crm_id, reason=item.skipped)
            )
            continue
        current = dict(snapshot.fields) if snapshot else {}
        changes, unchanged = [], []
        for name, value in item.record.fields.items():
            if snapshot is not None and _same(current.get(name), value):
                unchanged.append(name)
            else:
                changes.append(FieldChange(name, current.get(name), _shown(value)))
        action = "update" if changes else "no_change"
        if snapshot is None:
            action = "create"
        items.append(
            PreviewItem(
                item.lead_id,
                action,
                crm_id=crm_id,
                changes=changes,
                unchanged=unchanged,
                warnings=list(item.warnings),
            )
        )
    return items


def _shown(value: FieldValue) -> Any:
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value


def _same(current: Any, new: FieldValue) -> bool:
    """Whether the CRM's value already says what we would write.

    Vendors return values in their own shapes (HubSpot: every value a string,
    dates as midnight-UTC milliseconds or ISO dates), so both sides are
    compared as text after the obvious normalisations.
    """
    if current is None or current == "":
        return new == ""
    if isinstance(new, bool):
        return str(current).lower() == str(new).lower()
    if isinstance(new, int | float):
        try:
            return float(current) == float(new)
        except (TypeError, ValueError):
            return False
    if isinstance(new, datetime):
        return str(current).replace("Z", "+00:00").startswith(new.isoformat()[:19])
    if isinstance(new, date):
        text = str(current)
        if text.isdigit():
            return datetime.fromtimestamp(int(text) / 1000, UTC).date() == new
        return text[:10] == new.isoformat()
    return str(current) == str(new)


def preview_waiting(
    store: Store,
    tenant_id: str,
    account: CrmAccount,
    connector: CrmConnector,
    *,
    default_zone: str,
    lead_ids: Sequence[str] | None = None,
    limit: int = 50,
) -> list[PreviewItem]:
    """`preview` of the named leads, or of those waiting for sync, oldest first.

    Raises:
        CrmError: the CRM could not be read.
    """
    with store.read(tenant_id) as scope:
        query = scope.select(Lead)
        if lead_ids is not None:
            query = query.where(Lead.id.in_(list(lead_ids)))
        else:
            query = query.where(Lead.crm_sync_status.in_(WAITING)).order_by(
                Lead.created_at
            )
        leads = list(scope.session.scalars(query.limit(limit)))
    fields = {field.name: field for field in connector.list_fields()}
    return preview(
        leads, account, connector, default_zone=default_zone, crm_fields=fields
    )
