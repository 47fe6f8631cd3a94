"""The shared rate budget: a token bucket in the store, corrected by vendor headers."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from connectors.crm.errors import CrmDailyLimitReached
from connectors.crm.store_budget import StoreBudget


class FakeTime:
    """A clock both `now` and `sleep` move, so waits are exact and instant."""

    def __init__(self) -> None:
        self.moment = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
        self.slept = 0.0
        self.lock = threading.Lock()

    def now(self) -> datetime:
        with self.lock:
            return self.moment

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.slept += seconds
            self.moment += timedelta(seconds=seconds)


def budget(
    store, clock: FakeTime, account: str = "hubspot:test", **size
) -> StoreBudget:
    size = {"capacity": 10, "window_seconds": 10} | size
    return StoreBudget(store, account, now=clock.now, sleep=clock.sleep, **size)


class TestTokenBucket:
    def test_a_tenth_of_the_window_goes_at_once_and_the_rest_is_spread_over_it(
        self, store
    ):
        clock = FakeTime()
        bucket = budget(store, clock, capacity=100, window_seconds=10)
        for _ in range(10):
            bucket.acquire()
        assert clock.slept == 0
        bucket.acquire()
        # The other 90 calls of the window refill at 9 a second.
        assert clock.slept == pytest.approx(1 / 9)
        assert bucket.state()["calls_made"] == 11

    def test_no_window_ever_holds_more_calls_than_the_vendor_allows(self, store):
        clock = FakeTime()
        bucket = budget(store, clock, capacity=20, window_seconds=10)
        times = []
        for _ in range(120):
            bucket.acquire()
            times.append(clock.now())
        busiest = max(
            sum(1 for t in times if start <= t < start + timedelta(seconds=10))
            for start in times
        )
        assert busiest <= 20
        # And 90 % of the limit is kept up: 120 calls in about 120 / 1.8 s.
        assert (times[-1] - times[0]).total_seconds() <= 120 / 1.8 * 1.01

    def test_two_workers_on_one_account_share_one_bucket(self, store):
        clock = FakeTime()
        first = budget(store, clock, capacity=100)
        second = budget(store, clock, capacity=100)
        for _ in range(5):
            first.acquire()
            second.acquire()
        assert clock.slept == 0
        second.acquire()
        assert clock.slept == pytest.approx(1 / 9)

    def test_another_account_has_its_own_bucket(self, store):
        clock = FakeTime()
        for _ in range(10):
            budget(store, clock, capacity=100).acquire()
        budget(store, clock, account="hubspot:other", capacity=100).acquire()
        assert clock.slept == 0

    def test_concurrent_workers_never_take_more_than_the_bucket_holds(self, store):
        clock = FakeTime()
        bucket = budget(store, clock, capacity=20, window_seconds=100)
        taken = []

        def worker() -> None:
            local = budget(store, clock, capacity=20, window_seconds=100)
            for _ in range(10):
                local.acquire()
                taken.append(clock.now())

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(taken) == 40
        assert bucket.state()["calls_made"] == 40
        # 2 were in the bucket; the other 38 refilled at 0.18 a second.
        assert (max(taken) - min(taken)).total_seconds() >= 38 / 0.18 * 0.99


class TestVendorHeaders:
    def test_hubspot_headers_resize_the_bucket_and_take_away_calls_others_made(
        self, store
    ):
        clock = FakeTime()
        bucket = budget(store, clock, capacity=100)
        bucket.observe(
            {
                "X-HubSpot-RateLimit-Max": "190",
                "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
                "X-HubSpot-RateLimit-Remaining": "3",
                "X-HubSpot-RateLimit-Daily": "625000",
                "X-HubSpot-RateLimit-Daily-Remaining": "600000",
            }
        )
        state = bucket.state()
        assert state["calls_per_window"] == 190
        assert state["calls_available"] == 3
        assert state["daily_limit"] == 625000
        assert state["daily_remaining"] == 600000

    def test_an_exhausted_hubspot_day_blocks_until_midnight_utc(self, store):
        clock = FakeTime()
        bucket = budget(store, clock)
        bucket.observe({"X-HubSpot-RateLimit-Daily-Remaining": "0"})
        with pytest.raises(CrmDailyLimitReached) as raised:
            bucket.acquire()
        assert raised.value.resets_at == datetime(2026, 3, 2, tzinfo=UTC)
        clock.moment = datetime(2026, 3, 2, 0, 0, 1, tzinfo=UTC)
        bucket.acquire()

    def test_salesforce_usage_is_recorded_and_a_spent_allocation_blocks(self, store):
        clock = FakeTime()
        bucket = budget(store, clock, account="salesforce:test")
        bucket.observe({"Sforce-Limit-Info": "api-usage=18/15000"})
        assert bucket.state()["daily_remaining"] == 14982
        bucket.observe({"sforce-limit-info": "api-usage=15000/15000"})
        with pytest.raises(CrmDailyLimitReached):
            bucket.acquire()

    def test_responses_without_limit_headers_change_nothing(self, store):
        clock = FakeTime()
        bucket = budget(store, clock)
        before = bucket.state()
        bucket.observe(
            {"Content-Type": "application/json", "X-HubSpot-RateLimit-Max": "x"}
        )
        assert bucket.state() == before


def test_a_bucket_needs_a_positive_size(store):
    with pytest.raises(ValueError, match="above 0"):
        budget(store, FakeTime(), capacity=0)
