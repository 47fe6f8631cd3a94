"""Reading the CRM's changes back: converted, lifecycle stage, opted out, replied.

The e-mail stop conditions read what this leaves in each lead's `crm_state`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from sqlalchemy import select

from connectors.crm.accounts import CrmAccount
from connectors.crm.protocol import CrmConnector, CrmSnapshot
from connectors.crm.sync import account_detail
from leads.store import audit, outbox, timeline
from leads.store.database import Store, TenantScope
from leads.store.tables import CrmReconciliation, Lead, utcnow

logger = logging.getLogger(__name__)

# The CRM fields each vendor keeps the lead's state in.
STATE_FIELDS = {
    "hubspot": (
        "lifecyclestage",
        "hs_lead_status",
        "hs_email_optout",
        "hs_sales_email_last_replied",
    ),
    "salesforce": ("Status", "IsConverted", "HasOptedOutOfEmail"),
}
# HubSpot stages past a lead's: the person became a deal or a customer.
CONVERTED_STAGES = frozenset({"opportunity", "customer", "evangelist"})
# The first run looks this far back; later runs start where the last ended.
FIRST_WINDOW = timedelta(days=1)
# Search indexes lag writes by seconds (HubSpot documents it): stop short of
# now, and start each window a little before the last one ended.
INDEX_LAG = timedelta(seconds=10)
OVERLAP = timedelta(minutes=1)
CHUNK = 500


def state_of(provider: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The lead's CRM state, in our words, from the vendor's fields."""
    if provider == "hubspot":
        stage = fields.get("lifecyclestage") or None
        replied = fields.get("hs_sales_email_last_replied") or None
        return {
            "lifecycle_stage": stage,
            "status": fields.get("hs_lead_status") or None,
            "converted": stage in CONVERTED_STAGES,
            "opted_out": _true(fields.get("hs_email_optout")),
            "replied_at": replied,
        }
    status = fields.get("Status") or None
    return {
        "lifecycle_stage": None,
        "status": status,
        "converted": _true(fields.get("IsConverted")),
        "opted_out": _true(fields.get("HasOptedOutOfEmail")),
        "replied_at": None,
    }


def _notable(state: Mapping[str, Any]) -> bool:
    """Whether a state says something a person acts on (stop conditions)."""
    return bool(state["converted"] or state["opted_out"] or state["replied_at"])


def _true(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def reconcile(
    store: Store,
    tenant_id: str,
    account: CrmAccount,
    connector: CrmConnector,
    *,
    flow_run_id: str | None = None,
    now: datetime | None = None,
) -> Counter[str]:
    """Pulls every CRM change since the last run onto the tenant's leads.

    Records are matched to leads by CRM id. A lead whose state changed gets the
    new `crm_state` and a `crm.status_changed` timeline event naming what
    changed (with the run, `flow_run_id` or the current one); the watermark
    then moves to the end of the window read.

    Returns:
        Counts: `read` (CRM records seen), `changed` (leads updated).
    """
    now = now or utcnow()
    key = account.budget_key
    with store.read(tenant_id) as scope:
        mark = scope.session.get(CrmReconciliation, (tenant_id, key))
        start = mark.reconciled_until - OVERLAP if mark else now - FIRST_WINDOW
    end = now - INDEX_LAG
    counts: Counter[str] = Counter()
    if end <= start:
        return counts

    fields = list(STATE_FIELDS[account.provider])
    for chunk in _chunks(connector.changed(start, end, fields), CHUNK):
        counts["read"] += len(chunk)
        counts["changed"] += _apply(store, tenant_id, account, chunk, flow_run_id)

    with store.write(tenant_id) as scope:
        mark = scope.session.get(CrmReconciliation, (tenant_id, key))
        if mark is None:
            scope.session.add(
                CrmReconciliation(
                    tenant_id=tenant_id, account=key, reconciled_until=end
                )
            )
        else:
            mark.reconciled_until = end
    return counts


# What the CRM may say that ends a lead's e-mail sequences.
STOPPING = frozenset({"converted", "opted_out", "lifecycle_stage", "replied_at"})


def _apply(
    store: Store,
    tenant_id: str,
    account: CrmAccount,
    snapshots: list[CrmSnapshot],
    flow_run_id: str | None,
) -> int:
    provider = account.provider
    by_id = {snapshot.crm_id: snapshot for snapshot in snapshots}
    changed = 0
    with store.write(tenant_id) as scope:
        # Ids are only unique within one account: a lead synced to another
        # (before the tenant moved) must not take this one's record's state.
        leads = scope.session.scalars(
            scope.select(Lead).where(
                Lead.crm_id.in_(list(by_id)), Lead.crm_account == account.budget_key
            )
        )
        for lead in leads:
            changed += apply_state(
                scope,
                lead,
                provider,
                by_id[lead.crm_id].fields,
                source="crm_reconcile",
                detail=account_detail(account),
                flow_run_id=flow_run_id,
            )
    return changed


def apply_state(
    scope: TenantScope,
    lead: Lead,
    provider: str,
    fields: Mapping[str, Any],
    *,
    source: str,
    detail: Mapping[str, Any] | None = None,
    flow_run_id: str | None = None,
) -> bool:
    """Sets the lead's CRM state from the vendor's fields; whether it changed.

    A change that can stop a sequence wakes the lead's enrolments; one worth a
    person's notice goes on the timeline as `crm.status_changed`.
    """
    state = state_of(provider, fields)
    old = dict(lead.crm_state or {})
    differences = {
        name: {"was": old.get(name), "now": value}
        for name, value in state.items()
        if old.get(name) != value
    }
    if not differences:
        return False
    stage_was = old.get("lifecycle_stage")
    if stage_was and "lifecycle_stage" in differences:
        # When a stage moved (not its first reading): a sequence stops for a
        # move after its enrolment, whenever it looks next.
        state["lifecycle_stage_changed_at"] = utcnow().isoformat()
    elif "lifecycle_stage_changed_at" in old:
        state["lifecycle_stage_changed_at"] = old["lifecycle_stage_changed_at"]
    lead.crm_state = state
    if differences.keys() & STOPPING:
        outbox.wake_enrolments(scope, lead.id)
    if state["opted_out"] and not old.get("opted_out") and not lead.email_opt_out:
        # The CRM's opt-out now stops this lead's e-mail (`leads.suppression`).
        # One the product made itself, read back, was recorded when it was made.
        audit.append_decision(
            scope.session,
            scope.tenant_id,
            "lead.unsubscribed",
            "lead",
            lead.id,
            {"source": source, "crm_id": lead.crm_id},
        )
    if not old and not _notable(state):
        # The first read of a lead the CRM holds as we wrote it: its state is
        # noted, but nothing happened worth a timeline event.
        return True
    timeline.record(
        scope,
        lead,
        "crm.status_changed",
        source=source,
        detail={**(detail or {}), "crm_id": lead.crm_id, "changes": differences},
        flow_run_id=flow_run_id,
    )
    return True


def tenants_with_crm_records(store: Store) -> list[str]:
    """Tenants having any lead the CRM holds (the only ones worth reconciling)."""
    query = select(Lead.tenant_id).where(Lead.crm_id.is_not(None)).distinct()
    with store.engine.connect() as connection:
        return list(connection.scalars(query))


def _chunks(items: Iterable[CrmSnapshot], size: int) -> Iterator[list[CrmSnapshot]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
