"""The one clock everything reads the time from, so tests can move time.

Claims, due times, timeline events and e-mail dates all ask `now()`. A test
installs a `ManualClock` with `use_clock` and moves it forward instead of
sleeping; the rest of the time the system clock answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from threading import Lock
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, aware and in UTC."""
        ...


class SystemClock:
    """The machine's own clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that stands still until it is moved (for tests and benchmarks)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError(f"the clock needs an aware start time, got {start!r}")
        self._now = start.astimezone(UTC)
        self._lock = Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, by: timedelta | None = None, **units: float) -> datetime:
        """Moves the clock forward by `by` or by keyword units (`hours=2`)."""
        step = by if by is not None else timedelta(**units)
        if step < timedelta(0):
            raise ValueError(f"a clock only moves forward; got {step}")
        with self._lock:
            self._now += step
            return self._now

    def set(self, moment: datetime) -> None:
        """Moves the clock to `moment`, which may not be in its past."""
        if moment.tzinfo is None:
            raise ValueError(f"the clock needs an aware time, got {moment!r}")
        with self._lock:
            if moment < self._now:
                raise ValueError(f"a clock only moves forward; {moment} is past")
            self._now = moment.astimezone(UTC)


_SYSTEM = SystemClock()
# Process-wide rather than a context variable: the API answers on worker
# threads and Prefect runs tasks on its own, and all must read the same time.
_current: Clock = _SYSTEM


def now() -> datetime:
    """The current time by the installed clock, aware and in UTC."""
    return _current.now()


def reads_system() -> bool:
    """Whether the machine's own clock is the one installed (no test's clock)."""
    return isinstance(_current, SystemClock)


@contextmanager
def use_clock(clock: Clock) -> Iterator[Clock]:
    """Installs `clock` for every reader in this process until the block ends."""
    global _current
    previous, _current = _current, clock
    try:
        yield clock
    finally:
        _current = previous
