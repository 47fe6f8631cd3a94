"""Turning stored leads into CRM records: key, mapped fields, mode and policies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.crm.accounts import CrmAccount
from connectors.crm.mapping import MappedLead, apply_policies
from connectors.crm.protocol import (
    CrmConnector,
    CrmField,
    CrmRecord,
    CrmSnapshot,
    FieldValue,
)
from leads.changes import lead_values
from leads.store.tables import Lead


@dataclass(frozen=True)
class Planned:
    """One lead's record, or why it gets none."""

    lead_id: str
    key: str | None
    record: CrmRecord | None = None
    # `missing_key:email`, `not_in_crm` (update only), `exists_in_crm` (create only)
    skipped: str | None = None
    snapshot: CrmSnapshot | None = None
    warnings: tuple[str, ...] = ()
    mapped: Mapping[str, FieldValue] = field(default_factory=dict)


def lead_document(lead: Lead) -> dict[str, Any]:
    """Everything a mapping may read of a lead."""
    return lead_values(lead) | {
        "id": lead.id,
        "score": lead.score,
        "score_reasons": list(lead.score_reasons or []),
    }


def key_of(lead: Lead, connector: CrmConnector) -> str | None:
    """The value the CRM finds the lead's record by, or None when it has none."""
    if connector.key_source == "lead_id":
        return lead.id
    return lead.email.lower() if lead.email else None


def plan(
    leads: Sequence[Lead],
    account: CrmAccount,
    connector: CrmConnector,
    *,
    default_zone: str,
    crm_fields: Mapping[str, CrmField] | None = None,
    read_fields: Sequence[str] = (),
) -> list[Planned]:
    """Each lead's record under the account's mapping, mode and field policies.

    Reads the CRM's current records first (one batch read per connector batch)
    only when the mode, a field policy or `read_fields` needs them. A lead that
    opted out has its record marked `unsubscribe` where the CRM keeps opt-outs
    outside the fields (HubSpot), until reconciliation has read the opt-out
    back from this account.

    Args:
        leads: the leads to write.
        account: the tenant's CRM account (its mapping and mode).
        connector: the connector to it.
        default_zone: the zone of leads that have none, for date fields.
        crm_fields: the CRM's fields by name (lengths for truncation).
        read_fields: more CRM fields to read (a preview reads every mapped one).
    """
    mapping = account.mapping
    opt_out = mapping.unsubscribes
    account_key = account.budget_key
    mapped: list[tuple[Lead, str | None, MappedLead, bool]] = []
    for lead in leads:
        key = key_of(lead, connector)
        document = lead_document(lead)
        result = mapping.apply(
            document, default_zone=default_zone, crm_fields=crm_fields
        )
        unsubscribe = (
            opt_out is not None
            and opt_out.applies_to(document)
            and not _known_opted_out(lead, account_key)
        )
        mapped.append((lead, key, result, unsubscribe))

    snapshots: dict[str, CrmSnapshot] = {}
    if mapping.needs_current_record or account.mode != "upsert" or read_fields:
        keys = sorted({key for _, key, _, _ in mapped if key is not None})
        wanted = set(mapping.fields_to_read) | set(read_fields)
        wanted.add(connector.key_field)
        for start in range(0, len(keys), connector.batch_size):
            snapshots |= connector.read(
                keys[start : start + connector.batch_size], sorted(wanted)
            )

    planned = []
    for lead, key, result, unsubscribe in mapped:
        warnings = tuple(result.warnings)
        if key is None:
            planned.append(Planned(lead.id, None, skipped="missing_key:email"))
            continue
        snapshot = snapshots.get(key)
        if account.mode == "update_only" and snapshot is None:
            planned.append(Planned(lead.id, key, skipped="not_in_crm"))
            continue
        if account.mode == "create_only" and snapshot is not None:
            planned.append(
                Planned(lead.id, key, skipped="exists_in_crm", snapshot=snapshot)
            )
            continue
        fields = apply_policies(result.fields, mapping, snapshot)
        record = CrmRecord(ref=lead.id, key=key, fields=fields, unsubscribe=unsubscribe)
        planned.append(
            Planned(
                lead.id,
                key,
                record=record,
                snapshot=snapshot,
                warnings=warnings,
                mapped=result.fields,
            )
        )
    return planned


def _known_opted_out(lead: Lead, account_key: str) -> bool:
    """Whether reconciliation read this account's record of the lead as opted out.

    The state read from an account the tenant has since left says nothing of
    the one it syncs to now.
    """
    state = lead.crm_state or {}
    return lead.crm_account == account_key and bool(state.get("opted_out"))


def collapse(records: Sequence[CrmRecord]) -> tuple[list[CrmRecord], dict[str, str]]:
    """One record per key, so the CRM never sees a key twice in a batch (HS-04).

    Later records' non-empty values win (HS-04); an empty one never clears an
    earlier record's value; an opt-out of any of them is kept. Returns the
    records to send and, for every record folded into another, its ref → the
    ref sent.
    """
    first: dict[str, CrmRecord] = {}
    folded: dict[str, str] = {}
    for record in records:
        kept = first.get(record.key)
        if kept is None:
            first[record.key] = record
            continue
        merged = dict(kept.fields) | {
            name: value for name, value in record.fields.items() if value != ""
        }
        first[record.key] = CrmRecord(
            ref=kept.ref,
            key=kept.key,
            fields=merged,
            unsubscribe=kept.unsubscribe or record.unsubscribe,
        )
        folded[record.ref] = kept.ref
    return list(first.values()), folded
