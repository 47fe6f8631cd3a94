"""A machine's own clock, set wrong: for tests of work shared across machines."""

from __future__ import annotations

from datetime import datetime, timedelta

from leads.clock import SystemClock


class OffClock(SystemClock):
    """The system clock of a machine whose clock is `offset` off the true time.

    It is a `SystemClock`, so the code under test takes it for the machine's
    own, as it would on a machine whose clock had drifted.
    """

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return super().now() + self.offset
