"""The sandbox's subscription types and unsubscribes, through HubSpot's own client."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hubspot.communication_preferences import PublicUpdateSubscriptionStatusRequest
from hubspot.communication_preferences.exceptions import (
    ApiException,
    UnauthorizedException,
)

from connectors.sandbox.hubspot import SANDBOX_TOKEN

UNSUBSCRIBE = "POST /communication-preferences/v3/unsubscribe"


def unsubscribe(client: Any, email: str, subscription_id: str = "1001", **extra):
    request = PublicUpdateSubscriptionStatusRequest(
        email_address=email, subscription_id=subscription_id, **extra
    )
    return client.communication_preferences.status_api.unsubscribe(request)


def error_of(caught: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    return json.loads(caught.value.body)


class TestDefinitions:
    def test_lists_one_marketing_type_and_one_for_sales(self, sandbox):
        listed = (
            sandbox.client()
            .communication_preferences.definition_api.get_page()
            .subscription_definitions
        )

        assert [(d.id, d.name, d.purpose) for d in listed] == [
            ("1001", "Marketing Information", "Marketing"),
            ("1002", "One to One", "Sales"),
        ]
        assert all(d.is_active and not d.is_internal for d in listed)

    def test_wants_a_token(self, sandbox):
        api = sandbox.client(token=None).communication_preferences.definition_api

        with pytest.raises(UnauthorizedException) as caught:
            api.get_page()

        assert error_of(caught)["category"] == "INVALID_AUTHENTICATION"


class TestUnsubscribe:
    def test_answers_the_new_status_and_opts_the_contact_out(self, sandbox):
        sandbox.seed(contacts=[{"id": 7, "properties": {"email": "ada@example.com"}}])

        status = unsubscribe(
            sandbox.client(),
            "Ada@Example.com",
            legal_basis="LEGITIMATE_INTEREST_CLIENT",
            legal_basis_explanation="Asked us to stop.",
        )

        assert (status.id, status.status, status.source_of_status) == (
            "1001",
            "NOT_SUBSCRIBED",
            "SUBSCRIPTION_STATUS",
        )
        assert status.legal_basis == "LEGITIMATE_INTEREST_CLIENT"
        [contact] = sandbox.contacts()
        assert contact["properties"]["hs_email_optout"] == "true"
        assert contact["updatedAt"] > contact["createdAt"]
        [kept] = sandbox.http.get("/_sandbox/hubspot/subscriptions").json()
        assert (kept["email"], kept["subscription_id"], kept["legal_basis"]) == (
            "ada@example.com",
            "1001",
            "LEGITIMATE_INTEREST_CLIENT",
        )

    def test_an_address_without_a_contact_is_unsubscribed_all_the_same(self, sandbox):
        unsubscribe(sandbox.client(), "nobody@example.com")

        statuses = sandbox.client().communication_preferences.status_api
        answer = statuses.get_email_status("nobody@example.com")
        assert answer.recipient == "nobody@example.com"
        assert [(s.id, s.status) for s in answer.subscription_statuses] == [
            ("1001", "NOT_SUBSCRIBED"),
            ("1002", "SUBSCRIBED"),
        ]
        assert sandbox.contacts() == []

    def test_an_address_already_unsubscribed_answers_400_saying_so(self, sandbox):
        unsubscribe(sandbox.client(), "ada@example.com")

        with pytest.raises(ApiException) as caught:
            unsubscribe(sandbox.client(), "ada@example.com")

        assert caught.value.status == 400
        body = error_of(caught)
        assert body["status"] == "error"
        assert body["message"] == (
            "ada@example.com is already unsubscribed from subscription 1001"
        )
        assert body["correlationId"]

    def test_an_unknown_subscription_type_answers_400(self, sandbox):
        with pytest.raises(ApiException) as caught:
            unsubscribe(sandbox.client(), "ada@example.com", subscription_id="999")

        assert caught.value.status == 400
        body = error_of(caught)
        assert body["category"] == "VALIDATION_ERROR"
        assert "999" in body["message"]
        assert sandbox.http.get("/_sandbox/hubspot/subscriptions").json() == []

    def test_a_body_without_the_address_names_what_is_missing(self, sandbox):
        response = sandbox.http.post(
            "/communication-preferences/v3/unsubscribe",
            json={"subscriptionId": "1001"},
            headers={"Authorization": f"Bearer {SANDBOX_TOKEN}"},
        )

        assert response.status_code == 400
        assert response.json()["message"].endswith(
            "some of required attributes are not set [emailAddress]"
        )

    def test_is_rate_limited_and_logged_like_any_call(self, sandbox):
        sandbox.limits(per_ten_seconds=1)
        unsubscribe(sandbox.client(), "ada@example.com")

        with pytest.raises(ApiException) as caught:
            unsubscribe(sandbox.client(), "grace@example.com")

        assert caught.value.status == 429
        assert caught.value.headers["Retry-After"]
        assert sandbox.received()["counts"][UNSUBSCRIBE] == 2

    def test_a_reset_forgets_every_unsubscribe(self, sandbox):
        unsubscribe(sandbox.client(), "ada@example.com")

        sandbox.http.post("/_sandbox/reset").raise_for_status()

        assert sandbox.http.get("/_sandbox/hubspot/subscriptions").json() == []
        assert sandbox.http.get("/").json()["hubspot"]["unsubscribes"] == 0
