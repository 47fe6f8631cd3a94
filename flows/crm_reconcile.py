"""Reading CRM status changes back onto leads, for the e-mail stop conditions."""

from __future__ import annotations

from collections import Counter

from prefect import flow, get_run_logger, runtime

from connectors.crm.reconcile import reconcile, tenants_with_crm_records
from connectors.crm.sync import CrmSync
from flows.summaries import publish_summary
from leads.collector import collect_less_often
from leads.priority import follow_own_niceness
from leads.settings import get_settings
from leads.store import Store
from leads.tracebacks import valueless, withholding


@flow(name="crm-reconcile", log_prints=False)
@withholding
def crm_reconcile() -> dict[str, int]:
    """Pulls every CRM change since the last run onto the leads it concerns.

    Guarantees: each tenant's watermark moves only after its window was read
    whole, so a run that dies is repeated from the same point; windows overlap
    a little (search indexes lag), and applying a change twice changes nothing.
    HubSpot's 10,000-result search cap is kept by splitting the window.

    Returns:
        Counts: `read` (CRM records seen), `changed` (leads whose CRM state
        changed), `tenants`, and `failed_tenants` (logged with the reason).
    """
    collect_less_often()
    follow_own_niceness()
    logger = get_run_logger()
    settings = get_settings()
    store = Store(settings.store_url)
    run_id = str(runtime.flow_run.id)
    sync = CrmSync(store, settings, run_id)
    totals: Counter[str] = Counter()
    reasons: Counter[str] = Counter()

    try:
        for tenant_id in tenants_with_crm_records(store):
            try:
                connected = sync.connection(tenant_id)
                if connected is None:
                    continue
                account, connector = connected
                totals.update(
                    reconcile(store, tenant_id, account, connector, flow_run_id=run_id)
                )
                totals["tenants"] += 1
            except Exception as exc:
                # One tenant's broken account or CRM must not hold up the
                # others; its watermark stays, so the next run reads it again.
                logger.error(
                    "CRM reconcile of tenant %s failed\n%s", tenant_id, valueless(exc)
                )
                totals["failed_tenants"] += 1
                # The reason is the error's type: its text may quote a record.
                reasons[f"failed_tenants:{type(exc).__name__}"] += 1
    finally:
        sync.close()
        store.dispose()

    logger.info("CRM reconcile: %s", dict(totals) or "no CRM records yet")
    publish_summary(
        "crm-reconcile-summary",
        {**totals, **reasons},
        "What this reconciliation run read and changed (counts, and the error "
        "type of each tenant that failed).",
    )
    return dict(totals)
