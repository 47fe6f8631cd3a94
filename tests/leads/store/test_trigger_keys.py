"""Idempotency keys held in the store: one holder at a time, taken over on death."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from leads.store.trigger_keys import HOLD, note_lead, release, try_hold

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def test_of_many_requests_at_once_exactly_one_holds_the_key(store):
    with ThreadPoolExecutor(max_workers=8) as pool:
        holds = list(pool.map(lambda _: try_hold(store, "t", "k", NOW), range(16)))

    assert len([hold for hold in holds if hold is not None]) == 1


def test_a_released_key_is_held_again_at_once_with_the_lead_noted(store):
    first = try_hold(store, "t", "k", NOW)
    note_lead(store, "t", first, "lead-1")
    assert try_hold(store, "t", "k", NOW) is None

    release(store, "t", first, NOW)
    second = try_hold(store, "t", "k", NOW)

    assert second is not None and second.holder != first.holder
    assert second.lead_id == "lead-1"


def test_a_dead_holders_key_is_taken_over_after_the_hold_and_it_writes_no_more(store):
    dead = try_hold(store, "t", "k", NOW)
    assert try_hold(store, "t", "k", NOW + HOLD / 2) is None

    taker = try_hold(store, "t", "k", NOW + HOLD)
    note_lead(store, "t", dead, "written-too-late")
    release(store, "t", dead, NOW + HOLD)

    assert taker is not None and taker.lead_id is None
    # The late writer changed nothing: the taker still holds the key.
    assert try_hold(store, "t", "k", NOW + HOLD) is None


def test_keys_are_per_tenant(store):
    assert try_hold(store, "a", "k", NOW) is not None
    assert try_hold(store, "b", "k", NOW) is not None
