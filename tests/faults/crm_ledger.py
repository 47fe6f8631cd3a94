"""The CRM ledger a fault case ends with: each accepted lead in the CRM once.

`check_ledger` reads both sides of the promise: the CRM's records (through the
sandbox's inspection routes, the very records the vendor's API would return)
and the store (each lead, its `crm_sync` outbox row and its last `crm.*`
timeline event). It lists every way they disagree; `assert_ledger` fails
naming them. It is strict on purpose: a lead is either synced, with the one CRM
record its e-mail has and that record's id, or it waits (`retrying` or
`parked`) for a reason the case can explain, with its outbox row and timeline
saying the same. Anything else — a duplicate, a lost lead, a CRM record no
accepted lead accounts for, a lead stuck `pending` behind a finished row — is
a problem.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from sqlalchemy import select

from leads.store import Store
from leads.store.outbox import CRM_SYNC
from leads.store.tables import Lead, OutboxItem, TimelineEvent

# Where the sandbox lists each vendor's records, and the record's fields that
# hold its id, its e-mail and the lead id we wrote into it.
RECORD_ROUTES = {
    "hubspot": "/_sandbox/hubspot/contacts",
    "salesforce": "/_sandbox/salesforce/leads",
}
# Waiting statuses: the lead is owed a write and says why it has not had one.
WAITING = ("retrying", "parked")
# A parked lead whose reason is one of these is released to come back by
# itself (its row is pending, due later), not set aside for a person.
SELF_RELEASING = frozenset({"rate_limited_daily"})
SYNCED_EVENTS = ("crm.created", "crm.updated")
# How many problems an assertion names before it says "and N more".
SHOWN = 25


@dataclass(frozen=True)
class CrmRecordSeen:
    """One record the sandbox CRM holds, as far as the ledger cares."""

    crm_id: str
    email: str
    # The lead id we wrote into it (HubSpot `orchestrator_lead_id`, Salesforce
    # `Web_Lead_Id__c`), when the mapping wrote one.
    lead_ref: str | None


@dataclass(frozen=True)
class OutboxRowSeen:
    """One `crm_sync` outbox row of a lead."""

    status: str
    available_at: datetime
    lease_owner: str | None
    last_error: str | None


@dataclass(frozen=True)
class LeadSide:
    """What the store says about one lead's sync."""

    lead_id: str
    email: str | None
    status: str
    reason: str | None
    crm_id: str | None
    rows: tuple[OutboxRowSeen, ...]
    # The kind, detail and time of its last `crm.*` event.
    last_event: tuple[str, dict, datetime] | None


@dataclass
class Ledger:
    """Both sides, and every disagreement found between them."""

    synced: dict[str, str] = field(default_factory=dict)
    waiting: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    queued: set[str] = field(default_factory=set)
    records: list[CrmRecordSeen] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def reasons(self) -> Counter[str | None]:
        """How many waiting leads each reason explains."""
        return Counter(reason for _, reason in self.waiting.values())


def crm_records(sandbox: httpx.Client, vendor: str) -> list[CrmRecordSeen]:
    """Every live record the sandbox holds as `vendor` (deleted ones left out)."""
    response = sandbox.get(RECORD_ROUTES[vendor])
    response.raise_for_status()
    seen = []
    for item in response.json():
        if vendor == "hubspot":
            values = item["properties"]
            seen.append(
                CrmRecordSeen(
                    crm_id=str(item["id"]),
                    email=(values.get("email") or "").lower(),
                    lead_ref=values.get("orchestrator_lead_id") or None,
                )
            )
        elif not item.get("IsDeleted"):
            seen.append(
                CrmRecordSeen(
                    crm_id=str(item["Id"]),
                    email=(item.get("Email") or "").lower(),
                    lead_ref=item.get("Web_Lead_Id__c") or None,
                )
            )
    return seen


