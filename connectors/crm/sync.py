"""Writing claimed leads to their tenant's CRM and recording each lead's result.

The drain (`flows/crm_sync.py`) claims `crm_sync` outbox rows; `CrmSync.handle`
takes one batch of claims, writes the leads through the tenant's connector, and
settles every claim: done when the CRM holds the lead, released with a back-off
when the failure may pass (429, 5xx, timeouts), parked with the vendor's reason
when it cannot. Every lead of a batch gets a result: a lead the CRM returned no
result for is a failure (`unknown`), never a success.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from connectors.crm.accounts import CrmAccount
from connectors.crm.erasure import CrmErasures
from connectors.crm.errors import (
    CrmAuthError,
    CrmConfigError,
    CrmDailyLimitReached,
    CrmError,
)
from connectors.crm.protocol import CrmConnector, CrmField, SyncFailure, SyncResult
from connectors.crm.records import Planned, collapse, plan
from connectors.crm.saved_accounts import resolve
from connectors.crm.store_budget import StoreBudget
from leads.erasure import is_crm_erasure
from leads.settings import Settings
from leads.store import audit, outbox, timeline
from leads.store.claims import (
    Claim,
    complete,
    extend_all,
    finish_all_in,
    finish_in,
    held_in,
    release,
    release_in,
)
from leads.store.database import Store
from leads.store.tables import CrmSyncTarget, Lead, OutboxItem, utcnow
from leads.tracebacks import valueless

logger = logging.getLogger(__name__)

# The timeline source of every sync result.
SOURCE = "crm_sync"

# A failure that may pass is tried again after 30 s, 1 min, 2 min … up to an
# hour; after this many attempts the lead is parked for a person to look at.
RETRY_BASE = timedelta(seconds=30)
RETRY_CAP = timedelta(hours=1)
MAX_ATTEMPTS = 10
# A tenant with no CRM configured keeps its rows and looks again this much later;
# so does one whose sync failed in a way we did not foresee (a bug), up to
# MAX_ATTEMPTS times.
NO_CRM_RECHECK = timedelta(minutes=5)
# Our codes for credentials or settings the account refuses: a person must act.
AUTH_CODES = frozenset({"auth", "config"})
# How long a run holds its claims; renewed before every CRM write, so a batch
# slowed by retries and rate-limit waits is never taken over mid-write.
DEFAULT_LEASE = timedelta(minutes=10)


@dataclass(frozen=True)
class LeadOutcome:
    """What one lead's sync came to, before it is recorded."""

    status: str  # synced, retrying, parked, skipped
    reason: str | None = None
    result: SyncResult | None = None
    retry_at: datetime | None = None
    message: str | None = None
    # False when the lead only waited (the day's allowance was spent): the
    # attempt is not held against it.
    counts_attempt: bool = True

    @property
    def counted_as(self) -> str:
        """The run's count this outcome adds to: created, updated, skipped…"""
        if self.status == "synced" and self.result is not None:
            return self.result.outcome
        return self.status


