"""Processing kept deliveries: mapped into leads, applied once, kept when it fails."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

from sqlalchemy import select

from leads.store import webhooks as deliveries
from leads.store.tables import Lead, TimelineEvent, WebhookDelivery
from leads.webhooks.events import parse_time, split
from leads.webhooks.processing import lead_handler, mapped, process
from leads.webhooks.sources import Payload, WebhookSource

AT = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
SOURCE = WebhookSource(
    name="partner",
    secret_env="X",
    lead="data.contact",
    fields={"email": "Email Address", "company": "org.name"},
    lead_source="partner",
)
HANDLERS = {Payload.LEAD: lead_handler("US")}


def keep(store, body: dict, delivery_id: str = "d-1") -> int:
    with store.write("default") as scope:
        return deliveries.keep(
            scope,
            "partner",
            delivery_id,
            body=json.dumps(body).encode(),
            occurred_at=AT,
        ).id


def all_rows(store, model):
    with store.engine.connect() as connection:
        return list(connection.execute(select(model.__table__)))


class TestMapping:
    def test_renamed_and_nested_fields_become_ours_and_the_rest_is_kept(self):
        lead = {"Email Address": "a@example.com", "org": {"name": "Acme"}, "x": 1}

        values = mapped(lead, SOURCE)

        assert values == {
            "email": "a@example.com",
            "company": "Acme",
            "org": {"name": "Acme"},
            "x": 1,
            "source": "partner",
        }

    def test_a_delivery_is_taken_in_from_where_the_source_says_the_lead_is(self, store):
        pk = keep(
            store,
            {
                "data": {
                    "contact": {"Email Address": "B@Example.com", "org": {"name": "B"}}
                }
            },
        )

        verdict = process(store, "default", pk, {"partner": SOURCE}, HANDLERS)

        assert verdict.status == "applied"
        [lead] = all_rows(store, Lead)
        assert (lead.email, lead.company, lead.source) == (
            "b@example.com",
            "B",
            "partner",
        )

    def test_a_body_without_the_lead_object_is_rejected_naming_the_path(self, store):
        pk = keep(store, {"data": {"contact": "not an object"}})

        verdict = process(store, "default", pk, {"partner": SOURCE}, HANDLERS)

        assert verdict.status == "rejected"
        assert verdict.reasons[0].field == "data.contact"


class TestOnce:
    def test_two_processors_racing_apply_a_delivery_once(self, store):
        pk = keep(store, {"data": {"contact": {"Email Address": "c@example.com"}}})
        verdicts = []
        barrier = threading.Barrier(2)

        def run() -> None:
            barrier.wait()
            verdicts.append(
                process(store, "default", pk, {"partner": SOURCE}, HANDLERS)
            )

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert sorted(v.status if v else "none" for v in verdicts) == [
            "applied",
            "none",
        ]
        created = [
            e for e in all_rows(store, TimelineEvent) if e.kind == "lead.created"
        ]
        assert len(created) == 1

    def test_a_source_gone_from_the_config_leaves_its_delivery_pending(self, store):
        pk = keep(store, {"data": {"contact": {"Email Address": "d@example.com"}}})

        verdict = process(store, "default", pk, {}, HANDLERS)

        assert verdict is None
        [row] = all_rows(store, WebhookDelivery)
        assert row.status == "pending"
        assert "not in webhooks.yaml" in row.last_error


class TestEvents:
    def test_times_are_read_as_iso_seconds_or_milliseconds(self):
        assert parse_time("2026-12-05T09:00:00Z") == AT
        assert parse_time(int(AT.timestamp())) == AT
        assert parse_time(str(int(AT.timestamp() * 1000))) == AT
        assert parse_time("2026-12-05T09:00:00") is None  # no zone: not guessed
        assert parse_time("soon") is None

    def test_a_delivery_id_from_a_field_or_else_a_hash_of_the_bytes(self):
        by_field = WebhookSource.model_validate(
            {**SOURCE.model_dump(), "delivery_id": {"field": "id"}}
        )

        [named] = split(by_field, b'{"id": 42}', {}, AT)
        [hashed] = split(SOURCE, b'{"id": 42}', {}, AT)
        [not_json] = split(SOURCE, b"\xff", {}, AT)

        assert named.delivery_id == "42"
        assert hashed.delivery_id.startswith("sha256:")
        assert not_json.delivery_id.startswith("sha256:")