def read_store(store: Store, tenant: str, lead_ids: Collection[str]) -> list[LeadSide]:
    """Each lead of `lead_ids` the tenant has, with its outbox rows and last event."""
    wanted = list(lead_ids)
    rows: dict[str, list[OutboxRowSeen]] = defaultdict(list)
    last: dict[str, tuple[str, dict, datetime]] = {}
    leads: list[Lead] = []
    with store.read(tenant) as scope:
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            leads += scope.session.scalars(
                scope.select(Lead).where(Lead.id.in_(chunk))
            ).all()
            for row in scope.session.scalars(
                scope.select(OutboxItem).where(
                    OutboxItem.topic == CRM_SYNC, OutboxItem.lead_id.in_(chunk)
                )
            ):
                rows[row.lead_id].append(
                    OutboxRowSeen(
                        row.status, row.available_at, row.lease_owner, row.last_error
                    )
                )
            events = scope.session.execute(
                select(
                    TimelineEvent.lead_id,
                    TimelineEvent.kind,
                    TimelineEvent.detail,
                    TimelineEvent.occurred_at,
                )
                .where(
                    TimelineEvent.tenant_id == tenant,
                    TimelineEvent.lead_id.in_(chunk),
                    TimelineEvent.kind.like("crm.%"),
                )
                .order_by(TimelineEvent.id)
            )
            for lead_id, kind, detail, occurred_at in events:
                last[lead_id] = (kind, dict(detail or {}), occurred_at)
        return [
            LeadSide(
                lead_id=lead.id,
                email=lead.email,
                status=lead.crm_sync_status,
                reason=lead.crm_sync_reason,
                crm_id=lead.crm_id,
                rows=tuple(rows.get(lead.id, ())),
                last_event=last.get(lead.id),
            )
            for lead in leads
        ]


def check_ledger(
    store: Store,
    sandbox: httpx.Client,
    vendor: str,
    accepted: Iterable[str],
    *,
    tenant: str = "default",
    explained_by: Collection[str] = (),
    settled: bool = True,
) -> Ledger:
    """Reads both sides and lists every way they break the promise.

    Args:
        store: the lead store.
        sandbox: a client of the sandbox's own routes.
        vendor: which vendor's records the sandbox CRM is holding.
        accepted: the ids of every lead the product accepted (answered 2xx
            for, or imported); each must be accounted for.
        tenant: their tenant.
        explained_by: the reason codes the case's fault can explain; a lead
            retrying or parked for any other reason is a problem. Empty: every
            lead must be synced.
        settled: True once no run is working (every row done, pending or
            parked: none claimed). False mid-case (a run was killed): a lead
            still queued, its row pending or claimed, is counted as queued.

    Returns:
        The ledger; its `problems` is empty when the promise holds.
    """
    ledger = Ledger(records=crm_records(sandbox, vendor))
    accepted_ids = set(accepted)
    explained = set(explained_by)
    problems = ledger.problems

    by_email: dict[str, list[CrmRecordSeen]] = defaultdict(list)
    for record in ledger.records:
        by_email[record.email].append(record)
    for email, records in by_email.items():
        if len(records) > 1:
            ids = ", ".join(r.crm_id for r in records)
            problems.append(
                f"duplicate: {len(records)} CRM records for {email} ({ids})"
            )

    sides = read_store(store, tenant, accepted_ids)
    found = {side.lead_id for side in sides}
    for lost in sorted(accepted_ids - found):
        problems.append(f"lost: accepted lead {lost} is not in the store")
    lead_emails = {side.email: side.lead_id for side in sides if side.email}
    for record in ledger.records:
        owner = lead_emails.get(record.email)
        if owner is None:
            problems.append(
                f"CRM record {record.crm_id} ({record.email}) has no accepted lead"
            )
        elif record.lead_ref is not None and record.lead_ref != owner:
            problems.append(
                f"CRM record {record.crm_id} names lead {record.lead_ref}, but "
                f"its e-mail is lead {owner}'s"
            )

    for side in sides:
        in_crm = by_email.get(side.email or "", [])
        problems.extend(
            f"lead {side.lead_id}: {problem}"
            for problem in _lead_problems(side, in_crm, explained, settled)
        )
        if side.status == "synced":
            ledger.synced[side.lead_id] = side.crm_id or ""
        elif side.status in WAITING:
            ledger.waiting[side.lead_id] = (side.status, side.reason)
        else:
            ledger.queued.add(side.lead_id)
    return ledger


