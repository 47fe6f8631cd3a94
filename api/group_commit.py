"""Group commit: writes that arrive together are done together, in one transaction.

A lead written alone costs nearly as much in round trips, statement set-up
and the commit as several written together (on PostgreSQL, in the writer's
thread, 3.5 ms of CPU for one lead alone, 2.1 ms a lead in twos, 1.4 ms in
fours, on a store of 20,000). So the API does not give each request a
transaction of its own: a request hands its item to a `GroupCommit` and
waits; a worker takes every item waiting, up to `most`, and does them in one
call of `work` in a thread. While that group is being written the next one
gathers, so the groups grow with the load.

At a steady moderate rate each request would find the writer idle and go
alone, and the API would spend most of a core on transactions of one. A
queue may therefore `linger`: while its items come less than two lingers
apart on average, a group waits up to `linger` from its oldest item's arrival
for company (or until it is full). The first item of a key, and the first
after a quiet spell (ten lingers without one), is written at once; so are a
client's that sends one request at a time, after a few: lingering stops
while it finds no company.

Each key (for leads, a tenant and an API key) has its own queue and worker,
so a group holds only that key's items. A request whose caller goes away is
still written, as a request already handed to a thread would have been; only
the answer is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio

Item = TypeVar("Item")
Result = TypeVar("Result")

# Given a key and its items, one outcome per item: its result, or its error.
Work = Callable[[Hashable, list[Item]], Sequence[Result | BaseException]]


# A group lingers while items come less than LINGER_GAPS lingers apart on
# average (half an item or more is expected to join it). The average moves
# GAP_WEIGHT of the way to each new gap. A gap of QUIET_LINGERS lingers or
# more is a quiet spell: the key's pace starts again as new, so the next item is
# written at once, and eight quick ones bring the average under the bar.
LINGER_GAPS = 2.0
GAP_WEIGHT = 0.2
QUIET_LINGERS = 10.0
# Items that come quickly may still not come together: a client sending one
# at a time sends the next only once the last is answered, and lingering would
# only slow it down. So a group lingers only while lingering groups have found
# company at least COMPANY_WORTH of the time lately (an average moving
# GAP_WEIGHT of the way each time: seven lingers alone in a row bring it
# under); below that, one lingers every PROBE_LINGERS lingers to see whether
# company comes again, and lingering resumes if it does.
COMPANY_WORTH = 0.25
PROBE_LINGERS = 100
# Paces kept of keys with nothing waiting, before those gone quiet are dropped.
IDLE_PACES = 100


@dataclass
class _Queue(Generic[Item, Result]):
    waiting: list[tuple[Item, asyncio.Future[Result]]] = field(default_factory=list)
    worker: asyncio.Task[None] | None = None
    # When the oldest waiting item came (the loop's clock).
    since: float = 0.0
    # Set while `most` items wait: a lingering group is full.
    full: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Pace:
    """How a key's items come: when the last came, the mean gap between them
    (s), how often lingering found company lately and when it last lingered."""

    last: float
    mean_gap: float
    company: float = 1.0
    lingered: float = -math.inf

    def found_company(self, found: bool) -> None:
        if found and self.company < COMPANY_WORTH:
            # A probe found company: it comes again.
            self.company = 1.0
        else:
            self.company += GAP_WEIGHT * (found - self.company)


class GroupCommit(Generic[Item, Result]):
    """Gathers items per key and hands them to `work` in groups of at most `most`.

    `work(key, items)` runs in a worker thread and returns one outcome per item,
    in order: the item's result, or the exception it failed with (raised to
    that item's caller alone). An exception escaping `work` fails every item
    of the group with it.
    """

    def __init__(
        self,
        work: Work[Item, Result],
        *,
        most: int,
        name: str,
        linger: float = 0.0,
    ) -> None:
        if most < 1:
            raise ValueError(f"most: expected at least 1, got {most}")
        if not 0 <= linger < math.inf:
            raise ValueError(f"linger: expected a finite 0 s or more, got {linger}")
        self._work = work
        self._most = most
        self._name = name
        self._linger = linger
        self._queues: dict[Hashable, _Queue[Item, Result]] = {}
        # Each key's pace while `linger` is set, the most lately heard last.
        self._paces: OrderedDict[Hashable, _Pace] = OrderedDict()
        self.groups = 0
        self.items = 0

    async def aclose(self, timeout: float) -> None:
        """Waits up to `timeout` s for the groups being written and those waiting.

        A lingering group stops waiting for company and is written at once.
        """
        for queue in self._queues.values():
            queue.full.set()
        writers = [q.worker for q in self._queues.values() if q.worker is not None]
        if writers:
            await asyncio.wait(writers, timeout=timeout)

    async def submit(self, key: Hashable, item: Item) -> Result:
        """Queues `item` under `key` and waits for its outcome.

        Raises:
            BaseException: whatever `work` gave or raised for this item.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        queue = self._queues.setdefault(key, _Queue())
        # Marks a failure as seen even when its caller has gone away.
        future.add_done_callback(_retrieved)
        now = loop.time()
        if not queue.waiting:
            queue.since = now
        queue.waiting.append((item, future))
        if len(queue.waiting) >= self._most:
            queue.full.set()
        self._pace(key, now)
        if queue.worker is None:
            queue.worker = loop.create_task(
                self._drain(key, queue),
                name=f"{self._name} group commit",
                # Not the first caller's context: the writer serves them all.
                context=contextvars.Context(),
            )
        # Shielded: a caller that goes away must not cancel the group its item
        # is in; the item is written, and only this wait ends.
        return await asyncio.shield(future)

    async def _drain(self, key: Hashable, queue: _Queue[Item, Result]) -> None:
        try:
            while queue.waiting:
                await self._company(key, queue)
                group = queue.waiting[: self._most]
                del queue.waiting[: self._most]
                # Any left waiting came before this group was taken: the next
                # lingers from this one's oldest arrival, so no longer.
                if len(queue.waiting) < self._most:
                    queue.full.clear()
                await self._commit(key, group)
        except BaseException:
            # Stopped (the server shutting down): no one is left to write
            # what still waits, and its callers must not wait for ever.
            stopped = RuntimeError(f"{self._name}: stopped before this was written")
            for _, future in queue.waiting:
                if not future.done():
                    future.set_exception(stopped)
            queue.waiting.clear()
            raise
        finally:
            queue.worker = None
            if not queue.waiting:
                self._queues.pop(key, None)

    def _pace(self, key: Hashable, now: float) -> None:
        if not self._linger:
            return
        quiet = self._linger * QUIET_LINGERS
        pace = self._paces.pop(key, None)
        if pace is None:
            pace = _Pace(now, quiet)
        elif now - pace.last >= quiet:
            # Back from a quiet spell: written alone, as a new key's first
            # item is. Whether lingering found it company is kept: a client
            # sending one at a time in bursts does not pay for it each burst.
            pace.last, pace.mean_gap = now, quiet
        else:
            pace.mean_gap += GAP_WEIGHT * (now - pace.last - pace.mean_gap)
            pace.last = now
        self._paces[key] = pace
        # Many keys must not hold memory for ever. One quiet for a probe's
        # interval is dropped (the least lately heard are first): it would
        # linger once again before anything it remembers counted.
        forget = self._linger * PROBE_LINGERS
        while len(self._paces) > len(self._queues) + IDLE_PACES:
            gone, oldest = next(iter(self._paces.items()))
            if now - oldest.last < forget:
                break
            del self._paces[gone]

    async def _company(self, key: Hashable, queue: _Queue[Item, Result]) -> None:
        """Lets a group wait for more items while they come often enough, and
        lingering has lately found them company (see `COMPANY_WORTH`)."""
        pace = self._paces.get(key)
        if pace is None or pace.mean_gap >= self._linger * LINGER_GAPS:
            return
        now = asyncio.get_running_loop().time()
        left = queue.since + self._linger - now
        if left <= 0 or queue.full.is_set():
            return
        if (
            pace.company < COMPANY_WORTH
            and now - pace.lingered < self._linger * PROBE_LINGERS
        ):
            return
        pace.lingered = now
        alone = len(queue.waiting)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(left):
                await queue.full.wait()
        found = len(queue.waiting) > alone
        # Woken with no new item: closing, which says nothing of the pace.
        if found or not queue.full.is_set():
            pace.found_company(found)

    async def _commit(
        self, key: Hashable, group: list[tuple[Item, asyncio.Future[Result]]]
    ) -> None:
        items = [item for item, _ in group]
        try:
            outcomes = await anyio.to_thread.run_sync(self._work, key, items)
            if len(outcomes) != len(items):
                raise RuntimeError(
                    f"{self._name}: {len(items)} items gave {len(outcomes)} outcomes"
                )
        except Exception as exc:  # noqa: BLE001 - each caller gets the failure
            outcomes = [exc] * len(items)
        except BaseException:
            # The thread may still finish the write: whether it was stored is
            # not known here.
            stopped = RuntimeError(
                f"{self._name}: stopped while this was written; it may or may not "
                "be stored"
            )
            for _, future in group:
                if not future.done():
                    future.set_exception(stopped)
            raise
        self.groups += 1
        self.items += len(items)
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)


def _retrieved(future: asyncio.Future[object]) -> None:
    if not future.cancelled():
        future.exception()
