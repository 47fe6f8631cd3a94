"""`DELETE /api/leads/{id}?erase=true`: the right to be forgotten over HTTP."""

from __future__ import annotations

from email.message import EmailMessage

from sqlalchemy import select

from connectors.email.file_outbox import FileOutbox
from leads.store.tables import AuditEvent, Lead, SequenceStep, TimelineEvent, utcnow

PERSON = {
    "email": "Ada.Byron@Example.com",
    "first_name": "Ada",
    "last_name": "Byron",
    "phone": "+1 415 555 0134",
}


def rows(store, model, *where) -> list:
    with store.engine.connect() as connection:
        return list(connection.execute(select(model.__table__).where(*where)))


def test_erasing_removes_the_person_and_says_what_went(client, store):
    lead = client.post("/api/leads", json=PERSON).json()

    response = client.delete(f"/api/leads/{lead['id']}", params={"erase": "true"})

    assert response.status_code == 200
    body = response.json()
    assert body["lead_id"] == lead["id"]
    assert body["removed"]["leads"] == 1
    assert body["removed"]["timeline_events"] >= 1
    assert body["suppressed"] == 1
    # The test API has no CRM: nothing was ever written there.
    assert body["crm_erasure"] == "not_needed"
    assert client.get(f"/api/leads/{lead['id']}").status_code == 404
    assert rows(store, Lead) == []
    assert rows(store, TimelineEvent) == []


def test_the_audit_log_names_the_key_that_asked(client, store):
    lead = client.post("/api/leads", json=PERSON).json()

    client.delete(f"/api/leads/{lead['id']}", params={"erase": "true"})

    [record] = rows(store, AuditEvent, AuditEvent.action == "lead.erased")
    assert record.target_id == lead["id"]
    assert record.actor not in ("system", "")
    assert record.detail["via"] == "api"
    assert "ada" not in str(record.detail).lower()


def test_without_erase_true_nothing_is_deleted_and_the_field_is_named(client):
    lead = client.post("/api/leads", json=PERSON).json()

    response = client.delete(f"/api/leads/{lead['id']}")

    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert (error["field"], error["reason"]) == ("erase", "erase_required")
    assert client.get(f"/api/leads/{lead['id']}").status_code == 200


def test_a_second_erasure_finds_nothing(client):
    lead = client.post("/api/leads", json=PERSON).json()
    client.delete(f"/api/leads/{lead['id']}", params={"erase": "true"})

    again = client.delete(f"/api/leads/{lead['id']}", params={"erase": "true"})

    assert again.status_code == 404


def test_another_tenants_admin_key_gets_404_and_the_lead_stays(client, live_api):
    lead = client.post("/api/leads", json=PERSON).json()

    with live_api.client(tenant="acme") as other:
        response = other.delete(f"/api/leads/{lead['id']}", params={"erase": "true"})

    assert response.status_code == 404
    assert client.get(f"/api/leads/{lead['id']}").status_code == 200


def test_a_write_key_may_not_erase(client, live_api):
    lead = client.post("/api/leads", json=PERSON).json()

    with live_api.client(scope="write") as writer:
        response = writer.delete(f"/api/leads/{lead['id']}", params={"erase": "true"})

    assert response.status_code == 403
    assert client.get(f"/api/leads/{lead['id']}").status_code == 200


def test_the_same_address_posted_later_is_a_new_lead_with_no_history(client):
    lead = client.post("/api/leads", json=PERSON).json()
    client.delete(f"/api/leads/{lead['id']}", params={"erase": "true"})

    again = client.post("/api/leads", json={"email": PERSON["email"]})

    assert again.status_code == 201
    new = again.json()
    assert new["id"] != lead["id"]
    assert new["first_name"] is None
    timeline = client.get(f"/api/leads/{new['id']}/timeline").json()["data"]
    assert [event["kind"] for event in timeline] == ["lead.created"]


def test_the_file_backend_s_copy_of_their_mail_is_deleted(client, store, live_api):
    lead = client.post("/api/leads", json=PERSON).json()
    with store.write("default") as scope:
        scope.add(
            SequenceStep(
                lead_id=lead["id"],
                sequence="welcome_sequence",
                step=1,
                step_key="welcome_1",
                status="sent",
                due_at=utcnow(),
                message_id=f"<{lead['id']}@example.org>",
            )
        )
    outbox = FileOutbox(live_api.settings.email_outbox_dir)
    message = EmailMessage()
    message["Message-ID"] = f"<{lead['id']}@example.org>"
    message.set_content("Welcome, Ada")
    outbox.send(message)

    response = client.delete(f"/api/leads/{lead['id']}", params={"erase": "true"})

    assert response.json()["removed"]["email_files"] == 1
    assert not outbox.delivered(f"<{lead['id']}@example.org>")
