"""The sandbox's HubSpot tokens, OAuth grants, rate limits and request counts."""

from __future__ import annotations

import json

import pytest
from hubspot.crm.contacts.exceptions import ApiException, UnauthorizedException
from hubspot.oauth.exceptions import ApiException as OAuthApiException

from connectors.sandbox.hubspot import (
    SANDBOX_AUTHORIZATION_CODE,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_REFRESH_TOKEN,
)

RATE_HEADERS = (
    "X-HubSpot-RateLimit-Max",
    "X-HubSpot-RateLimit-Remaining",
    "X-HubSpot-RateLimit-Interval-Milliseconds",
    "X-HubSpot-RateLimit-Daily",
    "X-HubSpot-RateLimit-Daily-Remaining",
)


def grant(sandbox, **form) -> object:
    tokens = sandbox.client().oauth.tokens_api
    return tokens.create(
        client_id=SANDBOX_CLIENT_ID, client_secret=SANDBOX_CLIENT_SECRET, **form
    )


def list_contacts(client) -> tuple[object, int, dict]:
    return client.crm.contacts.basic_api.get_page_with_http_info(limit=1)


class TestTokens:
    @pytest.mark.parametrize("token", ["", "pat-na1-unknown"])
    def test_a_missing_or_unknown_token_is_invalid_authentication(self, sandbox, token):
        with pytest.raises(UnauthorizedException) as caught:
            list_contacts(sandbox.client(token=token or None))

        assert json.loads(caught.value.body)["category"] == "INVALID_AUTHENTICATION"

    @pytest.mark.parametrize(
        "form",
        [
            {"grant_type": "refresh_token", "refresh_token": SANDBOX_REFRESH_TOKEN},
            {"grant_type": "authorization_code", "code": SANDBOX_AUTHORIZATION_CODE},
            {"grant_type": "client_credentials"},
        ],
    )
    def test_each_grant_type_issues_a_working_token(self, sandbox, form):
        issued = grant(sandbox, **form)

        _, status, _ = list_contacts(sandbox.client(token=issued.access_token))
        assert status == 200
        assert issued.expires_in == 1800

    def test_a_bad_refresh_token_is_refused(self, sandbox):
        with pytest.raises(OAuthApiException) as caught:
            grant(sandbox, grant_type="refresh_token", refresh_token="stolen")

        assert caught.value.status == 400
        assert json.loads(caught.value.body)["status"] == "BAD_REFRESH_TOKEN"

    def test_an_expired_token_is_expired_authentication(self, sandbox):
        issued = grant(
            sandbox, grant_type="refresh_token", refresh_token=SANDBOX_REFRESH_TOKEN
        )
        sandbox.http.post("/_sandbox/hubspot/oauth/expire").raise_for_status()

        with pytest.raises(UnauthorizedException) as caught:
            list_contacts(sandbox.client(token=issued.access_token))

        assert json.loads(caught.value.body)["category"] == "EXPIRED_AUTHENTICATION"

    def test_the_token_lifetime_is_configurable(self, sandbox):
        sandbox.http.put(
            "/_sandbox/hubspot/oauth", json={"access_token_lifetime_seconds": 5}
        ).raise_for_status()

        issued = grant(
            sandbox, grant_type="refresh_token", refresh_token=SANDBOX_REFRESH_TOKEN
        )

        assert issued.expires_in == 5


class TestRateLimits:
    def test_every_response_carries_the_rate_limit_headers(self, sandbox):
        _, _, headers = list_contacts(sandbox.client())

        assert all(name in headers for name in RATE_HEADERS)
        assert headers["X-HubSpot-RateLimit-Max"] == "190"
        assert headers["X-HubSpot-RateLimit-Remaining"] == "189"
        assert headers["X-HubSpot-RateLimit-Daily"] == "625000"

    def test_past_the_ten_second_limit_a_429_names_the_policy(self, sandbox):
        sandbox.limits(per_ten_seconds=2)
        client = sandbox.client()
        list_contacts(client)
        list_contacts(client)

        with pytest.raises(ApiException) as caught:
            list_contacts(client)

        assert caught.value.status == 429
        assert json.loads(caught.value.body)["policyName"] == "TEN_SECONDLY_ROLLING"
        assert caught.value.headers["Retry-After"] in {str(s) for s in range(1, 11)}
        assert caught.value.headers["X-HubSpot-RateLimit-Remaining"] == "0"

    def test_past_the_daily_limit_a_429_says_daily(self, sandbox):
        sandbox.limits(daily=1)
        client = sandbox.client()
        list_contacts(client)

        with pytest.raises(ApiException) as caught:
            list_contacts(client)

        assert json.loads(caught.value.body)["policyName"] == "DAILY"
        assert caught.value.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "0"


class TestRequestLog:
    def test_counts_requests_by_route_and_keeps_their_bodies(self, sandbox):
        client = sandbox.client()
        list_contacts(client)
        list_contacts(client)
        client.crm.properties.core_api.get_all("contacts")

        received = sandbox.received()

        assert received["counts"] == {
            "GET /crm/v3/objects/contacts": 2,
            "GET /crm/v3/properties/contacts": 1,
        }
        assert received["latest"][0]["query"] == "limit=1"