class CrmSync:
    """One drain run's CRM work: a connector per tenant, kept for the run.

    Args:
        store: the lead store.
        settings: read for `ORCH_CRM` and the default time zone.
        flow_run_id: recorded on each lead's timeline; None: the flow run
            current when each batch is recorded (`leads.flow_run`).
        accounts: the tenant's CRM account, or None when it has none
            (`connectors.crm.saved_accounts.resolve` when not given).
        now: the clock.
        sleep: how waits (rate budget, back-off between retries) are spent.
        lease: how long the run's claims last; renewed before each CRM write.
    """

    def __init__(
        self,
        store: Store,
        settings: Settings,
        flow_run_id: str | None,
        *,
        accounts: Callable[[str], CrmAccount | None] | None = None,
        now: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        lease: timedelta = DEFAULT_LEASE,
    ) -> None:
        self.store = store
        self.lease = lease
        self.settings = settings
        self.flow_run_id = flow_run_id
        self._accounts = accounts or (lambda tenant: resolve(store, tenant, settings))
        self._now = now
        self._sleep = sleep
        self._connected: dict[str, tuple[CrmAccount, CrmConnector] | None] = {}
        self._fields: dict[str, dict[str, CrmField]] = {}
        self._budgets: dict[str, StoreBudget] = {}
        # Erased leads' rows share the topic: their records are deleted instead.
        self._erasures = CrmErasures(
            store,
            settings,
            self.connection,
            lease=lease,
            backoff=backoff,
            max_attempts=MAX_ATTEMPTS,
            on_daily_limit=self._note_daily_limit,
            now=now,
        )

    def connection(self, tenant_id: str) -> tuple[CrmAccount, CrmConnector] | None:
        """The tenant's account and a connector to it, built once per run.

        Raises:
            CrmError: the account is configured but cannot be used.
        """
        if tenant_id not in self._connected:
            account = self._accounts(tenant_id)
            if account is None:
                self._connected[tenant_id] = None
            else:
                follow_account(self.store, tenant_id, account, self._now())
                budget = StoreBudget.for_account(self.store, account, sleep=self._sleep)
                self._budgets[tenant_id] = budget
                connector = account.connect(budget, sleep=self._sleep)
                self._connected[tenant_id] = (account, connector)
        return self._connected[tenant_id]

    def follow_accounts(self) -> int:
        """Notices every tenant whose CRM account changed, and queues its leads.

        Run at the start of a sync run: a tenant whose leads are all synced
        has nothing claimed, so only this finds that its account changed.

        Returns:
            How many leads were queued again.
        """
        with self.store.engine.connect() as connection:
            tenants = list(connection.scalars(select(CrmSyncTarget.tenant_id)))
        queued = 0
        for tenant_id in tenants:
            try:
                account = self._accounts(tenant_id)
            except Exception:
                # Its leads are parked or retried with the reason when claimed.
                logger.warning("tenant %s: its CRM account cannot be used", tenant_id)
                continue
            if account is not None:
                queued += follow_account(self.store, tenant_id, account, self._now())
        return queued

    def crm_fields(
        self, tenant_id: str, connector: CrmConnector
    ) -> dict[str, CrmField]:
        """The CRM's fields by name (their lengths cut text), read once per run."""
        if tenant_id not in self._fields:
            self._fields[tenant_id] = {
                field.name: field for field in connector.list_fields()
            }
        return self._fields[tenant_id]

    def close(self) -> None:
        """Closes every connector the run opened."""
        for connected in self._connected.values():
            if connected is not None:
                connected[1].close()
        self._connected.clear()

    def handle(self, claims: Sequence[Claim]) -> dict[str, int]:
        """Syncs one batch of claims and settles each; returns counts by outcome."""
        counts: Counter[str] = Counter()
        by_tenant: dict[str, list[Claim]] = defaultdict(list)
        for held in claims:
            by_tenant[held.tenant_id].append(held)
        for tenant_id, held in by_tenant.items():
            erasures = [h for h in held if is_crm_erasure(h.topic, h.key)]
            if erasures:
                counts.update(self._erasures.handle(tenant_id, erasures))
            held = [h for h in held if not is_crm_erasure(h.topic, h.key)]
            if held:
                counts.update(self._sync_tenant(tenant_id, held))
        return dict(counts)

    def _sync_tenant(self, tenant_id: str, claims: list[Claim]) -> Counter[str]:
        try:
            return self._sync_tenant_or_fail(tenant_id, claims)
        except Exception as exc:
            # Not foreseen (a bug, the store gone away mid-batch): the tenant's
            # leads wait and are tried again, each attempt counted, so one
            # tenant's trouble neither stops the others nor loops for ever.
            logger.error("CRM sync of tenant %s failed\n%s", tenant_id, valueless(exc))
            outcome = LeadOutcome(
                "retrying",
                reason="internal_error",
                message=f"internal_error: {type(exc).__name__}",
                retry_at=self._now() + NO_CRM_RECHECK,
            )
            return self._settle_all(tenant_id, None, claims, outcome)

    def _sync_tenant_or_fail(self, tenant_id: str, claims: list[Claim]) -> Counter[str]:
        try:
            connected = self.connection(tenant_id)
        except CrmError as exc:
            # The account's settings are broken: every lead waits for a fix.
            return self._settle_all(
                tenant_id, None, claims, _whole_batch(exc, self._now())
            )
        if connected is None:
            retry_at = self._now() + NO_CRM_RECHECK
            for held in claims:
                release(
                    self.store,
                    held,
                    error="no CRM configured",
                    retry_at=retry_at,
                    count_attempt=False,
                )
            return Counter(no_crm=len(claims))
        account, connector = connected

        with self.store.read(tenant_id) as scope:
            rows = scope.session.scalars(
                scope.select(Lead).where(Lead.id.in_([c.lead_id for c in claims]))
            ).all()
        leads = {lead.id: lead for lead in rows}
        counts: Counter[str] = Counter()
        gone = [held for held in claims if held.lead_id not in leads]
        for held in gone:
            # Erased or deleted since it was queued: nothing is owed any more.
            complete(self.store, held)
            counts["gone"] += 1
        claims = [held for held in claims if held.lead_id in leads]
        if not claims:
            return counts

        try:
            planned = plan(
                [leads[held.lead_id] for held in claims],
                account,
                connector,
                default_zone=self.settings.default_timezone,
                crm_fields=self.crm_fields(tenant_id, connector),
            )
            outcomes = self._write(tenant_id, connector, planned, claims)
        except CrmError as exc:
            self._note_daily_limit(tenant_id, exc)
            counts.update(
                self._settle_all(
                    tenant_id, account, claims, _whole_batch(exc, self._now())
                )
            )
            return counts
        warnings = {item.lead_id: item.warnings for item in planned}
        counts.update(self._record(tenant_id, account, claims, outcomes, warnings))
        return counts

    def _write(
        self,
        tenant_id: str,
        connector: CrmConnector,
        planned: list[Planned],
        claims: list[Claim],
    ) -> dict[str, LeadOutcome]:
        attempts = {held.lead_id: held.attempts for held in claims}
        by_lead = {held.lead_id: held for held in claims}
        outcomes: dict[str, LeadOutcome] = {}
        records = []
        for item in planned:
            if item.record is None:
                crm_id = item.snapshot.crm_id if item.snapshot else None
                result = SyncResult(item.lead_id, "updated", crm_id=crm_id)
                outcomes[item.lead_id] = LeadOutcome(
                    "skipped", reason=item.skipped, result=result
                )
            else:
                records.append(item.record)
        sent, folded = collapse(records)
        # Calls of the connector's batch size; one call for the whole batch
        # when it is past the connector's bulk threshold (Salesforce Bulk 2.0).
        bulk = getattr(connector, "bulk_threshold", None)
        size = (
            len(sent) if bulk is not None and len(sent) > bulk else connector.batch_size
        )
        results: dict[str, SyncResult] = {}
        # A chunk the CRM refused whole (auth, the day's limit, still down
        # after the connector's retries) stops the rest: chunks written before
        # it keep their results.
        stopped: dict[str, CrmError] = {}
        lost: set[str] = set()
        stop: CrmError | None = None
        for start in range(0, len(sent), size):
            chunk = sent[start : start + size]
            # Renewed before every write: a claim another run took over
            # (ours ran out while we waited) is that run's to write now.
            mine = [by_lead[record.ref] for record in chunk]
            held = extend_all(self.store, tenant_id, mine, self.lease)
            taken = {h.lead_id for h in mine if h.id not in held}
            lost |= taken
            chunk = [record for record in chunk if record.ref not in taken]
            if not chunk:
                continue
            if stop is None:
                try:
                    for result in connector.upsert(chunk):
                        results[result.ref] = result
                    continue
                except CrmError as exc:
                    stop = exc
                    self._note_daily_limit(tenant_id, exc)
            stopped |= {record.ref: stop for record in chunk}
        for ref, kept in folded.items():
            if kept in lost:
                lost.add(ref)
            elif kept in stopped:
                stopped[ref] = stopped[kept]
            elif kept in results:
                results[ref] = SyncResult(
                    ref,
                    results[kept].outcome,
                    crm_id=results[kept].crm_id,
                    failure=results[kept].failure,
                    note=results[kept].note or "same_key_in_batch",
                )
        now = self._now()
        for record in records:
            if record.ref in lost:
                outcomes[record.ref] = LeadOutcome("lost")
                continue
            if record.ref in stopped:
                outcomes[record.ref] = _retry_or_park(
                    _whole_batch(stopped[record.ref], now), attempts[record.ref], now
                )
                continue
            result = results.get(record.ref)
            if result is None:
                result = SyncResult(
                    record.ref,
                    "failed",
                    failure=SyncFailure(
                        "unknown", "the CRM returned no result for it", retryable=True
                    ),
                )
            outcomes[record.ref] = _outcome(result, attempts[record.ref], now)
        return outcomes

    def _note_daily_limit(self, tenant_id: str, exc: CrmError) -> None:
        """Shares a daily-limit answer with every worker through the budget."""
        budget = self._budgets.get(tenant_id)
        if isinstance(exc, CrmDailyLimitReached) and budget is not None:
            budget.block_until(exc.resets_at or self._now() + timedelta(hours=1))

    def _record(
        self,
        tenant_id: str,
        account: CrmAccount | None,
        claims: list[Claim],
        outcomes: dict[str, LeadOutcome],
        warnings: Mapping[str, tuple[str, ...]] | None = None,
    ) -> Counter[str]:
        """Stores each lead's result and settles its claim, in one transaction.

        Together, so a lead never shows a result its outbox row does not
        agree with. A lead that changed while it was being written (its row's
        generation moved on) keeps its CRM id but shows `pending`: the newer
        values are due to be written too. A lead another run took over
        meanwhile is left as that run records it, and counted `lost`.
        """
        warnings = warnings or {}
        now = self._now()
        # Another run holds a lost claim now and records its own result.
        lost = [h for h in claims if outcomes[h.lead_id].status == "lost"]
        claims = [h for h in claims if outcomes[h.lead_id].status != "lost"]
        with self.store.write(tenant_id) as scope:
            # A lease can also run out while the CRM is answering, and another
            # run take the lead over and record it first: only claims still
            # ours are recorded, or a late answer would overwrite that run's.
            mine = held_in(scope.session, claims)
            lost += [h for h in claims if h.id not in mine]
            claims = [h for h in claims if h.id in mine]
            counts = Counter(outcomes[h.lead_id].counted_as for h in claims)
            if lost:
                counts["lost"] = len(lost)
            done = [
                h for h in claims if outcomes[h.lead_id].status in ("synced", "skipped")
            ]
            # Claims first, in as few statements as may be (one for every lead
            # written), before any lead is touched: nothing to flush between.
            current = finish_all_in(scope.session, done, "done")
            for held in claims:
                outcome = outcomes[held.lead_id]
                if outcome.status in ("synced", "skipped"):
                    continue
                if outcome.retry_at is not None:
                    settled = release_in(
                        scope.session,
                        held,
                        error=outcome.message or outcome.reason or "failed",
                        retry_at=outcome.retry_at,
                        count_attempt=outcome.counts_attempt,
                    )
                else:
                    settled = finish_in(
                        scope.session,
                        held,
                        "parked",
                        outcome.message or outcome.reason or "",
                    )
                if settled:
                    current.add(held.id)

            leads = {
                lead.id: lead
                for lead in scope.session.scalars(
                    scope.select(Lead).where(Lead.id.in_([h.lead_id for h in claims]))
                )
            }
            events = []
            for held in claims:
                lead = leads.get(held.lead_id)
                if lead is None:
                    continue
                outcome = outcomes[held.lead_id]
                detail = _apply(lead, account, outcome, warnings.get(lead.id, ()), now)
                if outcome.status in ("retrying", "parked"):
                    detail["attempt"] = held.attempts
                events.append(
                    timeline.event_row(
                        scope,
                        lead.id,
                        f"crm.{outcome.counted_as}",
                        source=SOURCE,
                        detail=detail,
                        flow_run_id=self.flow_run_id,
                        occurred_at=now,
                    )
                )
                if held.id not in current and outcome.status != "retrying":
                    lead.crm_sync_status = "pending"
            # One statement for the batch's events: the sync writes hundreds of
            # leads a second, and an ORM insert per lead would cost most of it.
            timeline.append_all(scope, events)
            audit.append_decisions(
                scope.session,
                tenant_id,
                "crm.parked",
                "lead",
                {
                    held.lead_id: {
                        "reason": outcomes[held.lead_id].reason,
                        "attempt": held.attempts,
                    }
                    for held in claims
                    if held.lead_id in leads
                    and outcomes[held.lead_id].status == "parked"
                },
                flow_run_id=self.flow_run_id,
            )
        return counts

    def _settle_all(
        self,
        tenant_id: str,
        account: CrmAccount | None,
        claims: list[Claim],
        outcome: LeadOutcome,
    ) -> Counter[str]:
        """Every claim of the batch ends the same way (auth, daily limit, CRM down)."""
        logger.warning(
            "CRM sync of %d leads of tenant %s stopped: %s",
            len(claims),
            tenant_id,
            outcome.reason,
        )
        now = self._now()
        outcomes = {
            held.lead_id: _retry_or_park(outcome, held.attempts, now) for held in claims
        }
        return self._record(tenant_id, account, claims, outcomes)


