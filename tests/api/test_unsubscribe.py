"""Unsubscribe pages over real HTTP: GET only asks, POST unsubscribes at once."""

from __future__ import annotations

import time
import uuid
from urllib.parse import urlsplit

import pytest

from leads.intake import submit
from leads.store.tables import EmailSuppression, Lead, TimelineEvent
from leads.suppression import address_hash
from leads.unsubscribe import unsubscribe_url

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def link(live_api):
    """The path of a signed unsubscribe link, as the e-mails carry it."""

    def make(**target: str) -> str:
        return urlsplit(unsubscribe_url(live_api.settings, "default", **target)).path

    return make


@pytest.fixture
def lead(client) -> dict:
    return client.post(
        "/api/leads", json={"email": "nia.cole@example.com", "first_name": "Nia"}
    ).json()


def stored(store, lead_id: str) -> Lead:
    with store.read("default") as scope:
        return scope.get(Lead, lead_id)


def unsubscribes(store, lead_id: str) -> list[TimelineEvent]:
    with store.read("default") as scope:
        return list(
            scope.session.scalars(
                scope.select(TimelineEvent).where(
                    TimelineEvent.lead_id == lead_id,
                    TimelineEvent.kind == "email.unsubscribed",
                )
            )
        )


def suppressions(store) -> list[EmailSuppression]:
    with store.read("default") as scope:
        return list(scope.session.scalars(scope.select(EmailSuppression)))


def assert_private_page(response, status: int = 200) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert "noindex" in response.headers["x-robots-tag"]
    assert response.headers["referrer-policy"] == "no-referrer"
    return response.text


class TestConfirmationPage:
    def test_a_get_shows_a_form_and_unsubscribes_no_one(
        self, client, store, lead, link
    ):
        path = link(lead_id=lead["id"])

        page = assert_private_page(client.get(path))

        token = path.removeprefix("/u/")
        assert f'<form method="post" action="{token}">' in page
        assert stored(store, lead["id"]).email_opt_out is False
        assert unsubscribes(store, lead["id"]) == []
        assert suppressions(store) == []

    def test_the_page_shows_nothing_of_the_person(self, client, lead, link):
        page = client.get(link(lead_id=lead["id"])).text

        assert "nia" not in page.lower()
        assert "example.com" not in page

    def test_needs_no_api_key(self, client, lead, link):
        response = client.get(
            link(lead_id=lead["id"]), headers={"Authorization": "Bearer wrong"}
        )

        assert response.status_code == 200


