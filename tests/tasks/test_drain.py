"""The drain loop on a real store: batches until empty, then a grace, then stop."""

from __future__ import annotations

from leads.intake import submit
from leads.store.claims import complete
from leads.store.outbox import SEQUENCE_ENROLMENT
from tasks.drain import DrainLimits, drain


class FakeClock:
    """Time that moves only when the drain sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def take(store, email):
    return submit(store, "default", {"email": email}, channel="api", region="US").lead


def test_drains_every_row_in_batches_then_stops_after_the_grace(store):
    for n in range(7):
        take(store, f"d{n}@example.com")
    clock = FakeClock()
    batches: list[int] = []

    def handle(claims):
        batches.append(len(claims))
        for held in claims:
            complete(store, held)
        return {"handled": len(claims)}

    totals = drain(
        store,
        SEQUENCE_ENROLMENT,
        "run-1",
        handle,
        limits=DrainLimits(batch_size=3, idle_grace_seconds=2, poll_seconds=0.5),
        clock=clock,
        sleep=clock.sleep,
    )

    assert batches == [3, 3, 1]
    assert totals == {"handled": 7, "batches": 3}
    assert sum(clock.slept) >= 2


def test_a_run_for_one_lead_takes_only_its_rows_and_stops_at_once(store):
    mine = take(store, "mine@example.com")
    take(store, "other@example.com")
    clock = FakeClock()
    seen: list[str] = []

    def handle(claims):
        seen.extend(held.lead_id for held in claims)
        for held in claims:
            complete(store, held)
        return {}

    drain(
        store,
        SEQUENCE_ENROLMENT,
        "run-2",
        handle,
        lead_id=mine.id,
        clock=clock,
        sleep=clock.sleep,
    )

    assert seen == [mine.id]
    assert clock.slept == []


def test_a_run_never_outlives_its_time_bound(store):
    clock = FakeClock()

    drain(
        store,
        SEQUENCE_ENROLMENT,
        "run-3",
        lambda claims: {},
        limits=DrainLimits(idle_grace_seconds=10_000, max_seconds=5, poll_seconds=1),
        clock=clock,
        sleep=clock.sleep,
    )

    assert clock.now <= 6