def backoff(attempts: int, retry_after: float | None = None) -> timedelta:
    """How long to wait before attempt `attempts + 1`, honouring the vendor's wish."""
    delay = min(RETRY_CAP, RETRY_BASE * 2 ** max(0, attempts - 1))
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=retry_after))
    return delay


def reason_of(failure: SyncFailure) -> str:
    """The reason stored on the lead: `validation:<field>` or the vendor's code."""
    if failure.retryable or failure.code in AUTH_CODES:
        return failure.code
    if failure.fields:
        return f"validation:{failure.fields[0]}"
    return failure.code


def _outcome(result: SyncResult, attempts: int, now: datetime) -> LeadOutcome:
    if result.ok:
        return LeadOutcome("synced", result=result)
    failure = result.failure or SyncFailure("unknown", "no reason given", True)
    message = f"{failure.code}: {failure.message}"
    if failure.fields:
        message += f" (fields: {', '.join(failure.fields)})"
    outcome = LeadOutcome(
        "retrying" if failure.retryable else "parked",
        reason=reason_of(failure),
        result=result,
        message=message[:1000],
        retry_at=now + backoff(attempts, failure.retry_after)
        if failure.retryable
        else None,
    )
    return _retry_or_park(outcome, attempts, now)


def _retry_or_park(outcome: LeadOutcome, attempts: int, now: datetime) -> LeadOutcome:
    """A retryable outcome past `MAX_ATTEMPTS` becomes parked for a person to see."""
    if outcome.status != "retrying":
        return outcome
    if attempts >= MAX_ATTEMPTS:
        return LeadOutcome(
            "parked",
            reason=f"gave_up:{outcome.reason}",
            result=outcome.result,
            message=f"gave up after {attempts} attempts; last: {outcome.message}",
        )
    if outcome.retry_at is None:
        return LeadOutcome(
            "retrying",
            reason=outcome.reason,
            result=outcome.result,
            message=outcome.message,
            retry_at=now + backoff(attempts),
        )
    return outcome


