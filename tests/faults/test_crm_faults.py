"""The CRM side of the fault suite: every accepted lead reaches the CRM once.

Each case breaks the sandbox CRM while syncs run over hundreds of leads, then
checks the ledger (`tests/faults/crm_ledger.py`): every accepted lead is one
CRM record with its id on the lead, or waits for a reason the fault explains;
then the fault passes and the ledger must balance exactly. Cases run against
the sandbox as HubSpot and as Salesforce, on each store backend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from sqlalchemy import insert, select, update

from connectors.crm.sync import follow_account
from leads.settings import Settings
from leads.store.outbox import CRM_SYNC
from leads.store.tables import CrmSyncTarget, OutboxItem, TimelineEvent, utcnow
from tests.conftest import free_port
from tests.faults.conftest import (
    SandboxCrm,
    SyncRuns,
    accept,
    daily_window_resets,
    settle,
)
from tests.faults.crm_ledger import assert_ledger

LEADS = 300


def claimed_rows(store) -> dict[int, tuple[str | None, datetime | None]]:
    """Each claimed `crm_sync` row: its owner and when its lease runs out."""
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(
                OutboxItem.id, OutboxItem.lease_owner, OutboxItem.lease_expires_at
            ).where(OutboxItem.topic == CRM_SYNC, OutboxItem.status == "claimed")
        )
        return {row.id: (row.lease_owner, row.lease_expires_at) for row in rows}


def lease_runs_out(store) -> None:
    """Every claim's lease has run out, as its ten minutes passing would."""
    with store.engine.begin() as connection:
        connection.execute(
            update(OutboxItem)
            .where(OutboxItem.topic == CRM_SYNC, OutboxItem.status == "claimed")
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def last_crm_events(store, row_ids) -> list[str]:
    """The last `crm.*` event of the lead of each of these outbox rows."""
    with store.engine.connect() as connection:
        lead_ids = connection.scalars(
            select(OutboxItem.lead_id).where(OutboxItem.id.in_(list(row_ids)))
        ).all()
        events = connection.execute(
            select(TimelineEvent.lead_id, TimelineEvent.kind)
            .where(
                TimelineEvent.lead_id.in_(lead_ids),
                TimelineEvent.kind.like("crm.%"),
            )
            .order_by(TimelineEvent.id)
        )
        return list({lead_id: kind for lead_id, kind in events}.values())


def flow_runs_that_synced(store) -> set[str]:
    """The flow runs the `crm.created` events name."""
    with store.engine.connect() as connection:
        return set(
            connection.scalars(
                select(TimelineEvent.flow_run_id).where(
                    TimelineEvent.kind == "crm.created"
                )
            )
        )


def wait_until(check: Callable[[], object], timeout: float, what: str) -> object:
    """Polls `check` until it returns something truthy; fails naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


class TestRateLimits:
    @pytest.mark.timeout(180)
    def test_a_storm_of_429s_leaves_leads_retrying_then_each_is_written_once(
        self, store, crm: SandboxCrm, run_sync: SyncRuns
    ):
        accepted = accept(store, LEADS, "storm")
        # Twelve in a row, each asking for twenty seconds (waited out, cut
        # short, between tries; then the leads' rows wait that long, so this
        # run does not see them again): two batches use up their five tries
        # each, the third gets through on its third.
        crm.arm_writes(
            status=429,
            headers={"Retry-After": "20"},
            body=_secondly_429(crm.vendor),
            times=12,
        )

        counts = run_sync(batch_size=100)

        assert counts["retrying"] == 200 and counts["created"] == 100, counts
        assert crm.faults_left() == []
        if crm.vendor == "hubspot":
            # HubSpot's Retry-After is honoured between tries (the Salesforce
            # client reads none, and backs off by itself).
            assert run_sync.waits.asked.count(20.0) >= 8
        ledger = assert_ledger(
            store, crm.http, crm.vendor, accepted, explained_by={"rate_limited"}
        )
        assert ledger.reasons == {"rate_limited": 200}

        settle(run_sync, store)

        assert_ledger(store, crm.http, crm.vendor, accepted)
        assert crm.record_count() == LEADS

    @pytest.mark.timeout(180)
    def test_a_spent_daily_limit_parks_the_rest_until_the_window_resets(
        self, store, crm: SandboxCrm, run_sync: SyncRuns
    ):
        accepted = accept(store, LEADS, "daily")
        # The sandbox's own daily limit: enough for the field list and the
        # first batches, not for all three.
        crm.limit_daily_calls(5 if crm.vendor == "hubspot" else 3)

        counts = run_sync(batch_size=100)

        ledger = assert_ledger(
            store, crm.http, crm.vendor, accepted, explained_by={"rate_limited_daily"}
        )
        assert 100 <= len(ledger.synced) < LEADS, counts
        assert ledger.reasons == {"rate_limited_daily": LEADS - len(ledger.synced)}
        # The day is spent: a run now waits for the window instead of writing.
        written = crm.record_count()
        assert run_sync() == {}
        assert crm.record_count() == written

        crm.limit_daily_calls(None)
        daily_window_resets(store)
        settle(run_sync, store)

        assert_ledger(store, crm.http, crm.vendor, accepted)


def _secondly_429(vendor: str) -> object:
    """The body each vendor sends with a short-term rate limit's 429."""
    if vendor == "hubspot":
        return {
            "status": "error",
            "message": "You have reached your secondly limit.",
            "errorType": "RATE_LIMIT",
            "policyName": "SECONDLY",
        }
    return [{"message": "Too many requests", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]


class TestServerErrors:
    @pytest.mark.timeout(180)
    def test_a_burst_of_5xx_on_every_call_leaves_leads_retrying_then_writes_each_once(
        self, store, crm: SandboxCrm, run_sync: SyncRuns
    ):
        accepted = accept(store, LEADS, "fivexx")
        for status in (500, 502, 503):
            crm.arm(status=status, times=4)

        run_sync(batch_size=100)

        ledger = assert_ledger(
            store, crm.http, crm.vendor, accepted, explained_by={"unavailable"}
        )
        assert ledger.waiting and ledger.synced
        assert crm.faults_left() == []

        settle(run_sync, store)

        assert_ledger(store, crm.http, crm.vendor, accepted)
        assert crm.record_count() == LEADS


class TestTimeouts:
    @pytest.mark.timeout(180)
    @pytest.mark.parametrize(
        "vendor, keyed_by_email",
        [("hubspot", True), ("salesforce", False), ("salesforce", True)],
        ids=["hubspot", "salesforce-by-lead-id", "salesforce-by-email"],
    )
    def test_a_write_that_lands_but_answers_too_late_is_never_written_twice(
        self, store, crm: SandboxCrm, run_sync: SyncRuns, keyed_by_email
    ):
        crm.keyed_by_email = keyed_by_email
        accepted = accept(store, LEADS, "late")
        impatient = crm.account(timeout_seconds=0.5)
        # Each write is applied, then its answer held past the client's
        # timeout: the client cannot tell it landed, and tries again.
        crm.arm_writes(answer_delay_seconds=1.5, times=7)

        run_sync(account=impatient, batch_size=100)

        ledger = assert_ledger(
            store, crm.http, crm.vendor, accepted, explained_by={"unavailable"}
        )
        assert ledger.waiting, "no write ran out of tries: the case proves nothing"
        # Writes whose answers were lost are in the CRM, each once.
        assert crm.record_count() > len(ledger.synced)

        settle(run_sync, store, account=impatient)

        assert_ledger(store, crm.http, crm.vendor, accepted)
        assert crm.record_count() == LEADS

    # TODO(#8): Salesforce keyed by e-mail is left out here: a create it applies
    # later than the next run's lookup by e-mail (after the 30 s back-off)
    # would be a second Lead, as there is no external id to upsert by.
    @pytest.mark.timeout(180)
    @pytest.mark.parametrize("vendor", ["hubspot", "salesforce"])
    def test_writes_a_slow_crm_applies_after_the_client_gave_up_are_not_doubled(
        self, store, crm: SandboxCrm, run_sync: SyncRuns
    ):
        accepted = accept(store, LEADS, "slow")
        impatient = crm.account(timeout_seconds=0.5)
        # The CRM sits on each of the first three writes for 1.5 s before
        # applying it: the client gives up on each, and the fourth try is
        # applied first, the three abandoned ones after it.
        crm.arm_writes(delay_seconds=1.5, times=3)

        counts = run_sync(account=impatient, batch_size=100)
        # The abandoned writes are applied when their 1.5 s are up, if at all
        # (a server may drop a request whose client has hung up).
        time.sleep(2.0)

        assert counts == {"created": LEADS, "batches": 3}, counts
        assert_ledger(store, crm.http, crm.vendor, accepted)
        assert crm.record_count() == LEADS


class TestExpiredSessions:
    @pytest.mark.timeout(180)
    def test_a_session_expiring_mid_batch_is_renewed_and_the_batch_goes_on(
        self, store, crm: SandboxCrm, run_sync: SyncRuns
    ):
        accepted = accept(store, LEADS, "session")
        account = _renewable_account(crm)
        # Each write's answer is held a moment, so the session can expire
        # between the first chunk of the batch and the next.
        crm.arm_writes(answer_delay_seconds=0.3, times=1_000)
        expired = threading.Event()

        def expire_after_first_chunk() -> None:
            if wait_until(lambda: crm.record_count() >= crm.chunk, 60, "a chunk"):
                crm.expire_sessions()
                expired.set()

        expirer = threading.Thread(target=expire_after_first_chunk)
        expirer.start()
        try:
            counts = run_sync(account=account, batch_size=LEADS)
        finally:
            expirer.join(timeout=60)

        assert expired.is_set()
        assert counts == {"created": LEADS, "batches": 1}
        # Signed in once, and once more after the expiry: no more.
        assert crm.token_grants() == 2
        assert_ledger(store, crm.http, crm.vendor, accepted)

    @pytest.mark.timeout(180)
    def test_a_session_that_cannot_be_renewed_parks_the_rest_for_auth(
        self, store, crm: SandboxCrm, run_sync: SyncRuns
    ):
        accepted = accept(store, LEADS, "revoked")
        account = _renewable_account(crm)
        crm.arm_writes(answer_delay_seconds=0.3, times=1_000)

        def revoke_after_first_chunk() -> None:
            if wait_until(lambda: crm.record_count() >= crm.chunk, 60, "a chunk"):
                crm.expire_sessions(for_good=True)

        revoker = threading.Thread(target=revoke_after_first_chunk)
        revoker.start()
        try:
            run_sync(account=account, batch_size=LEADS)
        finally:
            revoker.join(timeout=60)

        ledger = assert_ledger(
            store, crm.http, crm.vendor, accepted, explained_by={"auth"}
        )
        assert len(ledger.synced) >= crm.chunk
        assert ledger.reasons == {"auth": LEADS - len(ledger.synced)}

        crm.renew_sessions()
        settle(run_sync, store, account=account)

        assert_ledger(store, crm.http, crm.vendor, accepted)


def _renewable_account(crm: SandboxCrm):
    """An account whose sessions expire and are renewed: OAuth for HubSpot.

    The sandbox's Salesforce account signs in with the client-credentials
    flow already; HubSpot's private-app token never expires, so the HubSpot
    case signs in as an OAuth app.
    """
    if crm.vendor == "salesforce":
        return crm.account()
    from connectors.sandbox.hubspot.access import (
        SANDBOX_CLIENT_ID,
        SANDBOX_CLIENT_SECRET,
        SANDBOX_REFRESH_TOKEN,
    )

    return crm.account(
        client_id=SANDBOX_CLIENT_ID,
        client_secret=SANDBOX_CLIENT_SECRET,
        refresh_token=SANDBOX_REFRESH_TOKEN,
    )


class TestConcurrentSyncs:
    @pytest.mark.timeout(240)
    def test_two_syncs_at_once_while_leads_arrive_write_each_lead_once(
        self, store, crm: SandboxCrm, run_sync: SyncRuns, serve_api, tmp_path
    ):
        accepted = accept(store, LEADS, "early")
        api = serve_api(
            Settings(
                data_dir=tmp_path / "api",
                database_url=store.url,
                # The API signals no Prefect and holds no CRM of its own here.
                crm="none",
                prefect_api_url=f"http://127.0.0.1:{free_port()}/api",
            )
        )
        # Writes answer a little late, so the two runs' batches interleave.
        crm.arm_writes(answer_delay_seconds=0.1, times=1_000)
        counts: dict[str, dict[str, int]] = {}

        def sync(name: str) -> None:
            counts[name] = run_sync(batch_size=25)

        runs = [threading.Thread(target=sync, args=(name,)) for name in "AB"]
        for thread in runs:
            thread.start()
        with api.client() as http:
            for start in range(0, 200, 50):
                batch = [
                    {"email": f"late{n}@late{n}.example.com"}
                    for n in range(start, start + 50)
                ]
                answer = http.post("/api/leads/batch", json=batch)
                assert answer.status_code == 200, answer.text
                results = answer.json()["results"]
                assert all(r["outcome"] == "created" for r in results), results
                accepted += [r["lead_id"] for r in results]
        for thread in runs:
            thread.join(timeout=200)

        # Both runs wrote, and neither wrote what the other held.
        assert counts["A"].get("created") and counts["B"].get("created"), counts
        assert "lost" not in counts["A"] and "lost" not in counts["B"]
        # The schedule's next run finds what arrived after both went idle.
        run_sync()
        assert_ledger(store, crm.http, crm.vendor, accepted)
        assert crm.record_count() == LEADS + 200

    @pytest.mark.timeout(180)
    def test_a_run_whose_lease_ran_out_mid_write_leaves_the_lead_to_its_new_run(
        self, store, crm: SandboxCrm, run_sync: SyncRuns
    ):
        accepted = accept(store, 100, "overrun")
        lease = timedelta(seconds=1)
        # The first run's write lands, and its answer takes longer than the
        # run's lease: a second run takes the leads over meanwhile.
        crm.arm_writes(answer_delay_seconds=4.0, times=1)
        first: dict[str, int] = {}

        def slow_run() -> None:
            first.update(run_sync(batch_size=100, lease=lease))

        slow = threading.Thread(target=slow_run)
        slow.start()
        wait_until(lambda: crm.record_count() == 100, 60, "the first run's write")
        time.sleep(1.2)
        second = run_sync(batch_size=100, lease=lease)
        slow.join(timeout=60)

        assert_ledger(store, crm.http, crm.vendor, accepted)
        assert crm.record_count() == 100
        assert second["updated"] == 100, second
        # The first run's answer came after the second had taken its leads
        # over: they were not the first run's to record any more.
        assert first == {"lost": 100, "batches": 1}, first

    @pytest.mark.timeout(60)
    @pytest.mark.parametrize("vendor", ["hubspot"])
    def test_two_first_syncs_of_a_tenant_at_once_both_note_its_account(
        self, store, crm: SandboxCrm
    ):
        account = crm.account()
        # Another run's first sync has added the tenant's target and not yet
        # committed: PostgreSQL shows this one no row to lock, so it adds one
        # too, and waits on the other's key.
        other = store.engine.connect()
        transaction = other.begin()
        other.execute(
            insert(CrmSyncTarget).values(
                tenant_id="default", account=account.budget_key, since=utcnow()
            )
        )
        noted: list[object] = []

        def first_sync() -> None:
            try:
                noted.append(follow_account(store, "default", account, utcnow()))
            except Exception as exc:  # the failure is the finding
                noted.append(exc)

        this = threading.Thread(target=first_sync)
        this.start()
        time.sleep(0.5)
        transaction.commit()
        other.close()
        this.join(timeout=30)

        assert noted == [0]
        with store.read("default") as scope:
            [target] = scope.session.scalars(scope.select(CrmSyncTarget)).all()
        assert target.account == account.budget_key


@pytest.mark.slow
class TestKilledRuns:
    @pytest.mark.timeout(300)
    def test_a_crm_sync_run_killed_mid_batch_is_finished_once_its_lease_runs_out(
        self, store, crm: SandboxCrm, run_sync: SyncRuns, crm_sync_processes
    ):
        accepted = accept(store, LEADS, "killed")
        # Every write lands at once and is answered 1.5 s later: the kill
        # comes between the CRM applying a batch and the run recording it.
        crm.arm_writes(answer_delay_seconds=1.5, times=1_000)
        run = crm_sync_processes(store.url, crm, batch_size=100, idle_grace_seconds=0)

        wait_until(lambda: crm.record_count() >= 200, 120, "a second batch written")
        run.kill()

        in_crm = crm.record_count()
        held = claimed_rows(store)
        ledger = assert_ledger(store, crm.http, crm.vendor, accepted, settled=False)
        # Killed mid-batch: the CRM holds leads the store has not recorded,
        # and the dead run still holds them under its ten-minute lease.
        assert in_crm > len(ledger.synced) and len(held) == 100, (in_crm, ledger)
        assert len({owner for owner, _ in held.values()}) == 1
        assert all(
            expires > utcnow() + timedelta(minutes=5) for _, expires in held.values()
        )
        # So a run now writes only the others.
        crm.disarm()
        assert run_sync()["created"] == LEADS - in_crm
        assert set(claimed_rows(store)) == set(held)

        lease_runs_out(store)
        counts = run_sync()

        # The leads the dead run wrote were found, not written anew.
        assert counts == {"updated": 100, "batches": 1}, counts
        assert set(last_crm_events(store, held)) == {"crm.updated"}
        assert_ledger(store, crm.http, crm.vendor, accepted)
        assert crm.record_count() == LEADS

    @pytest.mark.timeout(300)
    def test_two_crm_sync_runs_in_two_processes_write_each_lead_once(
        self, store, crm: SandboxCrm, crm_sync_processes
    ):
        accepted = accept(store, LEADS, "twice")
        # Fifteen batches answered 0.6 s late each: longer than one process
        # takes to start after the other.
        crm.arm_writes(answer_delay_seconds=0.6, times=1_000)

        runs = [
            crm_sync_processes(store.url, crm, batch_size=20, idle_grace_seconds=2)
            for _ in range(2)
        ]
        for run in runs:
            run.finish(180)

        assert_ledger(store, crm.http, crm.vendor, accepted)
        assert crm.record_count() == LEADS
        # Both runs wrote leads: the two were at work on one outbox at once.
        assert len(flow_runs_that_synced(store)) == 2
