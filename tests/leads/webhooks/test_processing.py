"""Processing kept deliveries: mapped into leads, applied once, kept when it fails."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from leads.clock import ManualClock, use_clock
from leads.store import webhooks as deliveries
from leads.store.tables import Lead, TimelineEvent, WebhookDelivery
from leads.webhooks.events import parse_time, split
from leads.webhooks.processing import Handler, Verdict, lead_handler, mapped, process
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
        assert parse_time("2026-12-05T09:00:00") == AT  # no zone: UTC
        assert parse_time("\u00b2") is None
        assert parse_time("9" * 400) is None
        assert parse_time("soon") is None

    def test_an_event_dated_after_it_arrived_counts_as_arriving_then(self):
        source = WebhookSource.model_validate(
            {**SOURCE.model_dump(), "occurred_at": {"field": "at"}}
        )

        [future] = split(source, b'{"at": "2099-01-01T00:00:00Z"}', {}, AT)
        [past] = split(source, b'{"at": "2026-12-05T08:00:00Z"}', {}, AT)

        assert future.occurred_at == AT
        assert past.occurred_at == AT - timedelta(hours=1)

    def test_a_body_nested_too_deep_is_kept_by_the_hash_of_its_bytes(self):
        [deep] = split(SOURCE, b"[" * 100_000 + b"]" * 100_000, {}, AT)

        assert deep.delivery_id.startswith("sha256:")

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

    def test_a_body_that_is_not_json_keeps_the_id_and_time_its_headers_give(self):
        by_header = WebhookSource.model_validate(
            {
                **SOURCE.model_dump(),
                "delivery_id": {"header": "X-Event-Id"},
                "occurred_at": {"header": "X-Sent-At"},
            }
        )
        headers = {"X-Event-Id": "evt-bad-2", "X-Sent-At": "2026-12-05T08:00:00Z"}

        [broken] = split(by_header, b"{not json", headers, AT)
        [undecodable] = split(by_header, b"\xff", {"X-Event-Id": "evt-bad-3"}, AT)

        assert broken.delivery_id == "evt-bad-2"
        assert broken.occurred_at == AT - timedelta(hours=1)
        assert broken.body == b"{not json"
        assert undecodable.delivery_id == "evt-bad-3"

    def test_a_body_that_is_not_json_has_no_field_to_take_an_id_from(self):
        by_field = WebhookSource.model_validate(
            {**SOURCE.model_dump(), "delivery_id": {"field": "id"}}
        )
        hubspot = WebhookSource(name="hubspot", secret_env="X", payload=Payload.HUBSPOT)

        [from_field] = split(by_field, b'{"id": 42', {"X-Event-Id": "e"}, AT)
        [from_hubspot] = split(hubspot, b"[{", {}, AT)

        assert from_field.delivery_id.startswith("sha256:")
        assert from_hubspot.delivery_id.startswith("sha256:")


class TestLeases:
    def test_a_processor_that_outlived_its_lease_writes_nothing(self, store):
        pk = keep(store, {"data": {"contact": {"Email Address": "e@example.com"}}})
        clock = ManualClock(AT)
        taken_over: list[Verdict | None] = []

        def slow_fetch(store_, source, delivery):
            # While this processor waits on something, its lease runs out and
            # another processor (the drain) takes the delivery and applies it.
            clock.advance(deliveries.LEASE + timedelta(seconds=1))
            taken_over.append(
                process(store, "default", pk, {"partner": SOURCE}, HANDLERS)
            )

        slow = {Payload.LEAD: Handler(HANDLERS[Payload.LEAD].apply, fetch=slow_fetch)}
        with use_clock(clock):
            verdict = process(store, "default", pk, {"partner": SOURCE}, slow)

        assert verdict is None
        assert [v.status for v in taken_over] == ["applied"]
        [row] = all_rows(store, WebhookDelivery)
        assert (row.status, row.attempts) == ("applied", 2)
        kinds = [e.kind for e in all_rows(store, TimelineEvent)]
        assert kinds == ["lead.created"]

    def test_an_unexpected_error_is_retried_then_parked_as_failed(self, store):
        pk = keep(store, {"data": {"contact": {"Email Address": "f@example.com"}}})

        def broken(scope, source, delivery, fetched):
            raise KeyError("a bug")

        handlers = {Payload.LEAD: Handler(broken)}
        clock = ManualClock(AT)
        with use_clock(clock):
            for _ in range(deliveries.MAX_UNEXPECTED):
                assert (
                    process(store, "default", pk, {"partner": SOURCE}, handlers) is None
                )
                clock.advance(timedelta(hours=1))

        [row] = all_rows(store, WebhookDelivery)
        assert (row.status, row.attempts) == ("failed", deliveries.MAX_UNEXPECTED)
        assert row.reasons[0]["reason"] == "processing_failed"
        assert "KeyError" in row.reasons[0]["message"]
        assert all_rows(store, Lead) == []