class TestOneClick:
    def test_a_mail_clients_rfc_8058_post_unsubscribes_at_once(
        self, client, store, lead, link
    ):
        response = client.post(link(lead_id=lead["id"]), data=ONE_CLICK)

        assert "You are unsubscribed" in assert_private_page(response)
        found = stored(store, lead["id"])
        assert found.email_opt_out is True
        assert "unsubscribed_at" in found.email_state
        (event,) = unsubscribes(store, lead["id"])
        assert event.detail == {"source": "one_click"}
        (entry,) = suppressions(store)
        assert entry.address_hash == address_hash("nia.cole@example.com")

    def test_the_one_click_body_as_multipart_counts_too(
        self, client, store, lead, link
    ):
        response = client.post(
            link(lead_id=lead["id"]), files={"List-Unsubscribe": (None, "One-Click")}
        )

        assert response.status_code == 200
        (event,) = unsubscribes(store, lead["id"])
        assert event.detail == {"source": "one_click"}

    def test_the_pages_own_empty_post_unsubscribes(self, client, store, lead, link):
        response = client.post(
            link(lead_id=lead["id"]),
            content=b"",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )

        assert response.status_code == 200
        (event,) = unsubscribes(store, lead["id"])
        assert event.detail == {"source": "unsubscribe_page"}

    def test_a_second_post_is_answered_alike_and_records_nothing(
        self, client, store, lead, link
    ):
        path = link(lead_id=lead["id"])

        first = client.post(path, data=ONE_CLICK)
        second = client.post(path, data=ONE_CLICK)

        assert (first.status_code, second.status_code) == (200, 200)
        assert len(unsubscribes(store, lead["id"])) == 1
        assert len(suppressions(store)) == 1

    def test_a_broken_multipart_body_still_unsubscribes(
        self, client, store, lead, link
    ):
        response = client.post(
            link(lead_id=lead["id"]),
            content=b"--nope\r\ngarbage",
            headers={"Content-Type": "multipart/form-data; boundary=other"},
        )

        assert response.status_code == 200
        assert stored(store, lead["id"]).email_opt_out is True

    def test_an_address_link_suppresses_the_address_by_its_hash(
        self, client, store, link
    ):
        path = link(address_hash=address_hash("Stranger@Example.com"))

        assert client.post(path, data=ONE_CLICK).status_code == 200
        assert client.post(path, data=ONE_CLICK).status_code == 200

        (entry,) = suppressions(store)
        assert (entry.reason, entry.scope, entry.lead_id) == (
            "unsubscribed",
            "marketing",
            None,
        )
        assert entry.address_hash == address_hash("stranger@example.com")

    def test_an_address_link_unsubscribes_the_lead_holding_the_address(
        self, client, store, lead, link
    ):
        namesake = submit(
            store,
            "other",
            {"email": "nia.cole@example.com"},
            channel="api",
            region="US",
        ).lead.id
        path = link(address_hash=address_hash("Nia.Cole@Example.com"))

        assert client.post(path, data=ONE_CLICK).status_code == 200
        assert client.post(path, data=ONE_CLICK).status_code == 200

        held = stored(store, lead["id"])
        assert held.email_opt_out is True
        assert held.crm_sync_status == "pending", "the CRM's opt-out follows"
        assert len(unsubscribes(store, lead["id"])) == 1
        (entry,) = suppressions(store)
        assert entry.lead_id == lead["id"]
        with store.read("other") as scope:
            assert scope.get(Lead, namesake).email_opt_out is False, "another tenant's"

    def test_a_lead_changing_address_is_found_by_its_new_one_only(
        self, client, store, lead, link
    ):
        changed = client.patch(
            f"/api/leads/{lead['id']}", json={"email": "nia.new@example.com"}
        )
        assert changed.status_code == 200, changed.text

        client.post(link(address_hash=address_hash("nia.cole@example.com")))
        assert stored(store, lead["id"]).email_opt_out is False

        client.post(link(address_hash=address_hash("nia.new@example.com")))
        assert stored(store, lead["id"]).email_opt_out is True

    def test_a_link_for_a_lead_erased_since_is_answered_as_done(
        self, client, store, link
    ):
        gone = link(lead_id=str(uuid.uuid4()))

        response = client.post(gone, data=ONE_CLICK)

        assert "You are unsubscribed" in assert_private_page(response)
        assert suppressions(store) == []


class TestBadTokens:
    @pytest.mark.parametrize("method", ["GET", "POST"])
    def test_a_tampered_token_is_a_404_page_and_changes_nothing(
        self, client, store, lead, link, method
    ):
        path = link(lead_id=lead["id"])
        tampered = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")

        response = client.request(method, tampered, data=ONE_CLICK)

        assert "not valid" in assert_private_page(response, 404)
        assert stored(store, lead["id"]).email_opt_out is False
        assert suppressions(store) == []

    @pytest.mark.parametrize("token", ["x", "%3Cscript%3E", "A" * 800])
    def test_garbage_is_a_404_page_never_a_500(self, client, token):
        response = client.post(f"/u/{token}", data=ONE_CLICK)

        assert response.status_code == 404
        assert "<script>" not in response.text


def test_the_access_log_never_holds_the_token(client, lead, link, caplog):
    path = link(lead_id=lead["id"])
    token = path.rsplit("/", 1)[1]

    def access_lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "api.access"]

    with caplog.at_level("INFO", logger="api.access"):
        client.post(path, data=ONE_CLICK)
        # The server thread logs once the answer is on its way.
        deadline = time.monotonic() + 5
        while not access_lines() and time.monotonic() < deadline:
            time.sleep(0.05)

    lines = access_lines()
    assert any(line.startswith("POST /u/… 200") for line in lines), lines
    assert not any(token in line for line in lines)
