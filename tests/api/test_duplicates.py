"""Possible duplicates over real HTTP: cases VAL-02 and HS-04, and review items."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import httpx
from sqlalchemy import func, select

from leads.store import Store
from leads.store.tables import DuplicateReview, Lead, OutboxItem, TimelineEvent

CASES = Path(__file__).parents[1] / "cases"


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


def post(client: httpx.Client, lead: dict) -> dict:
    response = client.post("/api/leads", json=lead)
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/api/leads/{response.json()['id']}"
    return response.json()


def open_items(client: httpx.Client) -> list[dict]:
    response = client.get("/api/duplicates", params={"status": "open"})
    assert response.status_code == 200, response.text
    return response.json()["data"]


class TestCaseVal02:
    """VAL-02: plus addresses are stored as typed, two leads, one review item."""

    def test_the_second_spelling_is_flagged_and_one_item_links_the_pair(
        self, client, store
    ):
        val02 = json.loads((CASES / "VAL-02.json").read_text())
        expected = val02["expected"]

        answers = {
            lead["email"]: client.post("/api/leads", json=lead)
            for lead in val02["input"]["leads"]
        }

        for address in expected["valid"]:
            assert answers[address].status_code == 201, answers[address].text
            body = answers[address].json()
            assert (body["email"], body["email_display"]) == (address, address)
        [invalid] = expected["invalid"]
        assert_problem(answers[invalid["email"]], 422)
        assert count(store, Lead) == expected["leads_created"]

        ids = {address: answers[address].json()["id"] for address in expected["valid"]}
        for address, flags in expected["flags"].items():
            [flag] = flags
            earlier = flag.removeprefix("possible_duplicate_of:<id of the ")
            earlier = earlier.removesuffix(" lead>")
            stored = client.get(f"/api/leads/{ids[address]}").json()
            assert f"possible_duplicate_of:{ids[earlier]}" in stored["flags"]
        flagged = [
            address
            for address in expected["valid"]
            if any(
                f.startswith("possible_duplicate_of:")
                for f in answers[address].json()["flags"]
            )
        ]
        assert flagged == list(expected["flags"])
        for address in expected["valid"]:
            outcome = answers[address].json()["outcome"]
            assert outcome == (
                "possible_duplicate" if address in flagged else "created"
            )
            assert answers[address].headers["location"].endswith(ids[address])

        items = open_items(client)
        assert [{item["lead_id"], item["duplicate_of_id"]} for item in items] == [
            {ids[address] for address in pair} for pair in expected["review_items"]
        ]
        assert items[0]["reason"] == "email_plus_tag"


class TestCaseHs04:
    """HS-04: one e-mail twice in a batch becomes one lead, newer values winning."""

    def test_rows_with_one_email_key_become_one_lead_and_one_crm_sync(
        self, client, store
    ):
        with (CASES / "HS-04.csv").open(newline="") as file:
            rows = list(csv.DictReader(file))
        expected = json.loads((CASES / "HS-04.expected.json").read_text())["expected"]
        merged = expected["merged"]

        response = client.post("/api/leads/batch", json=rows)

        assert response.status_code == 200, response.text
        results = response.json()["results"]
        first, *others = (results[row - 1] for row in merged["source_rows"])
        assert first["outcome"] == "created"
        assert [r["outcome"] for r in others] == ["updated"] * len(others)
        assert {r["lead_id"] for r in others} == {first["lead_id"]}
        lead = client.get(f"/api/leads/{first['lead_id']}").json()
        assert lead["email"] == merged["email"]
        assert (lead["first_name"], lead["last_name"], lead["phone"]) == (
            merged["firstname"],
            merged["lastname"],
            merged["phone"],
        )
        with store.read("default") as scope:
            syncs = scope.session.scalars(
                scope.select(OutboxItem).where(OutboxItem.topic == "crm_sync")
            ).all()
        assert len(syncs) == expected["inputs_sent_to_hubspot"] == count(store, Lead)
        assert open_items(client) == []


def make_pair(client: httpx.Client) -> tuple[dict, dict, dict]:
    earlier = post(
        client,
        {"email": "sam@example.com", "first_name": "Sam", "company": "Ortiz Co"},
    )
    later = post(
        client,
        {"email": "sam+webinar@example.com", "first_name": "Samuel", "company": ""},
    )
    [item] = open_items(client)
    return earlier, later, item


class TestReviewEndpoints:
    def test_lists_items_with_both_leads_and_the_reason(self, client):
        earlier, later, item = make_pair(client)

        assert item["lead_id"] == later["id"]
        assert item["duplicate_of_id"] == earlier["id"]
        assert (item["reason"], item["status"]) == ("email_plus_tag", "open")
        assert item["resolved_at"] is None

    def test_pages_follow_the_cursor(self, client):
        for tag in "abcd":
            post(client, {"email": f"ops+{tag}@example.com"})

        first = client.get("/api/duplicates", params={"limit": 2}).json()
        second = client.get(
            "/api/duplicates", params={"limit": 2, "cursor": first["next_cursor"]}
        ).json()

        assert len(first["data"]) == 2
        assert len(second["data"]) == 1 and second["next_cursor"] is None

    def test_a_bad_cursor_or_status_is_422(self, client):
        assert_problem(client.get("/api/duplicates", params={"cursor": "x"}), 422)
        assert_problem(client.get("/api/duplicates", params={"status": "new"}), 422)

    def test_dismiss_keeps_both_leads_and_takes_the_flag_off(self, client):
        earlier, later, item = make_pair(client)

        response = client.post(f"/api/duplicates/{item['id']}/dismiss")

        assert response.status_code == 200, response.text
        assert response.json()["status"] == "dismissed"
        assert client.get(f"/api/leads/{later['id']}").json()["flags"] == []
        for lead in (earlier, later):
            events = client.get(f"/api/leads/{lead['id']}/timeline").json()["data"]
            assert events[-1]["kind"] == "duplicate.dismissed"
        assert open_items(client) == []

    def test_merge_leaves_one_lead_with_the_merged_values(self, client, store):
        earlier, later, item = make_pair(client)

        response = client.post(f"/api/duplicates/{item['id']}/merge")

        assert response.status_code == 200, response.text
        assert response.json()["status"] == "merged"
        assert_problem(client.get(f"/api/leads/{later['id']}"), 404)
        kept = client.get(f"/api/leads/{earlier['id']}").json()
        assert (kept["email"], kept["first_name"], kept["company"]) == (
            "sam@example.com",
            "Samuel",
            "Ortiz Co",
        )
        events = client.get(f"/api/leads/{earlier['id']}/timeline").json()["data"]
        assert events[-1]["kind"] == "lead.merged"
        assert events[-1]["detail"]["merged_lead_id"] == later["id"]
        assert events[-1]["detail"]["fields"] == ["first_name"]
        assert count(store, Lead) == 1
        with store.read("default") as scope:
            leftovers = [
                scope.session.scalars(
                    scope.select(model).where(model.lead_id == later["id"])
                ).all()
                for model in (TimelineEvent, OutboxItem)
            ]
        assert leftovers == [[], []]
        assert count(store, DuplicateReview) == 1

    def test_resolving_twice_is_409(self, client):
        item = make_pair(client)[2]
        client.post(f"/api/duplicates/{item['id']}/merge")

        for action in ("merge", "dismiss"):
            body = assert_problem(
                client.post(f"/api/duplicates/{item['id']}/{action}"), 409
            )
            assert "already merged" in body["detail"]

    def test_an_unknown_item_is_404(self, client):
        for review_id in ("999999", "abc"):
            for action in ("merge", "dismiss"):
                assert_problem(
                    client.post(f"/api/duplicates/{review_id}/{action}"), 404
                )