def _lead_problems(
    side: LeadSide,
    in_crm: list[CrmRecordSeen],
    explained: set[str],
    settled: bool,
) -> list[str]:
    """What is wrong with one lead's account of itself."""
    if len(side.rows) != 1:
        return [f"has {len(side.rows)} crm_sync outbox rows, expected one"]
    row = side.rows[0]
    if settled and row.status == "claimed":
        return [f"its outbox row is still claimed by {row.lease_owner}"]
    kind, detail, recorded_at = side.last_event or ("none", {}, None)

    if side.status == "synced":
        problems = []
        if len(in_crm) != 1:
            problems.append(f"synced, but the CRM has {len(in_crm)} records for it")
        elif in_crm[0].crm_id != side.crm_id:
            problems.append(
                f"synced as {side.crm_id}, but its CRM record is {in_crm[0].crm_id}"
            )
        if row.status != "done":
            problems.append(f"synced, but its outbox row is {row.status}")
        if kind not in SYNCED_EVENTS or detail.get("crm_id") != side.crm_id:
            problems.append(
                f"synced as {side.crm_id}, but its last CRM event is {kind} "
                f"naming {detail.get('crm_id')}"
            )
        return problems

    if side.status in WAITING:
        problems = []
        if side.reason not in explained:
            problems.append(
                f"{side.status} for {side.reason!r}, which this case does not "
                f"explain (expected one of {sorted(explained) or 'none'})"
            )
        if len(in_crm) > 1:
            problems.append(f"{side.status}, and the CRM has {len(in_crm)} records")
        if side.crm_id is not None and in_crm and in_crm[0].crm_id != side.crm_id:
            problems.append(
                f"notes CRM id {side.crm_id}, but its CRM record is {in_crm[0].crm_id}"
            )
        released = side.status == "retrying" or side.reason in SELF_RELEASING
        expected_row = "pending" if released else "parked"
        if row.status != expected_row:
            problems.append(
                f"{side.status} ({side.reason}), but its outbox row is {row.status}, "
                f"expected {expected_row}"
            )
        elif released and (recorded_at is None or row.available_at <= recorded_at):
            problems.append(
                f"{side.status}, but its row was due as it was recorded, not later"
            )
        if not row.last_error:
            problems.append(f"{side.status}, but its outbox row names no error")
        if kind != f"crm.{side.status}" or detail.get("reason") != side.reason:
            problems.append(
                f"{side.status} ({side.reason}), but its last CRM event is {kind} "
                f"({detail.get('reason')})"
            )
        return problems

    if (
        not settled
        and side.status == "pending"
        and row.status in ("pending", "claimed")
    ):
        # Still queued behind a run that was stopped: the next run owes it.
        return [] if len(in_crm) <= 1 else [f"queued, and in the CRM {len(in_crm)}x"]
    return [
        f"status {side.status!r} with its outbox row {row.status}: unexplained "
        f"(last CRM event {kind})"
    ]


def assert_ledger(
    store: Store,
    sandbox: httpx.Client,
    vendor: str,
    accepted: Iterable[str],
    **options: object,
) -> Ledger:
    """`check_ledger`, failing with the problems found, if any.

    Returns:
        The ledger, for the case's own checks (how many waited, and why).
    """
    accepted = list(accepted)
    ledger = check_ledger(store, sandbox, vendor, accepted, **options)  # type: ignore[arg-type]
    if ledger.problems:
        shown = "\n  ".join(ledger.problems[:SHOWN])
        more = len(ledger.problems) - SHOWN
        tail = f"\n  … and {more} more" if more > 0 else ""
        raise AssertionError(
            f"the CRM ledger of {len(accepted)} accepted leads does not balance "
            f"({len(ledger.records)} CRM records, {len(ledger.synced)} synced, "
            f"{len(ledger.waiting)} waiting, {len(ledger.queued)} queued):\n  "
            f"{shown}{tail}"
        )
    return ledger
