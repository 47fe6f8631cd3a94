"""The coalesced `leads.pending` signal: at most one Prefect event a second.

Every write that leaves outbox work calls `notify()`; a background loop turns
any number of notifications within a second into one event, which the drain
deployments' triggers react to. The first notification after a quiet second is
sent at once (within a tick), so a lone lead does not wait out the interval.
Prefect being down costs nothing but latency: the drains' every-minute
schedules pick the work up.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import anyio
import httpx

from leads.store import outbox

logger = logging.getLogger(__name__)

EVENT = outbox.PENDING_EVENT
RESOURCE_ID = outbox.PENDING_RESOURCE


class PendingSignal:
    """Counts notifications and emits them as one event per interval.

    Args:
        events_url: the Prefect server's `/events` endpoint.
        interval: seconds between two events, at least.
        transport: for tests; httpx's own when None.
        timeout: seconds an emit may take.
        tick: how often the loop looks for notifications.
        drains_polling: whether every drain the event starts is polling now
            (`leads.store.presence`); the event is then left out, as the runs
            it starts would only be cancelled. Blocking: called in a thread.
    """

    def __init__(
        self,
        events_url: str,
        interval: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 5.0,
        tick: float = 0.05,
        drains_polling: Callable[[], bool] | None = None,
    ) -> None:
        self.events_url = events_url
        self.interval = interval
        self.tick = min(tick, interval)
        self.drains_polling = drains_polling
        self.skipped = 0
        self.timeout = timeout
        self._transport = transport
        self._lock = threading.Lock()
        self._pending = 0
        self.emitted = 0

    def notify(self, count: int = 1) -> None:
        """Records that `count` leads have outbox work; never blocks on Prefect."""
        with self._lock:
            self._pending += count

    def _take(self) -> int:
        with self._lock:
            count, self._pending = self._pending, 0
        return count

    async def run(self) -> None:
        """Emits at most once per interval while there is something to say.

        Runs until cancelled. Looks every tick, so a notification after a
        quiet interval goes out within a tick and later ones wait for the
        interval to pass.
        """
        last = -self.interval
        async with httpx.AsyncClient(
            timeout=self.timeout, transport=self._transport
        ) as client:
            while True:
                await asyncio.sleep(self.tick)
                # Read without the lock: a notification it misses is seen next tick.
                if not self._pending or time.monotonic() - last < self.interval:
                    continue
                last = time.monotonic()
                count = self._take()
                if await self._polling():
                    self.skipped += 1
                    continue
                await self._emit(client, count)

    async def _polling(self) -> bool:
        if self.drains_polling is None:
            return False
        try:
            return await anyio.to_thread.run_sync(self.drains_polling)
        except Exception as exc:  # noqa: BLE001 - when unsure, send the event
            logger.warning(
                "could not tell whether the drains are polling (%s); sending %s",
                exc.__class__.__name__,
                EVENT,
            )
            return False

    async def _emit(self, client: httpx.AsyncClient, count: int) -> None:
        event = {
            "id": str(uuid.uuid4()),
            "occurred": datetime.now(UTC).isoformat(),
            "event": EVENT,
            "resource": {"prefect.resource.id": RESOURCE_ID},
            # Counts only: personal data never goes to Prefect.
            "payload": {"leads": count},
        }
        try:
            response = await client.post(self.events_url, json=[event])
            response.raise_for_status()
        except Exception as exc:  # noqa: BLE001 - the loop must outlive any failure
            # Whatever went wrong, the loop goes on: the schedule still drains.
            logger.warning(
                "could not emit %s (%s); the every-minute schedule will drain",
                EVENT,
                exc.__class__.__name__,
            )
            return
        self.emitted += 1
