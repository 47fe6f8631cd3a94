"""The e-mail endpoints over real HTTP: one-off sends, provider events, previews."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from leads.intake import submit
from leads.settings import Settings
from leads.store.tables import EmailSend, OutboxItem, TimelineEvent

CONFIG = Path(__file__).parents[2] / "config"
AT = "2026-12-08T10:00:00+00:00"


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["detail"]
    return body


def fields_of(body: dict) -> dict[str, str]:
    return {error["field"]: error["reason"] for error in body["errors"]}


def count(store, model) -> int:
    with store.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(model)).scalar_one()


def a_lead(client, **given) -> dict:
    data = {"email": "ada@example.com", "first_name": "Ada"} | given
    return client.post("/api/leads", json=data).json()


def marketing(**given) -> dict:
    return {"category": "marketing", "subject": "News", "text": "Hello"} | given


def kinds(store, lead_id: str) -> list[str]:
    with store.read("default") as scope:
        rows = scope.session.scalars(
            scope.select(TimelineEvent)
            .where(
                TimelineEvent.lead_id == lead_id,
                TimelineEvent.kind.startswith("email."),
            )
            .order_by(TimelineEvent.id)
        )
        return [row.kind for row in rows]


def event(number: int = 1, **given) -> dict:
    return {"id": f"evt-{number}", "type": "delivered", "occurred_at": AT} | given


class TestSend:
    def test_a_send_to_a_lead_is_queued_with_its_message_id(self, client, store):
        lead = a_lead(client)

        response = client.post("/api/email/send", json=marketing(lead_id=lead["id"]))

        assert response.status_code == 202, response.text
        body = response.json()
        assert body["status"] == "pending"
        assert body["message_id"].startswith("<")
        assert body["message_id"].endswith("@localhost>")
        assert body["status_url"] == f"/api/email/sends/{body['id']}"
        assert response.headers["location"] == body["status_url"]
        with store.read("default") as scope:
            send = scope.get(EmailSend, body["id"])
            row = scope.session.scalars(
                scope.select(OutboxItem).where(OutboxItem.topic == "email_send")
            ).one()
        assert (send.status, send.message_id, send.lead_id) == (
            "pending",
            body["message_id"],
            lead["id"],
        )
        assert send.recipient is None, "a lead's address is read when sending"
        assert (row.key, row.lead_id, row.status) == (send.id, lead["id"], "pending")
        assert kinds(store, lead["id"]) == ["email.queued"]

    def test_a_send_to_a_bare_address_owes_work_to_no_lead(self, client, store):
        response = client.post(
            "/api/email/send",
            json={
                "category": "transactional",
                "to": " Zoe@Example.com ",
                "template": "meeting_confirmation",
                "subject": "Your meeting",
            },
        )

        assert response.status_code == 202, response.text
        with store.read("default") as scope:
            send = scope.get(EmailSend, response.json()["id"])
            row = scope.session.scalars(scope.select(OutboxItem)).one()
        assert (send.recipient, send.template) == (
            "Zoe@Example.com",
            "meeting_confirmation",
        )
        assert (row.topic, row.key, row.lead_id) == ("email_send", send.id, None)

    def test_the_status_tells_how_it_went_without_body_or_address(self, client):
        sent = client.post(
            "/api/email/send", json=marketing(to="zoe@example.com")
        ).json()

        response = client.get(sent["status_url"])

        assert response.status_code == 200
        view = response.json()
        assert view["id"] == sent["id"]
        assert (view["status"], view["category"], view["sent_at"]) == (
            "pending",
            "marketing",
            None,
        )
        assert view["created_at"] and view["message_id"] == sent["message_id"]
        assert "zoe" not in response.text
        assert "Hello" not in response.text

    def test_an_unknown_send_is_404(self, client):
        assert_problem(client.get("/api/email/sends/nope"), 404)

    def test_an_unknown_lead_is_404_and_nothing_is_stored(self, client, store):
        response = client.post(
            "/api/email/send",
            json=marketing(lead_id="00000000-0000-4000-8000-000000000000"),
        )

        assert_problem(response, 404)
        assert count(store, EmailSend) == count(store, OutboxItem) == 0


class TestIdempotency:
    def test_the_same_key_and_body_return_the_same_send_once(self, client, store):
        headers = {"Idempotency-Key": "order-17-confirmation"}
        body = marketing(to="zoe@example.com")

        first = client.post("/api/email/send", json=body, headers=headers)
        again = client.post("/api/email/send", json=body, headers=headers)

        assert (first.status_code, again.status_code) == (202, 200)
        assert again.json() == first.json()
        assert count(store, EmailSend) == count(store, OutboxItem) == 1

    def test_the_same_key_with_another_body_is_409(self, client, store):
        headers = {"Idempotency-Key": "order-17-confirmation"}
        client.post(
            "/api/email/send", json=marketing(to="zoe@example.com"), headers=headers
        )

        response = client.post(
            "/api/email/send",
            json=marketing(to="zoe@example.com", text="Something else"),
            headers=headers,
        )

        body = assert_problem(response, 409)
        assert fields_of(body) == {"Idempotency-Key": "key_reused"}
        assert count(store, EmailSend) == 1

    def test_different_keys_are_different_sends(self, client, store):
        body = marketing(to="zoe@example.com")
        for key in ("a", "b"):
            client.post("/api/email/send", json=body, headers={"Idempotency-Key": key})

        assert count(store, EmailSend) == 2


class TestSuppressed:
    def test_marketing_to_an_unsubscribed_lead_is_refused_but_not_a_receipt(
        self, client, store
    ):
        lead = a_lead(client)
        client.post(
            "/api/email/events",
            json={"events": [event(type="unsubscribed", lead_id=lead["id"])]},
        )

        refused = client.post("/api/email/send", json=marketing(lead_id=lead["id"]))
        allowed = client.post(
            "/api/email/send",
            json=marketing(lead_id=lead["id"], category="transactional"),
        )

        body = assert_problem(refused, 409)
        assert fields_of(body) == {"lead_id": "unsubscribed"}
        assert allowed.status_code == 202
        assert count(store, EmailSend) == 1

    def test_a_hard_bounce_refuses_even_transactional_email(self, client, store):
        client.post(
            "/api/email/events",
            json={
                "events": [
                    event(type="bounced", bounce_type="hard", email="gone@example.com")
                ]
            },
        )

        response = client.post(
            "/api/email/send",
            json=marketing(to="Gone@Example.com", category="transactional"),
        )

        body = assert_problem(response, 409)
        assert fields_of(body) == {"to": "bounced"}
        assert count(store, EmailSend) == 0


class TestSendValidation:
    @pytest.mark.parametrize(
        ("changes", "expected"),
        [
            ({"to": "not an address"}, {"to": "invalid_email"}),
            ({"to": "a@example.com", "lead_id": "x"}, {"to": "conflict"}),
            ({}, {"lead_id": "required"}),
            ({"to": "a@example.com", "template": "welcome_1"}, {"text": "conflict"}),
            ({"to": "a@example.com", "template": "nope", "text": None}, None),
            ({"to": "a@example.com", "subject": None}, {"subject": "required"}),
            ({"to": "a@example.com", "text": None}, {"template": "required"}),
            (
                {"to": "a@example.com", "text": None, "html": "<p>Hi</p>"},
                {"text": "required"},
            ),
            ({"to": "a@example.com", "category": None}, {"category": "required"}),
            (
                {"to": "a@example.com", "category": "news"},
                {"category": "invalid_choice"},
            ),
            (
                {"to": "a@example.com", "bcc": "x@example.com"},
                {"bcc": "extra_forbidden"},
            ),
        ],
    )
    def test_every_error_names_its_field_and_reason(
        self, client, store, changes, expected
    ):
        body = {
            key: value
            for key, value in (marketing() | changes).items()
            if value is not None
        }

        problem = assert_problem(client.post("/api/email/send", json=body), 422)

        assert fields_of(problem) == (expected or {"template": "unknown_template"})
        assert count(store, EmailSend) == 0


class TestEvents:
    def test_each_event_is_answered_with_its_outcome_in_order(self, client, store):
        lead = a_lead(client)

        response = client.post(
            "/api/email/events",
            json={
                "events": [
                    event(1, type="replied", lead_id=lead["id"]),
                    event(2, type="delivered", email="ada@example.com"),
                    event(3, type="complained", email="stranger@example.com"),
                ]
            },
        )

        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [(r["index"], r["id"], r["outcome"]) for r in results] == [
            (0, "evt-1", "applied"),
            (1, "evt-2", "recorded"),
            (2, "evt-3", "no_such_recipient"),
        ]
        assert results[0]["lead_id"] == lead["id"]

    def test_a_redelivered_batch_is_acknowledged_and_applied_once(self, client, store):
        lead = a_lead(client)
        batch = {
            "events": [event(type="bounced", bounce_type="hard", lead_id=lead["id"])]
        }

        first = client.post("/api/email/events", json=batch).json()["results"]
        again = client.post("/api/email/events", json=batch)

        assert again.status_code == 200
        assert [r["outcome"] for r in first] == ["applied"]
        assert [r["outcome"] for r in again.json()["results"]] == ["duplicate"]
        assert kinds(store, lead["id"]) == ["email.bounced"]

    @pytest.mark.parametrize(
        ("bad", "expected"),
        [
            ({"type": "opened"}, {"events.1.type": "invalid_choice"}),
            (
                {"occurred_at": "2026-12-08T10:00:00"},
                {"events.1.occurred_at": "timezone_required"},
            ),
            (
                {"occurred_at": "0001-01-01T00:00:00+01:00"},
                {"events.1.occurred_at": "invalid_datetime"},
            ),
            ({"email": "nope"}, {"events.1.email": "invalid_email"}),
            ({"type": "bounced"}, {"events.1.bounce_type": "required"}),
            ({"lead_id": None, "email": None}, {"events.1": "missing_recipient"}),
            ({"id": ""}, {"events.1.id": "string_too_short"}),
        ],
    )
    def test_a_bad_event_names_its_index_and_field_and_nothing_is_applied(
        self, client, store, bad, expected
    ):
        good = event(1, email="a@example.com")
        wrong = {
            key: value
            for key, value in (event(2, email="a@example.com") | bad).items()
            if value is not None
        }

        response = client.post("/api/email/events", json={"events": [good, wrong]})

        assert fields_of(assert_problem(response, 422)) == expected
        assert (
            client.post("/api/email/events", json={"events": [good]}).json()["results"][
                0
            ]["outcome"]
            == "no_such_recipient"
        )

    def test_more_than_500_events_is_413(self, client):
        events = [event(n, email="a@example.com") for n in range(501)]

        assert_problem(client.post("/api/email/events", json={"events": events}), 413)


SCRIPT = "<script>alert(1)</script>"


class TestTemplates:
    def test_lists_every_template_by_stem(self, client):
        names = client.get("/api/email/templates").json()["data"]

        stems = sorted(
            p.name.removesuffix(".txt.j2")
            for p in (CONFIG / "templates").glob("*.txt.j2")
        )
        assert names == stems
        assert {"welcome_1", "meeting_confirmation"} <= set(names)

    def test_every_template_renders_for_the_sample_and_an_empty_lead_escaping_html(
        self, client
    ):
        empty = a_lead(client, email="empty@example.com", first_name=None)
        hostile = a_lead(
            client,
            email="hostile@example.com",
            first_name=SCRIPT,
            company=SCRIPT,
            job_title=SCRIPT,
            city=SCRIPT,
        )
        names = client.get("/api/email/templates").json()["data"]

        for name in names:
            for lead_id in (None, empty["id"], hostile["id"]):
                params = {"lead_id": lead_id} if lead_id else {}
                response = client.get(
                    f"/api/email/templates/{name}/preview", params=params
                )
                assert response.status_code == 200, (name, response.text)
                preview = response.json()
                assert preview["text"].strip() and preview["html"].strip()
                assert "None" not in preview["text"] + preview["html"], name
                assert "<script>" not in preview["html"], name

        greeting = client.get(
            "/api/email/templates/welcome_1/preview", params={"lead_id": hostile["id"]}
        ).json()
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in greeting["html"]

    def test_the_subject_comes_from_the_sequence_that_uses_the_template(self, client):
        preview = client.get("/api/email/templates/welcome_1/preview").json()

        assert preview["subject"] == "Welcome, Ada!"

    def test_a_given_subject_is_text_never_a_template(self, client):
        preview = client.get(
            "/api/email/templates/welcome_1/preview",
            params={"subject": "{{ lead.__class__ }} {{ 7 * 7 }}"},
        ).json()

        assert preview["subject"] == "{{ lead.__class__ }} {{ 7 * 7 }}"

    def test_a_template_no_sequence_uses_has_no_subject_unless_given(self, client):
        preview = client.get("/api/email/templates/meeting_confirmation/preview").json()

        assert preview["subject"] is None
        assert "This confirms your meeting with us for" in preview["text"]

    def test_an_unknown_template_is_404(self, client):
        for name in ("nope", "..%2Fsequences", "welcome_1.txt"):
            assert_problem(client.get(f"/api/email/templates/{name}/preview"), 404)

    def test_another_tenants_lead_is_404(self, client, store):
        other = submit(
            store, "acme", {"email": "x@example.com"}, channel="api", region="US"
        ).lead

        response = client.get(
            "/api/email/templates/welcome_1/preview", params={"lead_id": other.id}
        )

        assert_problem(response, 404)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def broken_config(serve_api, store, tmp_path) -> Iterator[httpx.Client]:
    """The API on a config folder with a template that fails for some leads."""
    config = tmp_path / "config"
    shutil.copytree(CONFIG, config)
    (config / "templates" / "plan.txt.j2").write_text("{{ lead.custom.plan }}\n")
    (config / "templates" / "plan.html.j2").write_text("<p>Plan</p>\n")
    server = serve_api(
        Settings(
            data_dir=tmp_path / "data",
            database_url=store.url,
            config_dir=config,
            crm="none",
            prefect_api_url=f"http://127.0.0.1:{closed_port()}/api",
        )
    )
    with server.client() as http:
        yield http


def test_a_template_that_fails_to_render_is_422_with_the_renderers_words(
    broken_config,
):
    response = broken_config.get("/api/email/templates/plan/preview")

    body = assert_problem(response, 422)
    assert fields_of(body) == {"name": "render_failed"}
    assert "plan.txt.j2 does not render" in body["detail"]


class TestSubjectsAndIds:
    @pytest.mark.parametrize(
        "subject", ["   ", "a\u0000b", "a\u001b[31mred", "a\nBcc: x"]
    )
    def test_a_blank_or_control_character_subject_is_422_naming_it(
        self, client, subject
    ):
        response = client.post(
            "/api/email/send",
            json={
                "to": "zoe@example.com",
                "category": "transactional",
                "subject": subject,
                "text": "Hello",
            },
        )

        assert response.status_code == 422, response.text
        assert [e["field"] for e in response.json()["errors"]] == ["subject"]

    def test_an_event_id_with_a_control_character_is_422_naming_it(self, client):
        response = client.post(
            "/api/email/events",
            json={
                "events": [
                    {
                        "id": "ev\u00001",
                        "type": "replied",
                        "occurred_at": "2026-12-05T10:00:00+00:00",
                        "email": "zoe@example.com",
                    }
                ]
            },
        )

        assert response.status_code == 422, response.text
        fields = [e["field"] for e in response.json()["errors"]]
        assert any("id" in field for field in fields), fields
