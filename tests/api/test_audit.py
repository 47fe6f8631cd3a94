"""The audit log over real HTTP: calls and decisions recorded, listed to admins only."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select

from api import audit_log
from leads.settings import Settings
from leads.store import Store
from leads.store.api_keys import key_id_of, revoke_key
from leads.store.schema import upgrade
from leads.store.tables import AuditEvent, Lead
from leads.unsubscribe import unsubscribe_url
from tests.conftest import free_port

# Personal data the tests send; none of it may reach an audit record.
PERSON = {
    "email": "zelda.quorrin@example.com",
    "first_name": "Zelda",
    "last_name": "Quorrin",
    "company": "Vexmoor",
    "phone": "+1 415 555 0134",
}
PERSONAL = ("zelda", "quorrin", "vexmoor", "4155550134", "555 0134")


def key_id(http: httpx.Client) -> str:
    secret = http.headers["authorization"].removeprefix("Bearer ")
    found = key_id_of(secret)
    assert found is not None
    return found


def listed(http: httpx.Client, **params: object) -> list[dict]:
    response = http.get("/api/audit", params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def created(http: httpx.Client, **fields: object) -> dict:
    response = http.post("/api/leads", json=PERSON | fields)
    assert response.status_code == 201, response.text
    return response.json()


def stored_records(store: Store) -> list[AuditEvent]:
    with store.read_across_tenants() as session:
        return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def assert_no_personal_data(store: Store) -> None:
    text = json.dumps(
        [
            [r.actor, r.action, r.target_type, r.target_id, r.detail]
            for r in stored_records(store)
        ]
    ).lower()
    assert text != "[]"
    for piece in PERSONAL:
        assert piece not in text


class TestCalls:
    def test_a_create_is_recorded_with_the_key_the_template_status_and_new_id(
        self, client, store
    ):
        lead = created(client)

        [record] = listed(client, kind="request")
        assert record["actor"] == key_id(client)
        assert record["action"] == "POST /api/leads"
        assert record["status"] == 201
        assert (record["target_type"], record["target_id"]) == ("lead", lead["id"])
        assert datetime.fromisoformat(record["at"]) <= datetime.now(UTC)

    def test_an_edit_is_recorded_by_its_template_with_the_lead_of_its_path(
        self, client, store
    ):
        lead = created(client)

        edited = client.patch(f"/api/leads/{lead['id']}", json={"city": "Oslo"})

        assert edited.status_code == 200, edited.text
        [record, _] = listed(client, kind="request")
        assert record["action"] == "PATCH /api/leads/{lead_id}"
        assert (record["status"], record["target_id"]) == (200, lead["id"])

    def test_a_path_value_that_is_no_id_is_left_out(self, client, store):
        missing = client.patch(f"/api/leads/{PERSON['email']}", json={"city": "Oslo"})

        assert missing.status_code == 404
        [record] = listed(client, kind="request")
        assert record["action"] == "PATCH /api/leads/{lead_id}"
        assert (record["status"], record["target_id"]) == (404, None)
        assert_no_personal_data(store)

    def test_each_recorded_template_is_a_path_of_the_openapi_document(
        self, client, store
    ):
        lead = created(client)
        client.put(f"/api/leads/{lead['id']}", json=PERSON)
        client.post("/api/duplicates/1/dismiss")
        client.post("/api/email/events", json={"events": []})
        client.delete("/api/crm/config")

        paths = client.get("/api/openapi.json").json()["paths"]
        actions = [r["action"] for r in listed(client, kind="request")]
        assert len(actions) == 5
        for action in actions:
            method, template = action.split(" ", 1)
            assert method.lower() in paths[template], action

    def test_reads_are_not_recorded(self, client, store):
        lead = created(client)

        for path in ("/api/leads", f"/api/leads/{lead['id']}", "/api/duplicates"):
            assert client.get(path).status_code == 200

        assert [r["action"] for r in listed(client, kind="request")] == [
            "POST /api/leads"
        ]

    def test_a_call_refused_for_too_small_a_scope_names_the_key(self, live_api, store):
        with live_api.client(scope="read") as reader:
            refused = reader.post("/api/leads", json=PERSON)
            reader_id = key_id(reader)

        assert refused.status_code == 403
        [record] = [r for r in stored_records(store) if r.kind == "request"]
        assert (record.tenant_id, record.actor, record.status) == (
            "default",
            reader_id,
            403,
        )
        assert record.action == "POST /api/leads"
        assert record.detail == {"refused": "insufficient_scope"}

    def test_a_revoked_or_forged_key_is_recorded_by_its_id_and_never_its_secret(
        self, live_api, store
    ):
        revoked = live_api.key(scope="write")
        revoke_key(store, key_id_of(revoked))
        real = live_api.key(scope="write")
        forged = real[:-6] + ("AAAAAA" if not real.endswith("AAAAAA") else "BBBBBB")
        unknown = "orch_000000000000_" + "A" * 43

        with httpx.Client(base_url=live_api.url, timeout=30) as anonymous:
            for secret in (revoked, forged, unknown):
                answer = anonymous.post(
                    "/api/leads",
                    json=PERSON,
                    headers={"Authorization": f"Bearer {secret}"},
                )
                assert answer.status_code == 401
            assert anonymous.post("/api/leads", json=PERSON).status_code == 401

        records = stored_records(store)
        assert [(r.actor, r.status, r.detail) for r in records] == [
            (key_id_of(revoked), 401, {"refused": "revoked_key"}),
            (key_id_of(real), 401, {"refused": "wrong_secret"}),
        ]
        text = json.dumps([[r.actor, r.detail] for r in records])
        for secret in (revoked, forged):
            assert secret.split("_", 2)[2] not in text

    def test_a_call_without_a_key_to_a_route_needing_none_is_not_a_request_record(
        self, client, live_api, store
    ):
        lead = created(client)
        path = urlsplit(
            unsubscribe_url(live_api.settings, "default", lead_id=lead["id"])
        ).path

        with httpx.Client(base_url=live_api.url, timeout=30) as anonymous:
            assert anonymous.post(path).status_code == 200

        assert [r["action"] for r in listed(client, kind="request")] == [
            "POST /api/leads"
        ]


class TestListing:
    @pytest.mark.parametrize("scope", ["read", "write"])
    def test_only_an_admin_key_may_read_the_log(self, live_api, store, scope):
        with live_api.client(scope=scope) as http:
            answer = http.get("/api/audit")

        assert answer.status_code == 403
        assert answer.json()["errors"][0]["reason"] == "insufficient_scope"

    def test_another_tenants_records_are_not_shown(self, client, live_api, store):
        lead = created(client)

        with live_api.client(tenant="acme") as other:
            assert listed(other) == []
            assert listed(other, target_id=lead["id"]) == []
            created(other)
            assert len(listed(other)) == 1

        assert [r["target_id"] for r in listed(client, kind="request")] == [lead["id"]]

    def test_filters_narrow_the_list(self, client, live_api, store):
        first = created(client)
        # The same address again: a merge, and its decision.
        assert client.post("/api/leads", json=PERSON).status_code == 200
        with live_api.client(scope="write") as writer:
            writer.patch(f"/api/leads/{first['id']}", json={"city": "Oslo"})
            writer_id = key_id(writer)
        before = (datetime.now(UTC) - timedelta(minutes=5)).replace(tzinfo=None)
        after = datetime.now(UTC) + timedelta(minutes=5)

        assert [r["action"] for r in listed(client, kind="decision")] == ["lead.merged"]
        assert [r["status"] for r in listed(client, action="POST /api/leads")] == [
            200,
            201,
        ]
        assert [r["action"] for r in listed(client, actor=writer_id)] == [
            "PATCH /api/leads/{lead_id}"
        ]
        # Both posts name the lead, the update (200) as well as the create.
        assert [
            r["action"]
            for r in listed(client, target_type="lead", target_id=first["id"])
        ] == [
            "PATCH /api/leads/{lead_id}",
            "POST /api/leads",
            "lead.merged",
            "POST /api/leads",
        ]
        # Naive times are UTC; aware ones may be in any zone.
        assert len(listed(client, since=before.isoformat())) == 4
        assert listed(client, until=before.isoformat()) == []
        east = after.astimezone(timezone(timedelta(hours=9))).isoformat()
        assert listed(client, since=east) == []
        assert len(listed(client, since=before.isoformat(), until=east)) == 4

    def test_pages_run_newest_first_and_end(self, client, store):
        ids = [created(client, email=f"z{n}@example.com")["id"] for n in range(5)]

        seen, cursor, pages = [], None, 0
        while True:
            params: dict[str, object] = {"kind": "request", "limit": 2}
            if cursor:
                params["cursor"] = cursor
            body = client.get("/api/audit", params=params).json()
            seen += [r["target_id"] for r in body["data"]]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break

        assert seen == list(reversed(ids))
        assert pages == 3

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"kind": "everything"}, "kind"),
            ({"since": "yesterday"}, "since"),
            ({"until": "2026-13-01T00:00:00"}, "until"),
            ({"since": "2026-12-02T00:00:00", "until": "2026-12-01T00:00:00"}, "until"),
            ({"limit": 0}, "limit"),
            ({"limit": 501}, "limit"),
            ({"cursor": "not-a-cursor"}, "cursor"),
            ({"actor": "x" * 65}, "actor"),
            ({"target_id": "x" * 65}, "target_id"),
        ],
    )
    def test_a_bad_filter_is_422_naming_it(self, client, store, params, field):
        answer = client.get("/api/audit", params=params)

        assert answer.status_code == 422, answer.text
        assert [e["field"] for e in answer.json()["errors"]] == [field]


class TestDecisions:
    def test_the_same_address_twice_records_a_merge_by_the_calling_key(
        self, client, store
    ):
        lead = created(client)

        again = client.post("/api/leads", json=PERSON | {"city": "Oslo"})

        assert again.status_code == 200
        [merged] = listed(client, action="lead.merged")
        assert merged["kind"] == "decision"
        assert merged["actor"] == key_id(client)
        assert (merged["target_type"], merged["target_id"]) == ("lead", lead["id"])
        assert merged["detail"] == {
            "match": "email_key",
            "channel": "api",
            "fields": ["city"],
        }
        assert_no_personal_data(store)

    def test_a_possible_duplicate_and_its_review_are_recorded(self, client, store):
        earlier = created(client)
        later = created(client, email="zelda.quorrin+news@example.com")
        dismissed = created(client, email="zelda.quorrin+info@example.com")
        reviews = {
            item["lead_id"]: item["id"]
            for item in client.get("/api/duplicates").json()["data"]
        }

        merge = client.post(f"/api/duplicates/{reviews[later['id']]}/merge")
        dismiss = client.post(f"/api/duplicates/{reviews[dismissed['id']]}/dismiss")

        assert (merge.status_code, dismiss.status_code) == (200, 200)
        flagged = listed(client, action="lead.possible_duplicate")
        assert {r["target_id"] for r in flagged} == {later["id"], dismissed["id"]}
        assert {r["detail"]["duplicate_of_id"] for r in flagged} == {earlier["id"]}
        [merged] = listed(client, action="duplicate.merged")
        assert merged["target_type"] == "review"
        assert merged["target_id"] == str(reviews[later["id"]])
        assert merged["detail"]["kept_lead_id"] == earlier["id"]
        assert merged["detail"]["merged_lead_id"] == later["id"]
        [kept_apart] = listed(client, action="duplicate.dismissed")
        assert kept_apart["detail"] == {
            "lead_id": dismissed["id"],
            "duplicate_of_id": earlier["id"],
        }
        # And the calls that decided, by their templates.
        actions = {r["action"] for r in listed(client, kind="request")}
        assert "POST /api/duplicates/{review_id}/merge" in actions
        assert "POST /api/duplicates/{review_id}/dismiss" in actions
        assert_no_personal_data(store)

    def test_an_unsubscribe_click_is_the_systems_decision(
        self, client, live_api, store
    ):
        lead = created(client)
        path = urlsplit(
            unsubscribe_url(live_api.settings, "default", lead_id=lead["id"])
        ).path

        with httpx.Client(base_url=live_api.url, timeout=30) as person:
            clicked = person.post(path, data={"List-Unsubscribe": "One-Click"})

        assert clicked.status_code == 200
        [unsubscribed] = listed(client, action="lead.unsubscribed")
        assert unsubscribed["actor"] == "system"
        assert unsubscribed["target_id"] == lead["id"]
        assert unsubscribed["detail"] == {"source": "one_click"}
        [suppressed] = listed(client, action="email.suppressed")
        assert (suppressed["target_type"], suppressed["target_id"]) == (
            "lead",
            lead["id"],
        )
        assert suppressed["detail"]["reason"] == "unsubscribed"
        assert isinstance(suppressed["detail"]["suppression_id"], int)
        assert_no_personal_data(store)

    def test_a_hard_bounce_reported_by_a_key_suppresses_the_address(
        self, client, store
    ):
        lead = created(client)
        bounce = {
            "id": "evt-1",
            "type": "bounced",
            "bounce_type": "hard",
            "occurred_at": "2026-12-08T10:00:00+00:00",
            "lead_id": lead["id"],
        }

        answer = client.post("/api/email/events", json={"events": [bounce]})

        assert answer.status_code == 200, answer.text
        [suppressed] = listed(client, action="email.suppressed")
        assert suppressed["actor"] == key_id(client)
        assert suppressed["target_id"] == lead["id"]
        assert suppressed["detail"]["reason"] == "bounced"
        assert_no_personal_data(store)


@pytest.fixture
def own_store(new_store_url) -> Store:
    """A migrated SQLite store of this test's own, for a server of its own."""
    url = new_store_url("sqlite")
    store = Store(url)
    upgrade(store.engine)
    yield store
    store.dispose()


