"""The drain loop on a real store: batches until empty, then a grace, then stop."""

from __future__ import annotations

import pytest
from prefect import flow, runtime
from sqlalchemy.exc import OperationalError

from leads.flow_run import current_flow_run_id
from leads.intake import submit
from leads.store import presence
from leads.store.claims import complete
from leads.store.outbox import DISPATCHER_DRAIN, SEQUENCE_ENROLMENT
from leads.store.presence import all_present
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


def test_with_no_grace_a_drain_stops_at_the_first_empty_look(store):
    take(store, "d@example.com")
    clock = FakeClock()

    totals = drain(
        store,
        SEQUENCE_ENROLMENT,
        "run-0",
        completing(store, []),
        limits=DrainLimits(idle_grace_seconds=0, poll_seconds=0.5),
        clock=clock,
        sleep=clock.sleep,
    )

    assert totals == {"handled": 1, "batches": 1}
    assert clock.slept == []


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


def test_outside_a_flow_run_the_handler_works_within_none(store):
    take(store, "d@example.com")
    seen: list[str | None] = []

    def handle(claims):
        seen.append(current_flow_run_id())
        for held in claims:
            complete(store, held)
        return {}

    drain(
        store,
        SEQUENCE_ENROLMENT,
        "run-4",
        handle,
        limits=DrainLimits(idle_grace_seconds=0),
    )

    assert seen == [None]


@pytest.mark.slow
def test_inside_a_flow_run_a_handler_that_is_no_task_works_within_it(store, on_prefect):
    take(store, "d@example.com")
    seen: list[str | None] = []

    def handle(claims):
        seen.append(current_flow_run_id())
        for held in claims:
            complete(store, held)
        return {}

    @flow(name="drain-in-a-test")
    def drain_once() -> dict[str, int]:
        return drain(
            store,
            SEQUENCE_ENROLMENT,
            str(runtime.flow_run.id),
            handle,
            limits=DrainLimits(idle_grace_seconds=0),
        )

    state = drain_once(return_state=True)

    assert state.result() == {"batches": 1}
    assert seen == [str(state.state_details.flow_run_id)]


def completing(store, handled: list[str]):
    """A handler that completes its claims and notes their leads."""

    def handle(claims):
        for held in claims:
            handled.append(held.lead_id)
            complete(store, held)
        return {"handled": len(claims)}

    return handle


def written_just_before_withdrawing(monkeypatch, store, then=lambda: None) -> list[str]:
    """The ids of leads the API writes, finding the drain present (so it sends no
    event), at the last moment it can: just before the drain withdraws."""
    relied_on: list[str] = []
    withdraw = presence.withdraw

    def api_writes_first(*args) -> None:
        if not relied_on:
            relied_on.append(take(store, "late@example.com").id)
            assert all_present(store, [DISPATCHER_DRAIN])
            then()
        withdraw(*args)

    monkeypatch.setattr(presence, "withdraw", api_writes_first)
    return relied_on


