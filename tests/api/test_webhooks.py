"""Webhooks over HTTP: raw-byte signatures, one lead per event; WH-01, WH-02, EM-01."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from connectors.email.file_outbox import FileOutbox
from leads.clock import ManualClock, use_clock
from leads.encryption import secret_key
from leads.store.tables import (
    AuditEvent,
    Lead,
    OutboxItem,
    SequenceStep,
    TimelineEvent,
    WebhookDelivery,
    utcnow,
)
from leads.webhooks.signatures import sign_hubspot_v3, sign_orchestrator, sign_sha256
from leads.webhooks.sources import derived_secret

CASES = Path(__file__).parents[1] / "cases"


def case(name: str) -> dict:
    return json.loads((CASES / f"{name}.json").read_text())


def rows(store, model, *where):
    with store.engine.connect() as connection:
        return list(connection.execute(select(model.__table__).where(*where)))


def count(store, model, *where) -> int:
    with store.engine.connect() as connection:
        query = select(func.count()).select_from(model).where(*where)
        return connection.execute(query).scalar_one()


def settled(store, expected: int, timeout: float = 20) -> list:
    """The deliveries once `expected` of them are no longer pending."""
    deadline = time.monotonic() + timeout
    while True:
        done = rows(store, WebhookDelivery, WebhookDelivery.status != "pending")
        if len(done) >= expected or time.monotonic() > deadline:
            return sorted(done, key=lambda row: row.id)
        time.sleep(0.05)


@pytest.fixture
def forms_secret(live_api) -> str:
    # Development derives a secret per source when its variable is unset.
    return derived_secret(secret_key(live_api.settings), "forms")


def post_forms(client, secret: str, body: bytes, event_id: str | None = None, **kw):
    headers = {
        "Content-Type": "application/json",
        "X-Orchestrator-Signature": sign_orchestrator(
            secret, kw.pop("at", int(time.time())), body
        ),
    }
    if event_id:
        headers["X-Event-Id"] = event_id
    return client.post("/api/webhooks/forms", content=body, headers=headers)


def as_bytes(document: dict) -> bytes:
    return json.dumps(document).encode()


class TestSignedDeliveries:
    def test_a_signed_form_post_becomes_a_lead_with_its_delivery_on_the_timeline(
        self, client, store, forms_secret
    ):
        body = as_bytes({"email": "ada@example.com", "first_name": "Ada"})

        response = post_forms(client, forms_secret, body, "evt-1")

        assert response.status_code == 200, response.text
        receipt = response.json()
        assert (receipt["new"], receipt["duplicates"]) == (1, 0)
        assert receipt["deliveries"][0]["status"] == "accepted"
        [delivery] = settled(store, 1)
        assert delivery.status == "applied"
        [lead] = rows(store, Lead)
        assert (lead.id, lead.source) == (delivery.lead_id, "webform")
        [event] = rows(store, TimelineEvent, TimelineEvent.kind == "lead.created")
        assert event.source == "webhook:forms"
        assert event.detail["reference"] == "webhook:forms:evt-1"
        # Why it will be greeted: the sequences whose rules admitted it.
        assert "welcome_sequence" in event.detail["sequences"]

    def test_a_wrong_signature_is_401_and_nothing_is_stored(
        self, client, store, forms_secret
    ):
        body = as_bytes({"email": "ada@example.com"})
        headers = {
            "X-Orchestrator-Signature": sign_orchestrator(
                "not-the-secret", int(time.time()), body
            )
        }

        response = client.post("/api/webhooks/forms", content=body, headers=headers)

        assert response.status_code == 401
        assert response.json()["errors"][0] == {
            "field": "X-Orchestrator-Signature",
            "reason": "bad_signature",
            "message": response.json()["detail"],
        }
        assert count(store, WebhookDelivery) == 0
        assert count(store, Lead) == 0

    @pytest.mark.parametrize(
        ("header", "reason"),
        [
            (None, "missing_signature"),
            ("v1=abc", "malformed_signature"),
            ("t=12x,v1=abc", "malformed_timestamp"),
        ],
    )
    def test_a_missing_or_malformed_signature_is_401_naming_why(
        self, client, store, header, reason
    ):
        headers = {"X-Orchestrator-Signature": header} if header else {}

        response = client.post("/api/webhooks/forms", content=b"{}", headers=headers)

        assert response.status_code == 401
        assert response.json()["errors"][0]["reason"] == reason
        assert count(store, WebhookDelivery) == 0

    def test_a_signature_older_than_five_minutes_is_refused_as_a_replay(
        self, client, store, forms_secret
    ):
        body = as_bytes({"email": "ada@example.com"})

        response = post_forms(
            client, forms_secret, body, "evt-1", at=int(time.time()) - 301
        )

        assert response.status_code == 401
        assert response.json()["errors"][0]["reason"] == "stale_timestamp"
        assert count(store, WebhookDelivery) == 0

    def test_an_unknown_source_is_404_without_listing_the_others(self, client, store):
        response = client.post("/api/webhooks/nosuch", content=b"{}")

        assert response.status_code == 404
        assert "forms" not in response.json()["detail"]
        assert count(store, WebhookDelivery) == 0

    @pytest.mark.parametrize("stamp", ["\u00b2", "1" * 400, "", "-5", "1.5"])
    def test_a_timestamp_that_is_not_plain_digits_is_401_not_an_error(
        self, client, store, forms_secret, stamp
    ):
        header = f"t={stamp},v1=" + "0" * 64

        response = client.post(
            "/api/webhooks/forms",
            content=b"{}",
            headers={"X-Orchestrator-Signature": header.encode("utf-8")},
        )

        assert response.status_code == 401
        assert response.json()["errors"][0]["reason"] in (
            "malformed_timestamp",
            "malformed_signature",
        )
        assert count(store, WebhookDelivery) == 0

    def test_a_captured_request_replayed_under_a_new_event_id_is_a_redelivery(
        self, client, store, forms_secret
    ):
        body = as_bytes({"email": "ada@example.com"})
        signature = sign_orchestrator(forms_secret, int(time.time()), body)

        answers = [
            client.post(
                "/api/webhooks/forms",
                content=body,
                headers={"X-Orchestrator-Signature": signature, "X-Event-Id": event},
            )
            for event in ("evt-1", "forged-2", "forged-3")
        ]
        settled(store, 1)

        assert [a.json()["new"] for a in answers] == [1, 0, 0]
        [delivery] = rows(store, WebhookDelivery)
        assert (delivery.delivery_id, delivery.receipts) == ("evt-1", 3)

    def test_a_token_source_takes_the_right_token_only(self, client, store, live_api):
        token = derived_secret(secret_key(live_api.settings), "zapier")
        body = as_bytes({"email": "zed@example.com"})

        wrong = client.post("/api/webhooks/zapier?token=guess", content=body)
        missing = client.post("/api/webhooks/zapier", content=body)
        right = client.post(f"/api/webhooks/zapier?token={token}", content=body)

        assert (wrong.status_code, missing.status_code) == (401, 401)
        assert right.status_code == 200
        [delivery] = settled(store, 1)
        assert delivery.status == "applied"
        assert rows(store, Lead)[0].source == "zapier"

    def test_sources_are_listed_with_urls_and_never_their_secrets(
        self, client, forms_secret
    ):
        response = client.get("/api/webhooks/sources")

        assert response.status_code == 200
        listed = {source["name"]: source for source in response.json()}
        assert listed["forms"]["signature"] == "orchestrator"
        assert listed["forms"]["url"].endswith("/api/webhooks/forms")
        assert listed["forms"]["secret"] == "development"
        assert forms_secret not in response.text


class TestCaseWh01:
    """WH-01: one event delivered three times, then a new one for the same person."""

    def test_three_copies_make_one_lead_and_the_new_event_updates_it(
        self, client, store, forms_secret
    ):
        deliveries = case("WH-01")["input"]["deliveries"]
        expected = case("WH-01")["expected"]
        statuses: list[int] = []

        def deliver(item: dict) -> None:
            response = post_forms(
                client,
                forms_secret,
                as_bytes(item["body"]),
                item["headers"]["X-Event-Id"],
            )
            statuses.append(response.status_code)

        # The first two overlap in time, as in the report.
        racing = [threading.Thread(target=deliver, args=(d,)) for d in deliveries[:2]]
        for thread in racing:
            thread.start()
        for thread in racing:
            thread.join()
        settled(store, 1)
        deliver(deliveries[2])
        deliver(deliveries[3])
        kept = settled(store, 2)

        assert all(200 <= status < 300 for status in statuses)
        assert len(statuses) == len(expected["http_statuses"])
        assert [row.delivery_id for row in kept] == expected["events_processed"]
        assert [row.status for row in kept] == ["applied", "applied"]
        assert (
            sum(row.receipts - 1 for row in kept)
            == (expected["events_ignored_as_duplicate"])
        )
        [lead] = rows(store, Lead)
        assert count(store, Lead) == expected["leads"]
        assert lead.email == expected["lead_after"]["email"]
        assert lead.phone == expected["lead_after"]["phone"]
        # One welcome: the lead was enrolled once, by its first event.
        assert (
            count(
                store,
                OutboxItem,
                OutboxItem.topic.like("sequence%"),
            )
            == expected["welcome_emails"]
        )
        kinds = [
            row.kind
            for row in rows(store, TimelineEvent, TimelineEvent.lead_id == lead.id)
        ]
        assert kinds == ["lead.created", "lead.updated"]


class TestCaseWh02:
    """WH-02: a GitHub-style signature checked over the raw bytes, not a re-dump."""

    SIGNED_AT = datetime.fromtimestamp(1718000000, tz=UTC)

    @pytest.fixture
    def partner(self, monkeypatch) -> dict:
        wh02 = case("WH-02")
        monkeypatch.setenv("ORCH_WEBHOOK_SECRET_PARTNER", wh02["input"]["secret"])
        return wh02

    def post(self, client, body: bytes, headers: dict) -> httpx.Response:
        return client.post(
            "/api/webhooks/partner",
            content=body,
            headers={"Content-Type": "application/json", **headers},
        )

    def test_the_raw_body_verifies_and_its_lead_is_taken_in(
        self, client, store, partner
    ):
        raw = (CASES / "WH-02.body.bin").read_bytes()

        with use_clock(ManualClock(self.SIGNED_AT)) as clock:
            clock.advance(seconds=200)
            response = self.post(client, raw, partner["input"]["headers"])
            [delivery] = settled(store, 1)

        assert response.status_code == 200, response.text
        assert delivery.status == "applied"
        [lead] = rows(store, Lead)
        assert lead.email == "ines.faro@example.com"
        assert lead.custom["name"] == "Inês Faro"

    def test_a_tampered_body_is_401(self, client, store, partner):
        tampered = partner["input"]["tampered_body_utf8"].encode()

        with use_clock(ManualClock(self.SIGNED_AT)) as clock:
            clock.advance(seconds=200)
            response = self.post(client, tampered, partner["input"]["headers"])

        assert response.status_code == partner["expected"]["tampered"]["status"]
        assert count(store, WebhookDelivery) == 0

    def test_a_timestamp_ten_minutes_old_is_401(self, client, store, partner):
        raw = (CASES / "WH-02.body.bin").read_bytes()

        with use_clock(ManualClock(self.SIGNED_AT)) as clock:
            clock.advance(seconds=600)
            response = self.post(client, raw, partner["input"]["headers"])

        assert response.status_code == partner["expected"]["stale_timestamp"]["status"]
        assert response.json()["errors"][0]["reason"] == "stale_timestamp"

    def test_an_event_type_the_source_does_not_handle_is_kept_as_ignored(
        self, client, store, partner
    ):
        body = as_bytes({"event": "lead.deleted", "lead": {"email": "a@example.com"}})
        stamp = str(int(time.time()))
        headers = {
            "X-Timestamp": stamp,
            "X-Signature": sign_sha256(partner["input"]["secret"], stamp, body),
        }

        response = self.post(client, body, headers)
        [delivery] = settled(store, 1)

        assert response.status_code == 200
        assert delivery.status == "ignored"
        assert delivery.reasons[0]["reason"] == "event_type_not_handled"
        assert count(store, Lead) == 0


class TestRejectedContent:
    def test_case_em01_by_webhook_is_acknowledged_and_kept_as_rejected(
        self, client, store, forms_secret
    ):
        em01 = case("EM-01")

        response = post_forms(
            client, forms_secret, as_bytes(em01["input"]["webhook_body"]), "em-01"
        )
        [delivery] = settled(store, 1)
        listed = client.get("/api/webhooks/deliveries", params={"status": "rejected"})

        assert response.status_code == 200
        assert delivery.status == "rejected"
        assert [(r["field"], r["reason"]) for r in delivery.reasons] == [
            ("first_name", "control_characters")
        ]
        assert count(store, Lead) == 0
        assert count(store, OutboxItem) == 0
        [shown] = listed.json()["data"]
        assert shown["delivery_id"] == "em-01"
        assert shown["reasons"] == delivery.reasons

    def test_a_body_that_is_not_json_is_kept_as_rejected_with_the_reason(
        self, client, store, forms_secret
    ):
        response = post_forms(client, forms_secret, b"email=ada@example.com", "x-1")
        [delivery] = settled(store, 1)

        assert response.status_code == 200
        assert delivery.status == "rejected"
        # In the words the API uses for a body it cannot read, line and column.
        assert delivery.reasons[0] == {
            "field": "body",
            "reason": "invalid_json",
            "message": "the body is not JSON: Expecting value: line 1 column 1 "
            "(char 0)",
        }

    def test_broken_bodies_are_kept_under_the_event_ids_their_headers_give(
        self, client, store, forms_secret
    ):
        body = b'{"email": "ada@example.com",'
        now = int(time.time())

        answers = [
            post_forms(client, forms_secret, body, event, at=at)
            for event, at in (("evt-bad-1", now - 1), ("evt-bad-2", now))
        ]
        kept = settled(store, 2)
        listed = client.get("/api/webhooks/deliveries", params={"status": "rejected"})

        assert [a.json()["deliveries"][0]["delivery_id"] for a in answers] == [
            "evt-bad-1",
            "evt-bad-2",
        ]
        assert [(d.delivery_id, d.status) for d in kept] == [
            ("evt-bad-1", "rejected"),
            ("evt-bad-2", "rejected"),
        ]
        assert {d["delivery_id"] for d in listed.json()["data"]} == {
            "evt-bad-1",
            "evt-bad-2",
        }

    def test_a_rejected_delivery_shows_its_body_and_can_be_processed_again(
        self, client, store, forms_secret
    ):
        body = as_bytes({"first_name": "No Contact"})
        post_forms(client, forms_secret, body, "no-contact")
        [delivery] = settled(store, 1)

        shown = client.get(f"/api/webhooks/deliveries/{delivery.id}")
        again = client.post(f"/api/webhooks/deliveries/{delivery.id}/retry")
        [after] = settled(store, 1)

        assert delivery.status == "rejected"
        assert json.loads(shown.json()["body"]) == {"first_name": "No Contact"}
        assert again.status_code == 202
        # Still without an e-mail or phone, so rejected again, not lost.
        assert (after.status, after.attempts) == ("rejected", 2)
        assert client.get("/api/webhooks/deliveries/999999").status_code == 404

    def test_an_applied_delivery_is_not_processed_again_on_request(
        self, client, store, forms_secret
    ):
        post_forms(client, forms_secret, as_bytes({"email": "a@example.com"}), "a")
        [delivery] = settled(store, 1)

        response = client.post(f"/api/webhooks/deliveries/{delivery.id}/retry")

        assert response.status_code == 409
        assert "applied" in response.json()["detail"]


class TestOrder:
    def test_an_event_older_than_the_newest_applied_is_recorded_not_applied(
        self, client, store, forms_secret
    ):
        an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
        newer = {
            "email": "ola@example.com",
            "company": "Newer Ltd",
            "submitted_at": an_hour_ago.isoformat(),
        }
        older = {
            **newer,
            "company": "Older Ltd",
            "submitted_at": (an_hour_ago - timedelta(hours=1)).isoformat(),
        }

        post_forms(client, forms_secret, as_bytes(newer), "new")
        settled(store, 1)
        post_forms(client, forms_secret, as_bytes(older), "old")
        kept = settled(store, 2)

        assert [row.status for row in kept] == ["applied", "stale"]
        assert kept[1].reasons[0]["reason"] == "older_than_applied"
        [lead] = rows(store, Lead)
        assert lead.company == "Newer Ltd"
        assert kept[1].lead_id == lead.id
        kinds = [row.kind for row in rows(store, TimelineEvent)]
        assert "webhook.out_of_order" in kinds


class TestHubSpot:
    """HubSpot's v3-signed event batches: property changes, privacy deletions."""

    URL_PATH = "/api/webhooks/hubspot"

    @pytest.fixture
    def app_secret(self, monkeypatch) -> str:
        monkeypatch.setenv("ORCH_HUBSPOT_APP_SECRET", "hubspot-app-secret")
        return "hubspot-app-secret"

    @pytest.fixture
    def contact(self, client, store) -> str:
        """A lead the CRM holds as contact 501."""
        lead = client.post("/api/leads", json={"email": "hal@example.com"}).json()
        with store.write("default") as scope:
            scope.session.get(Lead, lead["id"]).crm_id = "501"
        return lead["id"]

    def post(self, client, live_api, secret: str, events: list[dict]):
        body = json.dumps(events).encode()
        stamp = str(int(time.time() * 1000))
        url = live_api.settings.public_base_url.rstrip("/") + self.URL_PATH
        return client.post(
            self.URL_PATH,
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-HubSpot-Request-Timestamp": stamp,
                "X-HubSpot-Signature-v3": sign_hubspot_v3(
                    secret, "POST", url, body, stamp
                ),
            },
        )

    def event(self, event_id: int, kind: str, **given) -> dict:
        return {
            "eventId": event_id,
            "subscriptionId": 7,
            "portalId": 62515,
            "occurredAt": int(time.time() * 1000),
            "subscriptionType": kind,
            "attemptNumber": 0,
            "objectId": 501,
            **given,
        }

    def test_each_event_of_a_batch_is_kept_once_and_applied_to_its_lead(
        self, client, store, live_api, app_secret, contact
    ):
        events = [
            self.event(
                1,
                "contact.propertyChange",
                propertyName="lifecyclestage",
                propertyValue="customer",
            ),
            self.event(
                2, "contact.propertyChange", propertyName="firstname", propertyValue="H"
            ),
            self.event(
                3,
                "contact.propertyChange",
                objectId=999,
                propertyName="lifecyclestage",
                propertyValue="lead",
            ),  # fmt: skip
        ]

        first = self.post(client, live_api, app_secret, events)
        kept = settled(store, 3)
        # HubSpot's retry of an event counts its attempts; the event is the same.
        retried = self.post(
            client, live_api, app_secret, [{**events[0], "attemptNumber": 1}]
        )
        # HubSpot does not promise unique event ids: another event may reuse one.
        reused = self.post(
            client, live_api, app_secret, [{**events[1], "propertyValue": "Hal"}]
        )

        assert first.status_code == 200 and first.json()["new"] == 3
        assert retried.json()["duplicates"] == 1
        assert reused.json()["new"] == 1
        assert [(row.delivery_id.split(":")[0], row.status) for row in kept[:3]] == [
            ("1", "applied"),
            ("2", "ignored"),
            ("3", "ignored"),
        ]
        assert kept[1].reasons[0]["reason"] == "property_not_followed"
        assert kept[2].reasons[0]["reason"] == "contact_not_known"
        state = rows(store, Lead, Lead.id == contact)[0].crm_state
        assert (state["lifecycle_stage"], state["converted"]) == ("customer", True)
        [change] = rows(
            store, TimelineEvent, TimelineEvent.kind == "crm.status_changed"
        )
        assert change.source == "webhook:hubspot"

    def test_a_privacy_deletion_erases_the_person(
        self, client, store, live_api, app_secret, contact
    ):
        message_id = f"<{contact}@example.org>"
        with store.write("default") as scope:
            scope.add(
                SequenceStep(lead_id=contact, sequence="welcome_sequence", step=1,
                             step_key="welcome_1", status="sent", due_at=utcnow(),
                             message_id=message_id)
            )  # fmt: skip
        outbox = FileOutbox(live_api.settings.email_outbox_dir)
        written = EmailMessage()
        written["Message-ID"] = message_id
        written.set_content("Welcome")
        outbox.send(written)

        response = self.post(
            client, live_api, app_secret, [self.event(9, "contact.privacyDeletion")]
        )
        [delivery] = settled(store, 1)

        assert response.status_code == 200
        assert (delivery.status, delivery.lead_id) == ("applied", None)
        assert rows(store, Lead, Lead.id == contact) == []
        assert rows(store, TimelineEvent, TimelineEvent.lead_id == contact) == []
        [record] = rows(store, AuditEvent, AuditEvent.action == "lead.erased")
        assert (record.actor, record.target_id) == ("system", contact)
        assert record.detail["delivery_id"] == delivery.delivery_id
        assert not outbox.delivered(message_id), "the file backend's copy"

    def test_a_created_contact_without_a_hubspot_account_is_ignored_with_why(
        self, client, store, live_api, app_secret
    ):
        self.post(
            client,
            live_api,
            app_secret,
            [self.event(4, "contact.creation", objectId=777)],
        )
        [delivery] = settled(store, 1)

        assert delivery.status == "ignored"
        assert delivery.reasons[0]["reason"] == "no_hubspot_account"

    def test_a_wrong_app_secret_is_401(self, client, store, live_api, app_secret):
        response = self.post(client, live_api, "other", [self.event(5, "x")])

        assert response.status_code == 401
        assert count(store, WebhookDelivery) == 0