def settings_for(store: Store, data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=store.url,
        crm="none",
        # A closed port: nothing here may reach a Prefect server.
        prefect_api_url=f"http://127.0.0.1:{free_port()}/api",
    )


class TestWhenTheStoreFails:
    @staticmethod
    def refuse_call_records(store: Store) -> None:
        with store.engine.begin() as connection:
            connection.exec_driver_sql(
                "CREATE TRIGGER audit_refuses_calls BEFORE INSERT ON audit_events "
                "WHEN NEW.kind = 'request' BEGIN SELECT RAISE(ABORT, 'no'); END"
            )

    def test_a_refused_audit_write_is_spooled_and_follows_once_the_store_takes_it(
        self, own_store, serve_api, tmp_path, caplog
    ):
        server = serve_api(settings_for(own_store, tmp_path))
        caplog.set_level(logging.ERROR, logger="api.audit_log")

        with server.client() as http:
            lead = http.post("/api/leads", json=PERSON).json()
            self.refuse_call_records(own_store)
            answer = http.patch(f"/api/leads/{lead['id']}", json={"city": "Oslo"})
            with own_store.engine.begin() as connection:
                connection.exec_driver_sql("DROP TRIGGER audit_refuses_calls")
            later = http.patch(f"/api/leads/{lead['id']}", json={"city": "Bergen"})

        assert answer.status_code == 200, answer.text
        assert later.status_code == 200, later.text
        with own_store.read("default") as scope:
            assert scope.get(Lead, lead["id"]).city == "Bergen"
        [logged] = [r for r in caplog.records if r.name == "api.audit_log"]
        assert logged.levelno == logging.ERROR
        assert "PATCH /api/leads/{lead_id} (200)" in logged.getMessage()
        assert logged.getMessage().endswith("kept in the spool")
        assert "zelda" not in logged.getMessage().lower()
        edits = [
            record
            for record in stored_records(own_store)
            if record.action == "PATCH /api/leads/{lead_id}"
        ]
        assert [(r.target_id, r.status) for r in edits] == [(lead["id"], 200)] * 2
        assert edits[0].at <= edits[1].at

    def test_a_lead_is_not_stored_without_the_record_of_the_call_that_sent_it(
        self, own_store, serve_api, tmp_path
    ):
        # A single lead's record is written in the lead's own transaction.
        self.refuse_call_records(own_store)
        server = serve_api(settings_for(own_store, tmp_path))

        with server.client() as http:
            answer = http.post("/api/leads", json=PERSON)

        assert answer.status_code == 500, answer.text
        assert answer.json()["detail"].endswith("nothing was written")
        with own_store.read("default") as scope:
            assert scope.session.scalars(scope.select(Lead)).all() == []

    def test_a_busy_store_does_not_hold_the_answer_and_the_record_follows(
        self, own_store, serve_api, tmp_path, caplog, monkeypatch
    ):
        monkeypatch.setattr(audit_log, "WAIT_SECONDS", 0.2)
        server = serve_api(settings_for(own_store, tmp_path))
        caplog.set_level(logging.ERROR, logger="api.audit_log")
        database = own_store.engine.url.database
        holder = sqlite3.connect(database, isolation_level=None, timeout=30)

        with server.client() as http:
            holder.execute("BEGIN IMMEDIATE")
            try:
                # Starting a sync writes nothing but the call's record, which
                # must wait for the lock the test holds.
                answer = http.post("/api/crm/sync")
            finally:
                holder.execute("ROLLBACK")
                holder.close()

        assert answer.status_code == 503, answer.text
        [logged] = [r for r in caplog.records if r.name == "api.audit_log"]
        assert "POST /api/crm/sync (503) not written within" in logged.getMessage()
        deadline = time.monotonic() + 20
        while not stored_records(own_store) and time.monotonic() < deadline:
            time.sleep(0.05)
        [record] = stored_records(own_store)
        assert (record.action, record.status) == ("POST /api/crm/sync", 503)