def _whole_batch(exc: CrmError, now: datetime) -> LeadOutcome:
    """What a failure of the whole batch means for each of its leads."""
    message = f"{exc.code}: {exc}"[:1000]
    if isinstance(exc, CrmDailyLimitReached):
        # Parked, but released to come back by itself once the window resets.
        resets_at = exc.resets_at or now + timedelta(hours=1)
        return LeadOutcome(
            "parked",
            reason="rate_limited_daily",
            message=message,
            retry_at=resets_at,
            counts_attempt=False,
        )
    if isinstance(exc, CrmAuthError | CrmConfigError) or not exc.retryable:
        return LeadOutcome("parked", reason=exc.code, message=message)
    return LeadOutcome(
        "retrying",
        reason=exc.code,
        message=message,
        retry_at=now + timedelta(seconds=exc.retry_after) if exc.retry_after else None,
    )


def _apply(
    lead: Lead,
    account: CrmAccount | None,
    outcome: LeadOutcome,
    warnings: Iterable[str],
    now: datetime,
) -> dict[str, object]:
    """Stores the lead's sync status; returns the detail of its timeline event.

    The event (`crm.<outcome>`, see `LeadOutcome.counted_as`) names the CRM
    and account, the CRM's id of the lead, and for a failure our reason code
    and the vendor's.
    """
    result = outcome.result
    lead.crm_sync_status = outcome.status
    lead.crm_sync_reason = outcome.reason
    detail: dict[str, object] = {}
    if account is not None:
        detail |= account_detail(account)
    if outcome.status in ("synced", "skipped"):
        if result is not None and result.crm_id:
            lead.crm_id = result.crm_id
            lead.crm_account = account.budget_key if account is not None else None
        if outcome.status == "synced":
            lead.crm_synced_at = now
        detail["crm_id"] = lead.crm_id
        if result is not None and result.note and outcome.status == "synced":
            detail["note"] = result.note
        if outcome.reason:
            detail["reason"] = outcome.reason
        if warnings:
            detail["warnings"] = list(warnings)
        return detail

    detail |= {"crm_id": lead.crm_id, "reason": outcome.reason}
    if result is not None and result.failure is not None:
        detail |= {
            "code": result.failure.code,
            "message": result.failure.message,
            "fields": list(result.failure.fields),
        }
    elif outcome.message:
        detail["message"] = outcome.message
    if outcome.retry_at is not None:
        detail["next_attempt_at"] = outcome.retry_at.isoformat()
    return detail


