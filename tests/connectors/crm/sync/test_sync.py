"""CRM sync of queued leads into the sandbox through the real HubSpot connector."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sqlalchemy import select, update

from connectors.crm.accounts import account_from_settings
from connectors.crm.mapping import load_mapping_document
from connectors.crm.protocol import CrmRecord
from connectors.crm.records import collapse
from connectors.crm.sync import CrmSync, retry_parked
from leads.store.outbox import CRM_SYNC
from leads.store.tables import (
    Lead,
    OutboxItem,
    RateBudgetRow,
    TimelineEvent,
    utcnow,
)

RUN_ID = "00000000-0000-0000-0000-000000000001"


def contacts(sandbox_api) -> dict[str, dict]:
    return {
        c["properties"]["email"]: c
        for c in sandbox_api.get("/_sandbox/hubspot/contacts").json()
    }


def lead_row(store, lead_id: str, tenant: str = "default") -> Lead:
    with store.read(tenant) as scope:
        return scope.get(Lead, lead_id)


def events(store, lead_id: str, kind: str) -> list[TimelineEvent]:
    with store.read("default") as scope:
        return list(
            scope.session.scalars(
                scope.select(TimelineEvent).where(
                    TimelineEvent.lead_id == lead_id, TimelineEvent.kind == kind
                )
            )
        )


def outbox_row(store, lead_id: str) -> OutboxItem:
    with store.read("default") as scope:
        return scope.session.scalars(
            scope.select(OutboxItem).where(
                OutboxItem.lead_id == lead_id, OutboxItem.topic == CRM_SYNC
            )
        ).one()


def make_due(store) -> None:
    with store.engine.begin() as connection:
        connection.execute(
            update(OutboxItem)
            .where(OutboxItem.status == "pending")
            .values(available_at=utcnow() - timedelta(seconds=1))
        )


def fault(sandbox_api, **spec) -> None:
    spec = {"vendor": "hubspot"} | spec
    assert sandbox_api.post("/_sandbox/faults", json=spec).status_code == 201


class TestSyncing:
    def test_a_new_lead_is_created_with_its_crm_id_on_the_lead_and_its_timeline(
        self, store, settings, sandbox_api, take_in, run_sync
    ):
        lead = take_in(
            email="Ada.Lovelace@Example.com",
            first_name="Ada",
            last_name="Lovelace",
            company="Analytical Engines",
        )

        counts = run_sync(settings)

        assert counts["created"] == 1
        contact = contacts(sandbox_api)["ada.lovelace@example.com"]
        assert contact["properties"]["firstname"] == "Ada"
        assert contact["properties"]["company"] == "Analytical Engines"
        assert contact["properties"]["orchestrator_lead_id"] == lead.id
        assert contact["properties"]["lifecyclestage"] == "lead"
        stored = lead_row(store, lead.id)
        assert (stored.crm_sync_status, stored.crm_id) == ("synced", contact["id"])
        assert stored.crm_synced_at is not None
        [event] = events(store, lead.id, "crm.created")
        assert event.source == "crm_sync"
        assert event.detail["crm_id"] == contact["id"]
        assert (event.detail["crm"], event.detail["provider"]) == (
            "sandbox",
            "hubspot",
        )
        assert event.detail["account"] == stored.crm_account
        assert event.flow_run_id == RUN_ID
        assert outbox_row(store, lead.id).status == "done"

    def test_a_changed_lead_updates_the_same_record(
        self, store, settings, sandbox_api, take_in, run_sync
    ):
        lead = take_in(email="grace@example.com", company="Navy")
        run_sync(settings)
        take_in(email="grace@example.com", company="Remington Rand")

        counts = run_sync(settings)

        assert counts["updated"] == 1
        assert len(contacts(sandbox_api)) == 1
        assert contacts(sandbox_api)["grace@example.com"]["properties"]["company"] == (
            "Remington Rand"
        )
        assert len(events(store, lead.id, "crm.created")) == 1
        assert len(events(store, lead.id, "crm.updated")) == 1

    def test_a_stage_the_crm_moved_on_is_never_overwritten(
        self, store, settings, sandbox_api, take_in, run_sync
    ):
        take_in(email="won@example.com")
        run_sync(settings)
        contact = contacts(sandbox_api)["won@example.com"]
        sandbox_api.post(
            "/_sandbox/hubspot/contacts/seed",
            json={
                "contacts": [
                    {
                        "id": contact["id"],
                        "properties": {
                            "email": "won@example.com",
                            "lifecyclestage": "customer",
                        },
                    }
                ]
            },
        ).raise_for_status()
        take_in(email="won@example.com", company="Won Inc")

        run_sync(settings)

        after = contacts(sandbox_api)["won@example.com"]["properties"]
        assert after["lifecyclestage"] == "customer"
        assert after["company"] == "Won Inc"

    def test_a_lead_without_an_email_is_skipped_with_the_reason(
        self, store, settings, sandbox_api, take_in, run_sync
    ):
        lead = take_in(phone="+1 415 555 0100", first_name="Phone")

        counts = run_sync(settings)

        assert counts["skipped"] == 1
        assert contacts(sandbox_api) == {}
        stored = lead_row(store, lead.id)
        assert (stored.crm_sync_status, stored.crm_sync_reason) == (
            "skipped",
            "missing_key:email",
        )

    def test_hundreds_of_leads_take_two_calls_per_hundred(
        self, store, settings, sandbox_api, take_in, run_sync
    ):
        from leads.intake import submit_batch

        submit_batch(
            store,
            "default",
            [{"email": f"bulk{n}@example.com"} for n in range(250)],
            channel="api",
            region="US",
        )
        sandbox_api.delete("/_sandbox/hubspot/requests")

        counts = run_sync(settings, batch_size=250)

        assert counts["created"] == 250
        assert len(contacts(sandbox_api)) == 250
        calls = sum(
            sandbox_api.get("/_sandbox/hubspot/requests").json()["counts"].values()
        )
        # One field list per run, then per 100 leads one read (the stage is
        # written only on create) and one upsert.
        assert calls <= 1 + 2 * 3


class TestFailures:
    def test_the_crm_being_down_leaves_the_lead_retrying_then_it_syncs(
        self, store, settings, sandbox_api, take_in, run_sync
    ):
        lead = take_in(email="later@example.com")
        fault(sandbox_api, path="/batch/", status=503, times=20)

        counts = run_sync(settings)

        assert counts["retrying"] == 1
        stored = lead_row(store, lead.id)
        assert (stored.crm_sync_status, stored.crm_sync_reason) == (
            "retrying",
            "unavailable",
        )
        row = outbox_row(store, lead.id)
        assert row.status == "pending" and row.available_at > utcnow()
        [retrying] = events(store, lead.id, "crm.retrying")
        assert retrying.detail["next_attempt_at"]
        assert (retrying.detail["reason"], retrying.detail["attempt"]) == (
            "unavailable",
            1,
        )
        assert retrying.flow_run_id == RUN_ID

        sandbox_api.delete("/_sandbox/faults")
        make_due(store)
        assert run_sync(settings)["created"] == 1
        assert lead_row(store, lead.id).crm_sync_status == "synced"

    def test_a_record_the_crm_refuses_is_parked_with_the_vendors_reason(
        self, store, settings, sandbox_api, take_in, run_sync
    ):
        account = account_from_settings(settings)
        document = {
            "provider": "hubspot",
            "fields": {
                "firstname": {"source": "first_name"},
                "shoe_size": {"constant": 44},
            },
        }
        broken = replace(
            account,
            mapping=load_mapping_document(document, origin="test"),
        )
        good = take_in(email="ok@example.com", first_name="Ok")
        counts = run_sync(settings, accounts=lambda tenant: broken)

        assert counts["parked"] == 1
        stored = lead_row(store, good.id)
        assert stored.crm_sync_status == "parked"
        assert stored.crm_sync_reason.startswith("validation:shoe_size") or (
            "shoe_size" in outbox_row(store, good.id).last_error
        )
        assert outbox_row(store, good.id).status == "parked"

    def test_a_spent_daily_limit_parks_leads_until_the_window_resets(
        self, store, settings, sandbox_api, take_in, run_sync
    ):
        lead = take_in(email="daily@example.com")
        fault(
            sandbox_api,
            path="/batch/",
            status=429,
            body={
                "status": "error",
                "message": "You have reached your daily limit.",
                "errorType": "RATE_LIMIT",
                "policyName": "DAILY",
            },
            times=5,
        )

        counts = run_sync(settings)

        assert counts["parked"] == 1
        stored = lead_row(store, lead.id)
        assert stored.crm_sync_reason == "rate_limited_daily"
        row = outbox_row(store, lead.id)
        # Not parked for good: it comes back by itself after the reset.
        assert row.status == "pending"
        assert row.available_at > utcnow() + timedelta(minutes=1)
        # And every worker on the account now waits for it too.
        with store.engine.connect() as connection:
            [blocked] = (
                connection.execute(select(RateBudgetRow.blocked_until)).scalars().all()
            )
        assert blocked is not None and blocked > utcnow()

    def test_refused_credentials_park_every_lead_and_a_retry_requeues_them(
        self, store, settings, sandbox_api, take_in, run_sync
    ):
        lead = take_in(email="auth@example.com")
        bad = account_from_settings(settings)
        bad = replace(
            bad,
            credentials=bad.credentials.model_copy(
                update={"access_token": type(bad.credentials.access_token)("wrong")}
            ),
        )
        run_sync(settings, accounts=lambda tenant: bad)

        assert lead_row(store, lead.id).crm_sync_reason == "auth"
        assert outbox_row(store, lead.id).status == "parked"

        assert retry_parked(store, "default") == 1
        assert lead_row(store, lead.id).crm_sync_status == "pending"
        assert run_sync(settings)["created"] == 1

    def test_without_a_crm_the_leads_wait_in_the_queue(
        self, store, make_settings, take_in, run_sync
    ):
        lead = take_in(email="wait@example.com")

        counts = run_sync(make_settings(crm="none"))

        assert counts == {"no_crm": 1, "batches": 1}
        assert outbox_row(store, lead.id).status == "pending"
        assert lead_row(store, lead.id).crm_sync_status == "pending"


class TestModes:
    def test_update_only_leaves_leads_the_crm_lacks_alone(
        self, store, make_settings, sandbox_api, take_in, run_sync
    ):
        lead = take_in(email="new@example.com")

        counts = run_sync(make_settings(crm_mode="update_only"))

        assert counts["skipped"] == 1
        assert contacts(sandbox_api) == {}
        assert lead_row(store, lead.id).crm_sync_reason == "not_in_crm"

    def test_create_only_never_changes_an_existing_record_but_notes_its_id(
        self, store, make_settings, sandbox_api, take_in, run_sync
    ):
        sandbox_api.post(
            "/_sandbox/hubspot/contacts/seed",
            json={
                "contacts": [
                    {"properties": {"email": "old@example.com", "company": "Old"}}
                ]
            },
        ).raise_for_status()
        lead = take_in(email="old@example.com", company="New")

        counts = run_sync(make_settings(crm_mode="create_only"))

        assert counts["skipped"] == 1
        contact = contacts(sandbox_api)["old@example.com"]
        assert contact["properties"]["company"] == "Old"
        stored = lead_row(store, lead.id)
        assert (stored.crm_sync_reason, stored.crm_id) == (
            "exists_in_crm",
            contact["id"],
        )


def test_records_of_one_key_are_folded_into_one_with_later_values_winning():
    records = [
        CrmRecord("a", "sam@example.com", {"firstname": "Sam", "phone": "1"}),
        CrmRecord("b", "kim@example.com", {"firstname": "Kim"}),
        CrmRecord("c", "sam@example.com", {"firstname": "Samuel"}),
    ]

    sent, folded = collapse(records)

    assert [r.ref for r in sent] == ["a", "b"]
    assert sent[0].fields == {"firstname": "Samuel", "phone": "1"}
    assert folded == {"c": "a"}


def test_a_daily_limit_hit_mid_batch_keeps_what_was_written_and_parks_the_rest(
    store, settings, sandbox_api, take_in, run_sync
):
    from leads.intake import submit_batch

    submit_batch(
        store,
        "default",
        [{"email": f"day{n}@example.com"} for n in range(150)],
        channel="api",
        region="US",
    )
    # Fields, two reads, the first upsert: then the day's allowance is gone.
    sandbox_api.put("/_sandbox/hubspot/limits", json={"daily": 4}).raise_for_status()

    counts = run_sync(settings, batch_size=150)

    assert counts["created"] == 100
    assert counts["parked"] == 50
    assert len(contacts(sandbox_api)) == 100
    with store.read("default") as scope:
        statuses = [
            (lead.crm_sync_status, lead.crm_sync_reason)
            for lead in scope.session.scalars(scope.select(Lead))
        ]
    assert statuses.count(("synced", None)) == 100
    assert statuses.count(("parked", "rate_limited_daily")) == 50


def test_a_lead_changed_while_it_is_written_is_written_again_with_the_change(
    store, settings, sandbox_api, take_in, run_sync
):
    import threading
    import time

    lead = take_in(email="moving@example.com", company="Before")
    fault(sandbox_api, path="/batch/upsert", delay_seconds=1.0)

    def change_meanwhile() -> None:
        time.sleep(0.4)
        take_in(email="moving@example.com", company="After")

    changer = threading.Thread(target=change_meanwhile)
    changer.start()
    counts = run_sync(settings)
    changer.join()

    assert counts["batches"] == 2
    assert contacts(sandbox_api)["moving@example.com"]["properties"]["company"] == (
        "After"
    )
    assert lead_row(store, lead.id).crm_sync_status == "synced"
    assert len(events(store, lead.id, "crm.created")) == 1
    assert len(events(store, lead.id, "crm.updated")) == 1


class TestFaultsLoseAndDuplicateNothing:
    def test_hs04_a_file_with_one_person_twice_sends_three_inputs_and_no_conflict(
        self, store, settings, sandbox_api, run_sync
    ):
        import csv
        import json
        from pathlib import Path

        from leads.intake import submit_batch

        cases = Path(__file__).parents[3] / "cases"
        with (cases / "HS-04.csv").open(newline="") as file:
            rows = list(csv.DictReader(file))
        expected = json.loads((cases / "HS-04.expected.json").read_text())["expected"]
        submit_batch(store, "default", rows, channel="import", region="US")
        sandbox_api.delete("/_sandbox/hubspot/requests")

        counts = run_sync(settings)

        log = sandbox_api.get("/_sandbox/hubspot/requests").json()["latest"]
        upserts = [r for r in log if r["path"].endswith("/batch/upsert")]
        assert len(upserts) == 1
        sent = json.loads(upserts[0]["body"])["inputs"]
        assert len(sent) == expected["inputs_sent_to_hubspot"]
        assert counts["created"] == 3 and "parked" not in counts
        merged = expected["merged"]
        person = contacts(sandbox_api)[merged["email"]]["properties"]
        assert (person["firstname"], person["lastname"], person["phone"]) == (
            merged["firstname"],
            merged["lastname"],
            merged["phone"],
        )

    def test_a_write_that_times_out_but_landed_is_retried_into_one_record(
        self, store, make_settings, sandbox_api, take_in, run_sync
    ):
        lead = take_in(email="slow@example.com", first_name="Slow")
        settings = make_settings()
        account = account_from_settings(settings)
        impatient = replace(
            account,
            credentials=account.credentials.model_copy(update={"timeout_seconds": 0.5}),
        )
        # The sandbox applies the write, then holds its answer for 1.5 s: the
        # client has given up by then and tries again.
        fault(sandbox_api, path="/batch/upsert", answer_delay_seconds=1.5)
        counts = run_sync(settings, accounts=lambda tenant: impatient)

        assert counts["updated"] == 1  # the retry found the record the first made
        assert list(contacts(sandbox_api)) == ["slow@example.com"]
        assert lead_row(store, lead.id).crm_sync_status == "synced"

    def test_a_run_that_died_holding_leads_leaves_them_to_the_next_once_its_lease_ends(
        self, store, settings, sandbox_api, take_in, run_sync
    ):
        from leads.store.claims import claim

        lead = take_in(email="orphan@example.com")
        # A run claims the lead, writes it to the CRM, and dies before recording it.
        [held] = claim(
            store, CRM_SYNC, "dead-run", limit=10, lease=timedelta(minutes=5)
        )
        run_sync(settings)  # nothing due: the dead run's lease still holds
        assert contacts(sandbox_api) == {}
        sandbox_api.post(
            "/_sandbox/hubspot/contacts/seed",
            json={"contacts": [{"properties": {"email": "orphan@example.com"}}]},
        ).raise_for_status()
        with store.engine.begin() as connection:
            connection.execute(
                update(OutboxItem)
                .where(OutboxItem.id == held.id)
                .values(lease_expires_at=utcnow() - timedelta(seconds=1))
            )

        counts = run_sync(settings)

        assert counts["updated"] == 1
        assert len(contacts(sandbox_api)) == 1
        assert lead_row(store, lead.id).crm_sync_status == "synced"


class TestAccountsAndAttempts:
    def test_moving_to_another_crm_account_writes_every_lead_there_too(
        self, store, make_settings, sandbox_api, take_in, run_sync
    ):
        lead = take_in(email="mover@example.com", last_name="Mover", company="M")
        run_sync(make_settings(sandbox_crm="hubspot"))
        hubspot_id = lead_row(store, lead.id).crm_id

        counts = run_sync(make_settings(sandbox_crm="salesforce"))

        assert counts.get("created") == 1, (
            counts,
            lead_row(store, lead.id).crm_sync_reason,
            outbox_row(store, lead.id).last_error,
        )
        [record] = sandbox_api.get("/_sandbox/salesforce/leads").json()
        assert record["Email"] == "mover@example.com"
        stored = lead_row(store, lead.id)
        assert stored.crm_id == record["Id"] != hubspot_id
        assert stored.crm_account.startswith("salesforce:")
        # Back to the first account: written there again, still one contact.
        assert run_sync(make_settings(sandbox_crm="hubspot"))["updated"] == 1
        assert len(contacts(sandbox_api)) == 1

    def test_saved_credentials_the_secret_key_cannot_open_park_only_that_tenant(
        self, store, settings, sandbox_api, take_in, run_sync
    ):
        from connectors.crm import saved_accounts
        from leads.encryption import SecretBox

        mine = take_in(email="mine@example.com")
        theirs = take_in(tenant="acme", email="theirs@example.com")
        with store.write("acme") as scope:
            saved_accounts.save(
                scope,
                account_from_settings(settings),
                mapping_document=None,
                box=SecretBox("a key since replaced"),
            )

        counts = run_sync(settings)

        assert counts["created"] == 1 and counts["parked"] == 1
        assert lead_row(store, mine.id).crm_sync_status == "synced"
        parked = lead_row(store, theirs.id, tenant="acme")
        assert (parked.crm_sync_status, parked.crm_sync_reason) == ("parked", "config")

    def test_an_unforeseen_error_in_one_tenant_leaves_the_others_syncing(
        self, store, settings, sandbox_api, take_in, run_sync
    ):
        mine = take_in(email="fine@example.com")
        theirs = take_in(tenant="acme", email="bug@example.com")
        account = account_from_settings(settings)

        def accounts(tenant: str):
            if tenant == "acme":
                raise RuntimeError("a bug")
            return account

        counts = run_sync(settings, accounts=accounts)

        assert counts["created"] == 1 and counts["retrying"] == 1
        assert lead_row(store, mine.id).crm_sync_status == "synced"
        failed = lead_row(store, theirs.id, tenant="acme")
        assert failed.crm_sync_reason == "internal_error"

    def test_waiting_for_a_crm_uses_up_none_of_a_leads_attempts(
        self, store, make_settings, sandbox_api, take_in, run_sync
    ):
        lead = take_in(email="patient@example.com")
        for _ in range(12):
            make_due(store)
            assert run_sync(make_settings(crm="none")) == {"no_crm": 1, "batches": 1}
        make_due(store)
        fault(sandbox_api, path="/batch/", status=503, times=20)

        run_sync(make_settings())

        assert lead_row(store, lead.id).crm_sync_status == "retrying"
        assert outbox_row(store, lead.id).attempts == 1

    def test_a_claim_taken_over_by_another_run_is_not_written_by_the_first(
        self, store, settings, sandbox_api, take_in
    ):
        from leads.store.claims import claim

        take_in(email="contested@example.com")
        [slow] = claim(store, CRM_SYNC, "slow-run", limit=1, lease=timedelta(minutes=5))
        with store.engine.begin() as connection:
            connection.execute(
                update(OutboxItem).values(
                    lease_expires_at=utcnow() - timedelta(seconds=1)
                )
            )
        [fast] = claim(store, CRM_SYNC, "fast-run", limit=1, lease=timedelta(minutes=5))
        sync = CrmSync(store, settings, RUN_ID)
        try:
            counts = sync.handle([slow])
        finally:
            sync.close()

        assert counts == {"lost": 1}
        assert contacts(sandbox_api) == {}
        assert outbox_row(store, fast.lead_id).lease_owner == "fast-run"

    def test_retry_brings_back_leads_waiting_out_a_spent_daily_allowance(
        self, store, settings, sandbox_api, take_in, run_sync
    ):
        lead = take_in(email="tomorrow@example.com")
        fault(
            sandbox_api,
            path="/batch/",
            status=429,
            body={"status": "error", "message": "daily", "policyName": "DAILY"},
            times=5,
        )
        run_sync(settings)
        assert lead_row(store, lead.id).crm_sync_reason == "rate_limited_daily"

        assert retry_parked(store, "default") == 1
        sandbox_api.delete("/_sandbox/faults")
        # The shared budget still says the day is spent: a person retrying
        # overrides the guess, not HubSpot; here HubSpot's window has reset.
        with store.engine.begin() as connection:
            connection.execute(update(RateBudgetRow).values(blocked_until=None))

        assert run_sync(settings)["created"] == 1


def test_sf07_a_batch_past_the_bulk_threshold_goes_through_bulk_api_2_in_utf8(
    store, make_settings, sandbox_api, take_in, run_sync
):
    settings = make_settings(sandbox_crm="salesforce")
    account = account_from_settings(settings)
    bulky = replace(
        account,
        credentials=account.credentials.model_copy(
            update={"bulk_threshold": 2, "bulk_poll_seconds": 0}
        ),
    )
    people = [
        ("søren@example.com", "Ørsted", "Café Zoë™ GmbH"),
        ("hanako@example.com", "山田", "山田商事"),
        ("jose@example.com", "Nuñez", "Rocket 🚀 Labs"),
    ]
    for email, last, company in people:
        take_in(email=email, last_name=last, company=company)
    counts = run_sync(settings, accounts=lambda tenant: bulky)

    assert counts["created"] == 3
    requests = sandbox_api.get("/_sandbox/salesforce/requests").json()
    assert any("bulk" in name or "ingest" in name for name in requests), requests
    held = {r["Email"]: r for r in sandbox_api.get("/_sandbox/salesforce/leads").json()}
    assert {(held[e]["LastName"], held[e]["Company"]) for e, _, _ in people} == {
        (last, company) for _, last, company in people
    }
