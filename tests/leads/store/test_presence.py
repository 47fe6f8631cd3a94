"""Drain presence on a real store: one row per drain, renewed, withdrawn, run out."""

from __future__ import annotations

from datetime import timedelta

from leads import clock
from leads.store.presence import VALID_FOR, all_present, announce, withdraw


def test_every_named_drain_must_be_present(store):
    announce(store, "crm_sync", "run-1")

    assert all_present(store, ["crm_sync"])
    assert not all_present(store, ["crm_sync", "sequence_dispatcher"])

    announce(store, "sequence_dispatcher", "run-2")

    assert all_present(store, ["crm_sync", "sequence_dispatcher"])


def test_a_presence_runs_out_unless_renewed(store):
    now = clock.now()
    announce(store, "crm_sync", "run-1", now=now)

    assert all_present(store, ["crm_sync"], now=now + VALID_FOR - timedelta(seconds=1))
    assert not all_present(store, ["crm_sync"], now=now + VALID_FOR)

    announce(store, "crm_sync", "run-1", now=now + VALID_FOR)
    assert all_present(store, ["crm_sync"], now=now + VALID_FOR)


def test_a_run_withdraws_only_its_own_presence(store):
    announce(store, "crm_sync", "run-1")
    # A second run of the same drain writes over the first's.
    announce(store, "crm_sync", "run-2")

    withdraw(store, "crm_sync", "run-1")
    assert all_present(store, ["crm_sync"])

    withdraw(store, "crm_sync", "run-2")
    assert not all_present(store, ["crm_sync"])
