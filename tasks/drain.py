"""The drain loop every outbox flow shares: claim, handle, repeat until idle."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from prefect import runtime

from leads.flow_run import within_flow_run
from leads.store import Store
from leads.store.claims import Claim, claim
from leads.store.presence import Presence


@dataclass(frozen=True)
class DrainLimits:
    """How a drain takes work and when it stops."""

    batch_size: int = 50
    # A claim not finished in this long returns to the queue for another run.
    lease: timedelta = timedelta(seconds=60)
    # Keep claiming this long after the outbox first looks empty, so a burst of
    # leads arriving over a few seconds costs one run rather than several.
    idle_grace_seconds: float = 3.0
    poll_seconds: float = 0.5
    # Bounds one run; the schedule starts the next.
    max_seconds: float = 600.0


def drain(
    store: Store,
    topic: str,
    owner: str,
    handle: Callable[[list[Claim]], Mapping[str, int]],
    *,
    limits: DrainLimits = DrainLimits(),
    lead_id: str | None = None,
    present_as: str | None = None,
    wake: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, int]:
    """Claims and handles batches of `topic` rows until none come for the grace period.

    With `lead_id`, takes only that lead's rows and stops as soon as there are none.
    Inside a flow run, `handle` runs within it (`leads.flow_run`), so the
    timeline events it writes name the run, whether it is a task or not.
    With `present_as` (a drain deployment's name), a drain of every lead's rows
    records that it is polling (`leads.store.presence`) and withdraws that
    before its last look, so the API sends no event for a run while it polls.
    One that stops without that last look (its time limit, an error) calls
    `wake` instead, which should send the event (`tasks.pending.wake_drains`).

    Returns:
        The handlers' counts added up, plus `batches`.
    """
    totals: Counter[str] = Counter()
    started = clock()
    idle_since: float | None = None
    run_id = runtime.flow_run.id
    presence = (
        Presence(store, present_as, owner, monotonic=clock)
        if present_as is not None and lead_id is None
        else None
    )
    ending = False
    # Whether the run ended after a last look that found nothing, having
    # withdrawn first: only then were all rows others left to it taken.
    looked_last = False
    try:
        while ending or clock() - started < limits.max_seconds:
            if presence is not None and not ending:
                presence.keep()
            claims = claim(
                store,
                topic,
                owner,
                limit=limits.batch_size,
                lease=limits.lease,
                lead_id=lead_id,
            )
            if claims:
                with within_flow_run(run_id):
                    totals.update(handle(claims))
                totals["batches"] += 1
                idle_since = None
                ending = False
                continue
            if ending:
                looked_last = True
                break
            if lead_id is not None:
                break
            if idle_since is None:
                idle_since = clock()
            if clock() - idle_since >= limits.idle_grace_seconds:
                if presence is None:
                    break
                # Gone before the last look: a row the API committed while it
                # found this run present is taken by that look.
                presence.leave()
                ending = True
                continue
            sleep(limits.poll_seconds)
    finally:
        if presence is not None and not looked_last:
            # Stopped at the time limit or by an error while others took it to
            # be polling: rows they left to it get an event of their own.
            presence.leave_quietly()
            wake()
    return dict(totals)
