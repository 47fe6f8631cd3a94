"""Group commit: writes that arrive together are done together, in one transaction.

A lead written alone costs nearly as much in round trips, statement set-up
and the commit as several written together (on PostgreSQL, 4.6 ms of CPU for
one lead alone, 6.8 ms for eight together). So the API does not give each
request a transaction of its own: a request hands its
item to a `GroupCommit` and waits; a worker takes every item waiting, up to
`most`, and does them in one call of `work` in a thread. While that group is
being written the next one gathers, so the groups grow with the load.

Most of a lone lead's cost is its transaction's (on PostgreSQL, 3.5 ms of
the writer's CPU for one lead alone, 2.1 ms a lead in twos, 1.4 ms in fours),
so at a steady moderate rate, when each request finds the writer idle, the
API would spend most of a core on transactions of one. A queue may therefore
`linger`: while its items come less than two lingers apart on average, a
group waits up to `linger` from its oldest item's arrival for company (or
until it is full). A lone request, or one after a quiet spell, is written at
once.

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
# GAP_WEIGHT of the way to each new gap; a gap of QUIET_LINGERS or more is
# counted as that many (a quiet spell): it lifts the average to LINGER_GAPS
# lingers at least, so the item after it is written at once, and a few quick
# ones bring the average down again.
LINGER_GAPS = 2.0
GAP_WEIGHT = 0.2
QUIET_LINGERS = LINGER_GAPS / GAP_WEIGHT
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
    """When a key's last item came, and the usual gap between its items (s)."""

    last: float
    gap: float

    def arrived(self, now: float, quiet: float) -> None:
        self.gap += GAP_WEIGHT * (min(now - self.last, quiet) - self.gap)
        self.last = now


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
            raise ValueError(f"linger: expected 0 s or more, got {linger}")
        self._work = work
        self._most = most
        self._name = name
        self._linger = linger
        self._queues: dict[Hashable, _Queue[Item, Result]] = {}
        # Each key's pace, while `linger` is set (see `_pace`).
        self._paces: dict[Hashable, _Pace] = {}
        self.groups = 0
        self.items = 0

    async def aclose(self, timeout: float) -> None:
        """Waits up to `timeout` s for the groups being written and those waiting."""
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
        pace = self._paces.get(key)
        if pace is None:
            # A key's first item (or first after a quiet spell): written alone.
            self._paces[key] = _Pace(now, quiet)
        else:
            pace.arrived(now, quiet)
        if len(self._paces) > len(self._queues) + IDLE_PACES:
            # Many keys must not hold memory for ever; one gone quiet would
            # start again from a quiet spell anyway.
            for gone in [k for k, p in self._paces.items() if now - p.last > quiet]:
                del self._paces[gone]

    async def _company(self, key: Hashable, queue: _Queue[Item, Result]) -> None:
        """Lets a group wait for more items while they come often enough."""
        pace = self._paces.get(key)
        if pace is None or pace.gap >= self._linger * LINGER_GAPS:
            return
        left = queue.since + self._linger - asyncio.get_running_loop().time()
        if left > 0 and not queue.full.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(queue.full.wait(), left)

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
