"""HubSpot webhook events on the sandbox: a contact created there becomes a lead."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from connectors.crm.hubspot.webhooks import hubspot_handler
from leads.store import webhooks as deliveries
from leads.store.tables import Lead, WebhookDelivery
from leads.webhooks.processing import process
from leads.webhooks.sources import Payload, WebhookSource

SOURCE = WebhookSource(
    name="hubspot", payload="hubspot", signature="hubspot_v3", secret_env="X"
)


def keep_creation(store, contact_id: str, event_id: str = "1") -> int:
    event = {
        "eventId": event_id,
        "objectId": int(contact_id),
        "subscriptionType": "contact.creation",
    }
    with store.write("default") as scope:
        return deliveries.keep(
            scope,
            "hubspot",
            event_id,
            body=json.dumps(event).encode(),
            occurred_at=datetime.now(UTC),
            event_type="contact.creation",
        ).id


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