def account_detail(account: CrmAccount) -> dict[str, object]:
    """The CRM a timeline event names: its kind, vendor API and account key.

    `crm` is `sandbox` for the bundled sandbox, else the vendor; the account
    key is a digest (`CrmAccount.budget_key`), never a credential.
    """
    return {
        "crm": "sandbox" if account.origin == "sandbox" else account.provider,
        "provider": account.provider,
        "account": account.budget_key,
    }


def retry_parked(
    store: Store, tenant_id: str, lead_ids: list[str] | None = None
) -> int:
    """Makes the tenant's parked and retrying leads (all, or these) due now.

    A person retrying knows something the back-off does not (the CRM is back,
    the account was fixed). By lead status, so leads waiting out a spent daily
    allowance, whose rows are queued for after the reset, come back too.

    Returns:
        How many leads were requeued.
    """
    now = utcnow()
    with store.write(tenant_id) as scope:
        query = scope.select(Lead).where(
            Lead.crm_sync_status.in_(("parked", "retrying"))
        )
        if lead_ids is not None:
            query = query.where(Lead.id.in_(lead_ids))
        leads = list(scope.session.scalars(query.with_for_update()))
        if not leads:
            return 0
        for lead in leads:
            lead.crm_sync_status = "pending"
            lead.crm_sync_reason = None
        scope.session.execute(
            update(OutboxItem)
            .where(
                OutboxItem.tenant_id == tenant_id,
                OutboxItem.topic == outbox.CRM_SYNC,
                OutboxItem.lead_id.in_([lead.id for lead in leads]),
                OutboxItem.status.in_(("parked", "pending")),
            )
            .values(status="pending", available_at=now, attempts=0, last_error=None)
            .execution_options(synchronize_session=False)
        )
    return len(leads)


