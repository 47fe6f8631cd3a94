"""HubSpot webhook events on the sandbox: a contact created there becomes a lead."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

from connectors.crm.hubspot.webhooks import handlers_for, hubspot_handler
from leads.settings import Settings
from leads.store import webhooks as deliveries
from leads.store.tables import Lead, WebhookDelivery
from leads.webhooks.processing import Handler, process
from leads.webhooks.sources import Payload, WebhookSource

SOURCE = WebhookSource(
    name="hubspot", payload="hubspot", signature="hubspot_v3", secret_env="X"
)


def keep_event(store, event_id: str, kind: str, **fields) -> int:
    """A HubSpot event kept as the API keeps it; its row id."""
    event = {"eventId": event_id, "subscriptionType": kind, **fields}
    with store.write("default") as scope:
        return deliveries.keep(
            scope,
            "hubspot",
            event_id,
            body=json.dumps(event).encode(),
            occurred_at=datetime.now(UTC),
            event_type=kind,
            subject=fields.get("propertyName"),
        ).id


def keep_creation(store, contact_id: str, event_id: str = "1") -> int:
    return keep_event(store, event_id, "contact.creation", objectId=int(contact_id))


def run(store, sandbox, delivery_id: int):
    connector = sandbox.connector()
    try:
        handler = hubspot_handler(connector.read_by_id, region="US")
        return process(
            store,
            "default",
            delivery_id,
            {"hubspot": SOURCE},
            {Payload.HUBSPOT: handler},
        )
    finally:
        connector.close()


class TestContactCreated:
    def test_the_contact_is_read_by_id_and_taken_in_as_a_lead(self, store, sandbox):
        [contact_id] = sandbox.seed(
            contacts=[
                {
                    "properties": {
                        "email": "Mia@Example.com",
                        "firstname": "Mia",
                        "company": "Norse Ltd",
                        "zip": "02134",
                    }
                }
            ]
        )["ids"]

        verdict = run(store, sandbox, keep_creation(store, str(contact_id)))

        assert verdict.status == "applied" and verdict.outcome == "created"
        with store.read("default") as scope:
            lead = scope.session.get(Lead, verdict.lead_id)
            delivery = scope.session.scalars(scope.select(WebhookDelivery)).one()
        assert (lead.email, lead.first_name, lead.company, lead.postal_code) == (
            "mia@example.com",
            "Mia",
            "Norse Ltd",
            "02134",
        )
        assert lead.source == "hubspot"
        assert (delivery.status, delivery.lead_id) == ("applied", lead.id)

    def test_a_contact_hubspot_no_longer_has_is_ignored_with_why(self, store, sandbox):
        verdict = run(store, sandbox, keep_creation(store, "424242"))

        assert verdict.status == "ignored"
        assert verdict.reasons[0].reason == "contact_gone"

    def test_a_hubspot_outage_leaves_the_delivery_pending_for_later(
        self, store, sandbox
    ):
        delivery_id = keep_creation(store, "1")
        sandbox.arm(
            method="GET", path="/crm/v3/objects/contacts/", status=503, times=10
        )

        verdict = run(store, sandbox, delivery_id)

        assert verdict is None
        with store.read("default") as scope:
            row = scope.session.get(WebhookDelivery, delivery_id)
        assert (row.status, row.attempts) == ("pending", 1)
        assert row.last_error


class TestThroughTheTenantsAccount:
    def test_a_created_contact_is_read_through_the_shared_budget_without_a_lock_wait(
        self, store, sandbox, tmp_path
    ):
        # The real path: the tenant's account (the sandbox as HubSpot) and its
        # rate budget, which writes to the store. A CRM read inside the
        # delivery's write transaction would wait out SQLite's busy timeout.
        settings = Settings(
            data_dir=tmp_path,
            database_url=store.url,
            crm="sandbox",
            sandbox_crm="hubspot",
            sandbox_port=int(sandbox.base_url.rsplit(":", 1)[1]),
        )
        [contact_id] = sandbox.seed(
            contacts=[{"properties": {"email": "ned@example.com"}}]
        )["ids"]
        delivery_id = keep_creation(store, str(contact_id))

        verdict = process(
            store,
            "default",
            delivery_id,
            {"hubspot": SOURCE},
            handlers_for(store, settings, "default"),
        )

        assert (verdict.status, verdict.outcome) == ("applied", "created")


class TestPropertyChanges:
    def test_changes_of_one_contact_applied_at_once_both_survive(self, store):
        with store.write("default") as scope:
            lead = Lead(tenant_id="default", email="pat@example.com", crm_id="501")
            scope.add(lead)
        stage = keep_change(store, "1", "lifecyclestage", "opportunity")
        opt_out = keep_change(store, "2", "hs_email_optout", "true")
        handler = hubspot_handler(None, region="US")
        holding = threading.Event()
        release = threading.Event()

        def apply_slowly(scope, source, delivery, fetched):
            verdict = handler.apply(scope, source, delivery, fetched)
            holding.set()
            release.wait(10)
            return verdict

        slow = {Payload.HUBSPOT: Handler(apply_slowly)}
        first = threading.Thread(
            target=process, args=(store, "default", stage, {"hubspot": SOURCE}, slow)
        )
        first.start()
        holding.wait(10)
        # The second event comes while the first holds its transaction open.
        second = threading.Thread(
            target=process,
            args=(store, "default", opt_out, {"hubspot": SOURCE},
                  {Payload.HUBSPOT: handler}),
        )  # fmt: skip
        second.start()
        time.sleep(0.5)
        release.set()
        first.join(20)
        second.join(20)

        with store.read("default") as scope:
            state = scope.session.get(Lead, lead.id).crm_state
        assert (state["lifecycle_stage"], state["opted_out"]) == ("opportunity", True)


def keep_change(store, event_id: str, name: str, value: str) -> int:
    return keep_event(
        store,
        event_id,
        "contact.propertyChange",
        objectId=501,
        propertyName=name,
        propertyValue=value,
    )
