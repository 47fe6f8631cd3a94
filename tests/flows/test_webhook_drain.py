"""The webhook drain flow: deliveries the API left pending, processed in a real run."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from flows.webhook_drain import drain_webhooks
from leads.store import webhooks as deliveries
from leads.store.tables import Lead, TimelineEvent, WebhookDelivery

pytestmark = pytest.mark.slow


@pytest.fixture
def store(flow_store):
    return flow_store(ORCH_CRM="none")


def keep(store, delivery_id: str, body: dict) -> int:
    with store.write("default") as scope:
        return deliveries.keep(
            scope,
            "forms",
            delivery_id,
            body=json.dumps(body).encode(),
            occurred_at=datetime.now(UTC),
        ).id


def test_pending_deliveries_are_applied_once_in_the_run_and_name_it(
    store, run_artifact
):
    keep(store, "evt-1", {"email": "ada@example.com", "first_name": "Ada"})
    keep(store, "evt-2", {"first_name": "No Contact"})

    state = drain_webhooks(return_state=True)
    totals = state.result()
    again = drain_webhooks()

    run_id = str(state.state_details.flow_run_id)
    assert totals == {"applied": 1, "rejected": 1}
    assert again == {}
    with store.read("default") as scope:
        kept = scope.session.scalars(
            scope.select(WebhookDelivery).order_by(WebhookDelivery.id)
        ).all()
        [lead] = scope.session.scalars(scope.select(Lead)).all()
        [created] = scope.session.scalars(
            scope.select(TimelineEvent).where(TimelineEvent.kind == "lead.created")
        ).all()
    assert [(d.status, d.flow_run_id) for d in kept] == [
        ("applied", run_id),
        ("rejected", run_id),
    ]
    assert kept[0].lead_id == lead.id
    assert created.flow_run_id == run_id
    artifact, table = run_artifact(
        "webhook-drain-summary", state.state_details.flow_run_id
    )
    assert {row["outcome"]: row["count"] for row in table} == totals
    assert "example.com" not in json.dumps(table) + (artifact.description or "")