def follow_account(
    store: Store, tenant_id: str, account: CrmAccount, now: datetime
) -> int:
    """Queues every lead of the tenant again when its CRM account has changed.

    The first sync to an account notes it. A later one to another account (the
    sandbox swapped for a real CRM, one portal for another, or new credentials,
    which cannot be told apart from a new account) queues every lead the old
    account held or refused, so the new one gets them all. Writes are upserts
    by key, so a lead the new account already has is updated, not doubled.

    Returns:
        How many leads were queued again.
    """
    key = account.budget_key
    with store.write(tenant_id) as scope:
        target = scope.session.get(CrmSyncTarget, tenant_id, with_for_update=True)
        if target is None:
            try:
                with scope.session.begin_nested():
                    scope.session.add(
                        CrmSyncTarget(tenant_id=tenant_id, account=key, since=now)
                    )
                return 0
            except IntegrityError:
                # Another run's first sync noted it meanwhile: PostgreSQL
                # locks no row that is not there yet, so both tried to add it.
                target = scope.session.get(
                    CrmSyncTarget,
                    tenant_id,
                    with_for_update=True,
                    populate_existing=True,
                )
        if target is None or target.account == key:
            return 0
        moved = scope.session.execute(
            update(OutboxItem)
            .where(
                OutboxItem.tenant_id == tenant_id,
                OutboxItem.topic == outbox.CRM_SYNC,
                OutboxItem.status.in_(("done", "parked")),
            )
            .values(
                status="pending",
                generation=OutboxItem.generation + 1,
                available_at=now,
                attempts=0,
                last_error=None,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        scope.session.execute(
            update(Lead)
            .where(
                Lead.tenant_id == tenant_id,
                Lead.crm_sync_status.in_(("synced", "skipped", "parked")),
            )
            .values(crm_sync_status="pending", crm_sync_reason=None)
            .execution_options(synchronize_session=False)
        )
        target.account = key
        target.since = now
    logger.info(
        "tenant %s now syncs to another %s account: %d leads queued for it",
        tenant_id,
        account.provider,
        moved,
    )
    return moved
