"""The lead endpoints, exercised over real HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from leads.store import Store
from leads.store.tables import Lead, OutboxItem, TimelineEvent

CASES = Path(__file__).parents[1] / "cases"

ADA = {
    "email": "Ada@Example.com",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "phone": "(415) 555-0100",
    "utm_campaign": "spring",
}


def count(store: Store, model: type) -> int:
    with store.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(model)).scalar_one()


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["title"] and body["detail"] and body["type"]
    return body


class TestCreate:
    def test_new_lead_is_201_with_location_and_normalised_fields(self, client):
        response = client.post("/api/leads", json=ADA)

        assert response.status_code == 201
        lead = response.json()
        assert response.headers["location"] == f"/api/leads/{lead['id']}"
        assert lead["outcome"] == "created"
        assert lead["email"] == "ada@example.com"
        assert lead["email_display"] == "Ada@Example.com"
        assert lead["phone"] == "+14155550100"
        assert lead["custom"] == {"utm_campaign": "spring"}
        assert lead["status"] == "new"
        assert lead["source"] == "api"
        assert lead["created_at"].endswith("Z") or "+00:00" in lead["created_at"]

    def test_writes_lead_timeline_event_and_outbox_rows_together(self, client, store):
        lead = client.post("/api/leads", json=ADA).json()

        timeline = client.get(f"/api/leads/{lead['id']}/timeline").json()["data"]
        assert [event["kind"] for event in timeline] == ["lead.created"]
        assert timeline[0]["source"] == "api"
        with store.read("default") as scope:
            rows = scope.session.scalars(
                scope.select(OutboxItem).where(OutboxItem.lead_id == lead["id"])
            )
            topics = sorted(row.topic for row in rows)
        assert topics == ["crm_sync", "sequence_enrolment"]

    def test_same_email_again_updates_the_first_lead(self, client, store):
        first = client.post("/api/leads", json=ADA).json()

        response = client.post(
            "/api/leads",
            json={"email": " ada@EXAMPLE.com ", "company": "Engines", "last_name": ""},
        )

        assert response.status_code == 200
        assert "location" not in response.headers
        second = response.json()
        assert second["outcome"] == "updated"
        assert second["id"] == first["id"]
        assert second["company"] == "Engines"
        assert second["last_name"] == "Lovelace", "a blank must never erase"
        assert second["custom"] == {"utm_campaign": "spring"}
        assert count(store, Lead) == 1
        kinds = [
            e["kind"]
            for e in client.get(f"/api/leads/{first['id']}/timeline").json()["data"]
        ]
        assert kinds == ["lead.created", "lead.updated"]
        assert count(store, OutboxItem) == 2, "one crm_sync row per lead, requeued"

    def test_phone_only_lead_is_kept_with_missing_email_warning(self, client, store):
        response = client.post("/api/leads", json={"phone": "+44 20 7946 0958"})

        assert response.status_code == 201
        lead = response.json()
        assert lead["phone"] == "+442079460958"
        assert lead["warnings"] == ["missing_email"]
        with store.read("default") as scope:
            topics = [
                row.topic for row in scope.session.scalars(scope.select(OutboxItem))
            ]
        assert topics == ["crm_sync"], "no e-mail, so no sequence enrolment"

    def test_invalid_phone_beside_a_valid_email_is_kept_raw_with_warning(self, client):
        lead = client.post(
            "/api/leads", json={"email": "p@example.com", "phone": "12"}
        ).json()

        assert lead["phone"] is None
        assert lead["phone_raw"] == "12"
        assert lead["warnings"] == ["invalid_phone"]

    @pytest.mark.parametrize("number", [5, 4.5])
    def test_an_address_sent_as_a_number_is_refused_saying_so(self, client, number):
        response = client.post("/api/leads", json={"email": number})

        [error] = assert_problem(response, 422)["errors"]
        assert (error["field"], error["reason"]) == ("email", "invalid_email")
        assert f"not the number {number}" in error["message"]

    def test_a_phone_alone_that_a_spreadsheet_mangled_is_refused_as_such(
        self, client, store
    ):
        response = client.post(
            "/api/leads", json={"phone": "4.15555E+09", "first_name": "Excel"}
        )

        body = assert_problem(response, 422)
        reasons = {e["field"]: e["reason"] for e in body["errors"]}
        assert reasons == {
            "email": "missing_contact",
            "phone": "phone_mangled_by_spreadsheet",
        }
        assert count(store, Lead) == 0

    def test_every_bad_field_is_named_and_nothing_is_written(self, client, store):
        response = client.post(
            "/api/leads",
            json={
                "email": "not-an-address",
                "status": "hot",
                "first_name": 5 * "x" * 60,
            },
        )

        body = assert_problem(response, 422)
        reasons = {(e["field"], e["reason"]) for e in body["errors"]}
        assert reasons == {
            ("email", "invalid_email"),
            ("status", "invalid_choice"),
            ("first_name", "too_long"),
        }
        assert all(e["message"] for e in body["errors"])
        assert count(store, Lead) == count(store, TimelineEvent) == 0
        assert count(store, OutboxItem) == 0

    def test_a_lead_without_email_or_phone_is_refused(self, client, store):
        body = assert_problem(
            client.post("/api/leads", json={"first_name": "Nobody"}), 422
        )

        assert {e["field"] for e in body["errors"]} == {"email", "phone"}
        assert {e["reason"] for e in body["errors"]} == {"missing_contact"}
        assert count(store, Lead) == 0

    def test_a_body_that_is_not_json_is_422(self, client):
        response = client.post(
            "/api/leads",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )

        body = assert_problem(response, 422)
        assert body["errors"][0]["field"] == "body"
        assert body["errors"][0]["reason"] == "invalid_json"
        assert body["errors"][0]["message"] == (
            "the body is not JSON: Expecting property name enclosed in double "
            "quotes: line 1 column 2 (char 1)"
        )

    def test_a_body_that_is_not_json_is_refused_naming_its_line_and_column(
        self, client
    ):
        broken = b'{\n  "email": "ada@example.com",\n  "phone": \n}'

        answers = [
            client.request(
                method,
                path,
                content=broken,
                headers={"content-type": "application/json"},
            )
            for method, path in [("POST", "/api/leads"), ("PATCH", "/api/leads/x")]
        ]

        for response in answers:
            [error] = assert_problem(response, 422)["errors"]
            assert error == {
                "field": "body",
                "reason": "invalid_json",
                "message": "the body is not JSON: Expecting value: line 4 column 1 "
                "(char 44)",
            }

    def test_a_body_not_sent_as_json_is_415_saying_what_to_send(self, client):
        for path, method in [
            ("/api/leads", "POST"),
            ("/api/leads/batch", "POST"),
            ("/api/leads/x", "PATCH"),
        ]:
            response = client.request(
                method,
                path,
                content=b'{"email": "form@example.com"}',
                headers={"content-type": "application/x-www-form-urlencoded"},
            )

            body = assert_problem(response, 415)
            assert body["type"] == "urn:orchestrator:problem:unsupported-media-type"
            assert "Content-Type: application/json" in body["detail"]

    def test_captured_at_is_answered_in_utc_as_it_is_read_back(self, client):
        lead = client.post(
            "/api/leads", json={**ADA, "captured_at": "2024-05-01T10:00:00+02:00"}
        ).json()

        fetched = client.get(f"/api/leads/{lead['id']}").json()
        assert lead["captured_at"] == fetched["captured_at"]
        assert fetched["captured_at"].startswith("2024-05-01T08:00:00")

    def test_a_json_list_is_not_a_lead(self, client):
        body = assert_problem(client.post("/api/leads", json=[ADA]), 422)

        assert body["errors"][0] == {
            "field": "body",
            "reason": "not_an_object",
            "message": body["errors"][0]["message"],
        }

    def test_read_only_fields_sent_by_a_caller_are_ignored(self, client):
        lead = client.post(
            "/api/leads",
            json={
                **ADA,
                "id": "mine",
                "score": 99,
                "created_at": "2000-01-01T00:00:00Z",
            },
        ).json()

        assert lead["id"] != "mine"
        # Scored by the rules in config/, never taken from the caller.
        assert lead["score"] != 99 and lead["score_reasons"] is not None
        assert "score" not in lead["custom"] and "id" not in lead["custom"]

    def test_captured_at_needs_a_zone(self, client):
        body = assert_problem(
            client.post("/api/leads", json={**ADA, "captured_at": "2026-01-01T10:00"}),
            422,
        )

        assert body["errors"][0]["field"] == "captured_at"
        assert body["errors"][0]["reason"] == "timezone_required"


class TestBodyLimits:
    def test_a_declared_oversized_body_is_413(self, client, live_api):
        limit = live_api.settings.max_body_bytes
        payload = json.dumps({**ADA, "notes": "x" * limit}).encode()

        response = client.post(
            "/api/leads",
            content=payload,
            headers={"content-type": "application/json"},
        )

        body = assert_problem(response, 413)
        assert f"{limit:,}" in body["detail"]

    def test_a_streamed_oversized_body_is_413(self, client, live_api):
        limit = live_api.settings.max_body_bytes

        def chunks():
            for _ in range(limit // 1024 + 2):
                yield b" " * 1024

        response = client.post(
            "/api/leads",
            content=chunks(),
            headers={"content-type": "application/json"},
        )

        assert_problem(response, 413)


class TestBatch:
    def test_each_item_stands_alone_and_results_keep_input_order(self, client, store):
        items = [
            {"email": "one@example.com"},
            {"email": "broken"},
            "not an object",
            {"email": "ONE@example.com", "company": "Acme"},
            {"phone": "+1 415 555 0199"},
        ]

        response = client.post("/api/leads/batch", json=items)

        assert response.status_code == 200
        results = response.json()["results"]
        assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
        assert [r["outcome"] for r in results] == [
            "created",
            "rejected",
            "rejected",
            "updated",
            "created",
        ]
        assert results[0]["lead_id"] == results[3]["lead_id"]
        assert results[1]["errors"][0]["field"] == "email"
        assert results[1]["lead_id"] is None
        assert results[2]["errors"][0]["reason"] == "not_an_object"
        assert count(store, Lead) == 2

    def test_accepts_an_object_with_a_leads_list(self, client):
        response = client.post(
            "/api/leads/batch", json={"leads": [{"email": "w@example.com"}]}
        )

        assert response.json()["results"][0]["outcome"] == "created"

    def test_a_thousand_leads_are_accepted(self, client, store):
        items = [{"email": f"bulk{i}@example.com"} for i in range(1000)]

        response = client.post("/api/leads/batch", json=items)

        assert response.status_code == 200
        assert {r["outcome"] for r in response.json()["results"]} == {"created"}
        assert count(store, Lead) == 1000

    def test_more_than_the_limit_is_413_and_writes_nothing(self, client, store):
        items = [{"phone": "+14155550100"} for _ in range(1001)]

        body = assert_problem(client.post("/api/leads/batch", json=items), 413)

        assert "1,001" in body["detail"]
        assert count(store, Lead) == 0

    def test_a_body_that_is_not_a_list_is_422(self, client):
        body = assert_problem(client.post("/api/leads/batch", json={"x": 1}), 422)

        assert body["errors"][0]["field"] == "leads"


class TestRead:
    def test_get_returns_the_lead_and_unknown_ids_are_404(self, client):
        created = client.post("/api/leads", json=ADA).json()

        assert client.get(f"/api/leads/{created['id']}").json()["email"] == (
            "ada@example.com"
        )
        body = assert_problem(client.get("/api/leads/no-such-id"), 404)
        assert "no-such-id" in body["detail"]
        assert_problem(client.get(f"/api/leads/{'a' * 300}"), 404)
        assert_problem(client.get("/api/leads/no-such-id/timeline"), 404)

    def test_list_pages_newest_first_with_a_cursor(self, client):
        ids = [
            client.post("/api/leads", json={"email": f"p{i}@example.com"}).json()["id"]
            for i in range(7)
        ]

        seen, cursor = [], None
        for _ in range(10):
            params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
            page = client.get("/api/leads", params=params).json()
            seen += [lead["id"] for lead in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break

        assert seen == list(reversed(ids))

    def test_list_filters_by_email_status_and_creation_time(self, client):
        before = datetime.now(UTC) - timedelta(seconds=1)
        ada = client.post("/api/leads", json=ADA).json()
        other = client.post(
            "/api/leads", json={"email": "q@example.com", "status": "qualified"}
        ).json()

        def ids(**params):
            return [
                lead["id"]
                for lead in client.get("/api/leads", params=params).json()["data"]
            ]

        assert ids(email="  ADA@example.COM") == [ada["id"]]
        assert ids(status="qualified") == [other["id"]]
        assert ids(created_after=before.isoformat()) == [other["id"], ada["id"]]
        assert ids(created_before=before.isoformat()) == []
        naive_future = (datetime.now(UTC) + timedelta(hours=1)).replace(tzinfo=None)
        assert len(ids(created_before=naive_future.isoformat())) == 2

    def test_bad_list_parameters_are_422_naming_the_parameter(self, client):
        for params, field in [
            ({"status": "hot"}, "status"),
            ({"limit": 0}, "limit"),
            ({"created_after": "yesterday"}, "created_after"),
            ({"cursor": "garbage!"}, "cursor"),
            ({"email": "nope"}, "email"),
        ]:
            body = assert_problem(client.get("/api/leads", params=params), 422)
            assert body["errors"][0]["field"] == field, params


class TestEdit:
    def test_put_replaces_every_editable_field(self, client):
        lead = client.post("/api/leads", json={**ADA, "company": "Engines"}).json()

        response = client.put(
            f"/api/leads/{lead['id']}",
            json={"email": "ada@example.com", "first_name": "Augusta", "tier": "gold"},
        )

        assert response.status_code == 200
        replaced = response.json()
        assert replaced["first_name"] == "Augusta"
        assert replaced["company"] is None
        assert replaced["phone"] is None
        assert replaced["custom"] == {"tier": "gold"}

    def test_put_keeps_the_source_unless_one_is_sent(self, client):
        lead = client.post("/api/leads", json={**ADA, "source": "webinar"}).json()

        kept = client.put(f"/api/leads/{lead['id']}", json={"email": ADA["email"]})
        changed = client.put(
            f"/api/leads/{lead['id']}", json={"email": ADA["email"], "source": "fair"}
        )

        assert kept.json()["source"] == "webinar"
        assert changed.json()["source"] == "fair"

    def test_put_of_a_fetched_lead_round_trips(self, client):
        lead = client.post("/api/leads", json=ADA).json()
        fetched = client.get(f"/api/leads/{lead['id']}").json()

        response = client.put(f"/api/leads/{lead['id']}", json=fetched)

        assert response.status_code == 200, response.text
        assert response.json()["custom"] == {"utm_campaign": "spring"}
        kinds = [
            e["kind"]
            for e in client.get(f"/api/leads/{lead['id']}/timeline").json()["data"]
        ]
        assert kinds == ["lead.created"], "no change, no event"

    def test_patch_changes_only_what_is_sent_and_null_clears(self, client, store):
        lead = client.post("/api/leads", json={**ADA, "company": "Engines"}).json()

        response = client.patch(
            f"/api/leads/{lead['id']}",
            content=json.dumps(
                {
                    "company": None,
                    "status": "working",
                    "custom": {"utm_campaign": None, "k": 1},
                }
            ),
            headers={"content-type": "application/merge-patch+json"},
        )

        assert response.status_code == 200, response.text
        patched = response.json()
        assert patched["company"] is None
        assert patched["status"] == "working"
        assert patched["first_name"] == "Ada"
        assert patched["custom"] == {"k": 1}
        events = client.get(f"/api/leads/{lead['id']}/timeline").json()["data"]
        assert events[-1]["kind"] == "lead.edited"
        assert set(events[-1]["detail"]["changes"]) == {"company", "status", "custom"}
        with store.read("default") as scope:
            sync = scope.session.scalars(
                scope.select(OutboxItem).where(OutboxItem.topic == "crm_sync")
            ).one()
        assert sync.generation == 2, "an edit owes the lead another CRM sync"

    def test_patch_that_leaves_no_contact_is_422_and_changes_nothing(self, client):
        lead = client.post("/api/leads", json={"email": "only@example.com"}).json()

        assert_problem(
            client.patch(f"/api/leads/{lead['id']}", json={"email": None}), 422
        )

        assert (
            client.get(f"/api/leads/{lead['id']}").json()["email"] == "only@example.com"
        )

    def test_taking_another_leads_email_is_409(self, client):
        client.post("/api/leads", json={"email": "taken@example.com"})
        lead = client.post("/api/leads", json={"email": "free@example.com"}).json()

        body = assert_problem(
            client.patch(
                f"/api/leads/{lead['id']}", json={"email": "TAKEN@example.com"}
            ),
            409,
        )

        assert body["errors"][0]["field"] == "email"
        assert body["errors"][0]["reason"] == "duplicate_email"

    def test_editing_an_unknown_lead_is_404(self, client):
        assert_problem(client.patch("/api/leads/nope", json={"company": "x"}), 404)
        assert_problem(client.put("/api/leads/nope", json={"email": "a@b.co"}), 404)


class TestValidationCase:
    """VAL-01: surrounding white space is never part of an address."""

    def test_val_01_invisible_surroundings_dedupe_to_one_lead(self, client, store):
        case = json.loads((CASES / "VAL-01.json").read_text())

        answers = [
            client.post("/api/leads", json=sub) for sub in case["input"]["submissions"]
        ]

        for answer, expected in zip(answers, case["expected"]["results"], strict=True):
            if expected["valid"]:
                assert answer.status_code in (200, 201)
                assert answer.json()["email"] == expected["email"]
                assert answer.json()["first_name"] == expected["first_name"]
            else:
                assert answer.status_code == 422
                assert answer.json()["errors"][0]["reason"] == expected["error"]
        assert count(store, Lead) == case["expected"]["leads_after_dedupe"]