class TestPresence:
    def test_a_drain_is_present_while_it_polls_and_gone_when_it_ends(self, store):
        clock = FakeClock()
        seen: list[bool] = []

        def sleep(seconds: float) -> None:
            seen.append(all_present(store, [DISPATCHER_DRAIN]))
            clock.sleep(seconds)

        drain(
            store,
            SEQUENCE_ENROLMENT,
            "run-5",
            completing(store, []),
            limits=DrainLimits(idle_grace_seconds=2, poll_seconds=0.5),
            present_as=DISPATCHER_DRAIN,
            clock=clock,
            sleep=sleep,
        )

        assert seen and all(seen)
        assert not all_present(store, [DISPATCHER_DRAIN])

    # With no grace (the dispatcher's), the drain withdraws at its first empty look.
    @pytest.mark.parametrize("grace", [0, 1])
    def test_a_row_written_while_the_drain_was_present_is_taken_before_it_ends(
        self, store, monkeypatch, grace
    ):
        clock = FakeClock()
        relied_on = written_just_before_withdrawing(monkeypatch, store)
        handled: list[str] = []

        drain(
            store,
            SEQUENCE_ENROLMENT,
            "run-6",
            completing(store, handled),
            limits=DrainLimits(idle_grace_seconds=grace, poll_seconds=0.5),
            present_as=DISPATCHER_DRAIN,
            clock=clock,
            sleep=clock.sleep,
        )

        assert relied_on
        assert handled == relied_on
        assert not all_present(store, [DISPATCHER_DRAIN])

    def test_a_run_for_one_lead_is_never_present(self, store):
        lead = take(store, "one@example.com")
        seen: list[bool] = []

        def handle(claims):
            seen.append(all_present(store, [DISPATCHER_DRAIN]))
            return completing(store, [])(claims)

        drain(
            store,
            SEQUENCE_ENROLMENT,
            "run-7",
            handle,
            lead_id=lead.id,
            present_as=DISPATCHER_DRAIN,
        )

        assert seen == [False]

    def test_a_drain_that_fails_or_runs_out_of_time_withdraws_and_wakes_a_run(
        self, store
    ):
        # Rows others left to it while it seemed to poll get an event instead
        # of its last look.
        take(store, "fails@example.com")
        woken: list[str] = []

        def fail(claims):
            assert all_present(store, [DISPATCHER_DRAIN])
            raise RuntimeError("the relay went away")

        with pytest.raises(RuntimeError):
            drain(
                store,
                SEQUENCE_ENROLMENT,
                "run-8",
                fail,
                present_as=DISPATCHER_DRAIN,
                wake=lambda: woken.append("failed"),
            )
        assert not all_present(store, [DISPATCHER_DRAIN])

        clock = FakeClock()
        drain(
            store,
            SEQUENCE_ENROLMENT,
            "run-9",
            completing(store, []),
            limits=DrainLimits(idle_grace_seconds=10_000, max_seconds=5),
            present_as=DISPATCHER_DRAIN,
            wake=lambda: woken.append("out of time"),
            clock=clock,
            sleep=clock.sleep,
        )
        assert not all_present(store, [DISPATCHER_DRAIN])
        assert woken == ["failed", "out of time"]

    def test_the_last_look_is_taken_even_when_the_time_limit_falls_then(
        self, store, monkeypatch
    ):
        # The time limit passes as the drain withdraws: it still looks once more.
        clock = FakeClock()
        relied_on = written_just_before_withdrawing(
            monkeypatch, store, then=lambda: setattr(clock, "now", clock.now + 1)
        )
        handled: list[str] = []
        woken: list[bool] = []

        drain(
            store,
            SEQUENCE_ENROLMENT,
            "run-10",
            completing(store, handled),
            limits=DrainLimits(idle_grace_seconds=1, poll_seconds=0.5, max_seconds=2),
            present_as=DISPATCHER_DRAIN,
            wake=lambda: woken.append(True),
            clock=clock,
            sleep=clock.sleep,
        )

        assert handled == relied_on
        # Out of time once that batch was done, with no empty look after it.
        assert woken == [True]

    def test_a_drain_that_cannot_record_its_presence_drains_all_the_same(
        self, store, monkeypatch
    ):
        def refused(*args, **kwargs):
            raise OperationalError("INSERT", {}, Exception("database is locked"))

        monkeypatch.setattr(presence, "announce", refused)
        lead = take(store, "unannounced@example.com")
        handled: list[str] = []
        woken: list[bool] = []
        clock = FakeClock()

        drain(
            store,
            SEQUENCE_ENROLMENT,
            "run-11",
            completing(store, handled),
            limits=DrainLimits(idle_grace_seconds=1, poll_seconds=0.5),
            present_as=DISPATCHER_DRAIN,
            wake=lambda: woken.append(True),
            clock=clock,
            sleep=clock.sleep,
        )

        assert handled == [lead.id]
        assert woken == []
