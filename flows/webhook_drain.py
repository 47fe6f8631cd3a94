"""The webhook drain: every kept delivery the API did not finish, processed once."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from prefect import flow, get_run_logger, runtime
from pydantic import Field
from sqlalchemy.exc import OperationalError

from connectors.crm.hubspot.webhooks import handlers_for
from flows.summaries import publish_summary
from leads.collector import collect_less_often
from leads.flow_run import within_flow_run
from leads.priority import follow_own_niceness
from leads.settings import get_settings
from leads.store import Store
from leads.store import webhooks as deliveries
from leads.tracebacks import withholding
from leads.webhooks.processing import Handler, process
from leads.webhooks.sources import Payload, configured_sources
from tasks.pending import wake_drains_unless_polling


@flow(name="webhook-drain", log_prints=False)
@withholding
def drain_webhooks(
    batch_size: Annotated[int, Field(ge=1, le=1000)] = 200,
    max_batches: Annotated[int, Field(ge=1, le=1000)] = 50,
) -> dict[str, int]:
    """Processes every webhook delivery left pending, oldest first.

    The API processes each delivery right after answering; this drain takes
    what that left behind (an API process stopped, a database briefly locked,
    a CRM read that failed). Guarantees: a delivery is applied at most once,
    however many processors look at it (each claims it first and settles it in
    the transaction that writes its lead); a delivery that cannot be processed
    now stays pending, due again after a growing wait, so none is dropped.

    Args:
        batch_size: deliveries taken per batch.
        max_batches: bounds one run; the schedule starts the next.

    Returns:
        Counts by how each delivery ended (`applied`, `stale`, `ignored`,
        `rejected`, `left_pending`).
    """
    collect_less_often()
    follow_own_niceness()
    logger = get_run_logger()
    settings = get_settings()
    store = Store(settings.store_url)
    handlers: dict[str, dict[Payload, Handler]] = {}
    totals: Counter[str] = Counter()
    owed = 0
    try:
        sources = configured_sources(settings.config_dir)
        with within_flow_run(str(runtime.flow_run.id)):
            for _ in range(max_batches):
                due = deliveries.due(store, batch_size)
                if not due:
                    break
                for tenant_id, delivery_id in due:
                    if tenant_id not in handlers:
                        handlers[tenant_id] = handlers_for(store, settings, tenant_id)
                    try:
                        verdict = process(
                            store, tenant_id, delivery_id, sources, handlers[tenant_id]
                        )
                    except OperationalError:
                        # The store was busy as it was claimed: the delivery
                        # is still pending for the next batch or run.
                        logger.warning("delivery %s: store busy", delivery_id)
                        verdict = None
                    totals[verdict.status if verdict else "left_pending"] += 1
                    owed += bool(verdict and verdict.leaves_work)
        # The CRM sync and the e-mail drains react to this at once.
        wake_drains_unless_polling(store, owed)
    finally:
        store.dispose()

    logger.info("webhook deliveries: %s", dict(totals) or "none pending")
    publish_summary(
        "webhook-drain-summary",
        totals,
        "How the webhook deliveries this run took ended (counts only).",
    )
    return dict(totals)
