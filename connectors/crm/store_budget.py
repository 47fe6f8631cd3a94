"""Rate budgets kept in the store, so every worker calling one CRM account shares one.

Prefect's own global concurrency limits were measured to behave poorly under
contention (see the design notes), and the vendor's limits are per account, not
per flow: a token bucket in a row every worker locks briefly is both simpler
and right.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from connectors.crm.accounts import CrmAccount
from connectors.crm.errors import CrmDailyLimitReached
from leads.store.database import Store
from leads.store.tables import RateBudgetRow, utcnow

logger = logging.getLogger(__name__)

TOLERANCE = 1e-6
# Waits shorter than this cannot be told apart in the stored times.
MIN_WAIT_SECONDS = 0.001
# The share of a window's calls that may go at once; the rest are spread over it.
BURST_SHARE = 0.1
# The longest one wait lasts before the bucket is looked at again (others may
# have been corrected by the vendor's headers meanwhile).
MAX_WAIT_SECONDS = 1.0
# Salesforce's allocation rolls over 24 hours and says nothing of when calls
# free up; look again after this long.
SALESFORCE_DAILY_RECHECK = timedelta(hours=1)


class StoreBudget:
    """A token bucket for `account`, keeping to `capacity` calls per `window_seconds`.

    Vendors count a rolling window (HubSpot: 190 calls in any 10 s). A bucket
    that holds the whole window's calls and also refills at the window's rate
    lets through up to twice that in one window, and the vendor answers 429.
    So the bucket holds a tenth of the window (the burst) and refills the other
    nine tenths over the window: never more than `capacity` in any window, and
    90 % of it sustained.

    `acquire` takes a call from the bucket in a short write transaction (the
    row is locked on PostgreSQL; SQLite's write lock serialises it), waiting
    while the bucket is empty. `observe` corrects the bucket from HubSpot's
    `X-HubSpot-RateLimit-*` and Salesforce's `Sforce-Limit-Info` headers, and
    blocks the account until the daily window resets once its allowance is
    spent.
    """

    def __init__(
        self,
        store: Store,
        account: str,
        *,
        capacity: float,
        window_seconds: float,
        daily_limit: int | None = None,
        now: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if capacity <= 0 or window_seconds <= 0:
            raise ValueError(
                "a budget needs capacity and window above 0, "
                f"got {capacity} and {window_seconds}"
            )
        self.store = store
        self.account = account
        self._now = now
        self._sleep = sleep
        self._ensure(capacity, window_seconds, daily_limit)

    @classmethod
    def for_account(
        cls,
        store: Store,
        account: CrmAccount,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> StoreBudget:
        """The shared budget of `account`, sized by its vendor and tier."""
        capacity, window, daily = account.budget_size
        return cls(
            store,
            account.budget_key,
            capacity=capacity,
            window_seconds=window,
            daily_limit=daily,
            sleep=sleep,
        )

    def _ensure(self, capacity: float, window: float, daily: int | None) -> None:
        try:
            with self.store.write_across_tenants() as session:
                if session.get(RateBudgetRow, self.account) is None:
                    session.add(
                        RateBudgetRow(
                            account=self.account,
                            capacity=capacity,
                            window_seconds=window,
                            tokens=capacity * BURST_SHARE,
                            refilled_at=self._now(),
                            daily_limit=daily,
                            calls=0,
                        )
                    )
        except IntegrityError:
            # Another worker created it first: theirs is the same bucket.
            pass

    def acquire(self, calls: int = 1) -> None:
        """Takes `calls` from the bucket, waiting until it has them.

        Raises:
            CrmDailyLimitReached: the account's daily allowance is spent; says
                when it resets.
        """
        while True:
            with self.store.write_across_tenants() as session:
                row = session.get(RateBudgetRow, self.account, with_for_update=True)
                if row is None:
                    raise LookupError(f"rate budget {self.account!r} disappeared")
                now = self._now()
                if row.blocked_until is not None and row.blocked_until > now:
                    raise CrmDailyLimitReached(
                        f"the daily API allowance of {self.account} is spent "
                        f"until {row.blocked_until.isoformat()}",
                        resets_at=row.blocked_until,
                    )
                rate, burst = _rate_and_burst(row)
                elapsed = max(0.0, (now - row.refilled_at).total_seconds())
                tokens = min(burst, row.tokens + elapsed * rate)
                row.refilled_at = now
                # Stored times have microseconds: a bucket a hair short of a
                # call counts as full rather than waiting out a rounding error.
                if tokens >= calls - TOLERANCE:
                    row.tokens = max(0.0, tokens - calls)
                    row.calls += calls
                    return
                row.tokens = tokens
                wait = (calls - tokens) / rate
            self._sleep(min(max(wait, MIN_WAIT_SECONDS), MAX_WAIT_SECONDS))

    def observe(self, headers: Mapping[str, str]) -> None:
        """Corrects the bucket from a response's rate-limit headers, if it has any."""
        lowered = {name.lower(): value for name, value in headers.items()}
        hubspot = _hubspot_limits(lowered)
        salesforce = _salesforce_usage(lowered)
        if hubspot is None and salesforce is None:
            return
        with self.store.write_across_tenants() as session:
            row = session.get(RateBudgetRow, self.account, with_for_update=True)
            if row is None:
                return
            now = self._now()
            if hubspot is not None:
                _apply_hubspot(row, hubspot, now)
            if salesforce is not None:
                used, limit = salesforce
                row.daily_limit = limit
                row.daily_remaining = max(0, limit - used)
                if used >= limit:
                    row.blocked_until = now + SALESFORCE_DAILY_RECHECK

    def block_until(self, until: datetime) -> None:
        """Makes every worker wait until `until`: the CRM said the day is spent.

        For a daily-limit answer that carried no limit headers (HubSpot's 429
        with policy `DAILY`), so no one calls again before it may pass.
        """
        with self.store.write_across_tenants() as session:
            row = session.get(RateBudgetRow, self.account, with_for_update=True)
            if row is not None and (
                row.blocked_until is None or row.blocked_until < until
            ):
                row.blocked_until = until
                row.daily_remaining = 0

    def state(self) -> dict[str, object]:
        """What the bucket holds now, for `GET /api/crm/status`."""
        with self.store.engine.connect() as connection:
            row = connection.execute(
                select(RateBudgetRow).where(RateBudgetRow.account == self.account)
            ).one_or_none()
            if row is None:
                return {}
            rate, burst = _rate_and_burst(row)
            elapsed = max(0.0, (self._now() - row.refilled_at).total_seconds())
            return {
                "calls_per_window": row.capacity,
                "window_seconds": row.window_seconds,
                "calls_available": int(min(burst, row.tokens + elapsed * rate)),
                "daily_limit": row.daily_limit,
                "daily_remaining": row.daily_remaining,
                "blocked_until": row.blocked_until,
                "calls_made": row.calls,
            }


def _rate_and_burst(row: RateBudgetRow) -> tuple[float, float]:
    """Calls a second the bucket refills, and the most it holds."""
    burst = max(1.0, row.capacity * BURST_SHARE)
    return (row.capacity - burst) / row.window_seconds, burst


def _hubspot_limits(headers: Mapping[str, str]) -> dict[str, float] | None:
    names = {
        "max": "x-hubspot-ratelimit-max",
        "remaining": "x-hubspot-ratelimit-remaining",
        "interval_ms": "x-hubspot-ratelimit-interval-milliseconds",
        "daily": "x-hubspot-ratelimit-daily",
        "daily_remaining": "x-hubspot-ratelimit-daily-remaining",
    }
    found: dict[str, float] = {}
    for key, header in names.items():
        value = headers.get(header)
        if value is None:
            continue
        try:
            found[key] = float(value)
        except ValueError:
            logger.debug("ignoring unreadable %s header %r", header, value)
    return found or None


def _apply_hubspot(row: RateBudgetRow, limits: dict[str, float], now: datetime) -> None:
    if limits.get("max", 0) > 0 and limits.get("interval_ms", 0) > 0:
        row.capacity = limits["max"]
        row.window_seconds = limits["interval_ms"] / 1000
    if "remaining" in limits:
        # The vendor counts calls other apps and workers made on the account too.
        row.tokens = min(row.tokens, limits["remaining"])
    if "daily" in limits:
        row.daily_limit = int(limits["daily"])
    if "daily_remaining" in limits:
        row.daily_remaining = int(limits["daily_remaining"])
        if limits["daily_remaining"] <= 0:
            # HubSpot resets the daily limit at midnight in the account's own
            # zone, which no header tells; UTC midnight is our best guess.
            tomorrow = now.astimezone(UTC).date() + timedelta(days=1)
            row.blocked_until = datetime(
                tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=UTC
            )


def _salesforce_usage(headers: Mapping[str, str]) -> tuple[int, int] | None:
    # `Sforce-Limit-Info: api-usage=18/15000`
    value = headers.get("sforce-limit-info")
    if not value:
        return None
    for part in value.split(","):
        name, _, usage = part.strip().partition("=")
        if name == "api-usage":
            used, _, limit = usage.partition("/")
            try:
                return int(used), int(limit)
            except ValueError:
                return None
    return None
