"""The `leads.pending` event from inside a flow run: the drains take new rows now.

The API coalesces its own (`api.events`); a flow that leaves outbox work (an
import's chunk, a webhook delivery) or stops draining early sends it here.
"""

from __future__ import annotations

import logging

from prefect.events import emit_event

from leads.store import Store
from leads.store.outbox import PENDING_EVENT, PENDING_RESOURCE
from leads.store.presence import pending_drains_polling

logger = logging.getLogger(__name__)


def wake_drains(leads: int | None = None) -> None:
    """Sends the event for `leads` leads with outbox work (None: not counted).

    Never raises. Counts only: personal data never goes to Prefect. Should
    Prefect not take it, the drains' every-minute schedules still start them.
    """
    try:
        emit_event(
            event=PENDING_EVENT,
            resource={"prefect.resource.id": PENDING_RESOURCE},
            payload={} if leads is None else {"leads": leads},
        )
    except Exception as exc:  # noqa: BLE001 - the schedule is the safety net
        logger.warning(
            "could not emit %s (%s); the every-minute schedule will drain",
            PENDING_EVENT,
            exc.__class__.__name__,
        )


def wake_drains_unless_polling(store: Store, leads: int) -> None:
    """`wake_drains`, left out while both drains poll: they take the rows anyway.

    Call it after the rows are committed.
    """
    if leads and not pending_drains_polling(store):
        wake_drains(leads)
