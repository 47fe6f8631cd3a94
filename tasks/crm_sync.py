"""The task a `crm_sync` run writes each batch of claimed leads to the CRM with."""

from __future__ import annotations

from prefect import runtime, task
from prefect.cache_policies import NO_CACHE

from connectors.crm.sync import CrmSync
from leads.flow_run import within_flow_run
from leads.store.claims import Claim
from leads.tracebacks import withholding


# Writing to the CRM is a side effect: never cached, never retried by Prefect.
# Retryable failures are retried inside the connector (bounded, honouring
# Retry-After) and then released back to the outbox with a back-off.
@task(name="upsert leads to the CRM", cache_policy=NO_CACHE, retries=0)
@withholding
def upsert_leads(claims: list[Claim], *, sync: CrmSync) -> dict[str, int]:
    """Syncs one batch of claimed leads; returns counts by outcome, no personal data."""
    with within_flow_run(runtime.flow_run.id):
        return sync.handle(claims)
