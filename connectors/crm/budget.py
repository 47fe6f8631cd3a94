"""The rate budget a connector draws on before every CRM call."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol


class RateBudget(Protocol):
    """Calls left to an account, shared by whoever talks to it.

    `acquire` blocks until a call may be made (or raises
    `CrmDailyLimitReached` when the day's allowance is gone); `observe` feeds
    back what the vendor's response headers said, so the budget follows the
    account's real state rather than our guess of it.
    """

    def acquire(self, calls: int = 1) -> None: ...

    def observe(self, headers: Mapping[str, str]) -> None: ...


class Unlimited:
    """No budget: for tests of single calls and for tools that make a handful."""

    def acquire(self, calls: int = 1) -> None:
        return None

    def observe(self, headers: Mapping[str, str]) -> None:
        return None


class LocalBudget:
    """A token bucket in this process: `rate` calls per `per_seconds`.

    The store-backed budget shares one bucket between workers; this one is for a
    single process (the command line, benchmarks of one connector).
    """

    def __init__(
        self,
        rate: int,
        per_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate < 1 or per_seconds <= 0:
            raise ValueError(
                f"need rate ≥ 1 and per_seconds > 0, got {rate}, {per_seconds}"
            )
        self._capacity = float(rate)
        self._refill = rate / per_seconds
        self._tokens = float(rate)
        self._clock = clock
        self._sleep = sleep
        self._at = clock()
        self._lock = threading.Lock()

    def acquire(self, calls: int = 1) -> None:
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(
                    self._capacity, self._tokens + (now - self._at) * self._refill
                )
                self._at = now
                if self._tokens >= calls:
                    self._tokens -= calls
                    return
                wait = (calls - self._tokens) / self._refill
            self._sleep(wait)

    def observe(self, headers: Mapping[str, str]) -> None:
        return None
