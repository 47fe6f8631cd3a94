"""The CRM sync drain: every waiting lead written to its CRM as one record."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from prefect import flow, get_run_logger, runtime
from pydantic import Field

from connectors.crm.sync import DEFAULT_LEASE, CrmSync
from flows.summaries import publish_summary
from leads.collector import collect_less_often
from leads.priority import follow_own_niceness
from leads.settings import get_settings
from leads.store import Store
from leads.store.outbox import CRM_SYNC, CRM_SYNC_DRAIN
from leads.tracebacks import withholding
from tasks.crm_sync import upsert_leads
from tasks.drain import DrainLimits, drain
from tasks.pending import wake_drains


@flow(name="crm-sync", log_prints=False)
@withholding
def crm_sync(
    lead_id: str | None = None,
    batch_size: Annotated[int, Field(ge=1, le=2000)] = 200,
    # Longer than the e-mail drain's: a lead that arrives while a run polls is in
    # the CRM in under a second, where a new run takes seconds to start. An
    # empty poll is one read, twice a second; the run's presence is written
    # every 5 s.
    idle_grace_seconds: Annotated[float, Field(ge=0, le=60)] = 20.0,
) -> dict[str, int]:
    """Drains the `crm_sync` outbox until it stays empty for a grace period.

    Guarantees: every lead queued for sync ends synced (with its CRM id on its
    timeline), retrying (due again after a back-off), or parked with the
    vendor's reason — none is dropped, and a run never reports a lead synced
    that the CRM did not confirm. Delivery is at least once, and writes are
    upserts by the CRM's key, so a lead written twice (a run killed after the
    CRM answered) is still one CRM record. Two runs never hold the same lead:
    claims are renewed before every CRM write, and a claim whose run died
    returns to the queue when its lease runs out.

    Args:
        lead_id: one lead only (on-demand runs); None drains every tenant.
        batch_size: leads claimed per batch.
        idle_grace_seconds: how long to keep polling once nothing is due.

    Returns:
        Counts by outcome (`created`, `updated`, `skipped`, `retrying`,
        `parked`, `lost`, `no_crm`, `gone`), `batches`, and
        `requeued_for_new_account` when a tenant's CRM account changed.
    """
    collect_less_often()
    follow_own_niceness()
    logger = get_run_logger()
    settings = get_settings()
    store = Store(settings.store_url)
    run_id = str(runtime.flow_run.id)
    sync = CrmSync(store, settings, run_id, lease=DEFAULT_LEASE)

    try:
        requeued = sync.follow_accounts()
        totals = drain(
            store,
            CRM_SYNC,
            owner=run_id,
            handle=partial(upsert_leads, sync=sync),
            limits=DrainLimits(
                batch_size=batch_size,
                idle_grace_seconds=idle_grace_seconds,
                lease=DEFAULT_LEASE,
            ),
            lead_id=lead_id,
            present_as=CRM_SYNC_DRAIN,
            wake=wake_drains,
        )
    finally:
        sync.close()
        store.dispose()

    if requeued:
        totals["requeued_for_new_account"] = requeued
    logger.info("CRM sync: %s", totals or "nothing due")
    publish_summary(
        "crm-sync-summary",
        totals,
        f"What this CRM sync run did{' for one lead' if lead_id else ''} "
        "(counts by outcome only).",
    )
    return totals
