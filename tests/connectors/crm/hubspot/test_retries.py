"""What the connector retries, what it stops at, and how it signs in again."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta

import pytest
import urllib3.exceptions

from connectors.crm.errors import (
    CrmAuthError,
    CrmDailyLimitReached,
    CrmRateLimited,
    CrmUnavailable,
)
from connectors.crm.hubspot import HubSpotConnector, HubSpotCredentials
from connectors.crm.hubspot.errors import translate
from connectors.crm.protocol import CrmRecord

UPSERT = "POST /crm/v3/objects/contacts/batch/upsert"
TOKEN = "POST /oauth/v1/token"


def a_lead() -> list[CrmRecord]:
    return [CrmRecord("l1", "ivy@example.com", {"lead_score": 74})]


class TestHS05RateLimits:
    def test_two_ten_secondly_429s_then_success_take_three_attempts(
        self, sandbox, case, budget
    ):
        replies = case("HS-05")["input"]["replies_in_order"]
        for reply in replies[:2]:
            sandbox.arm(
                path="batch/upsert",
                status=reply["status"],
                headers=reply["headers"],
                body=reply["body"],
            )
        connector = sandbox.connector(budget=budget)

        started = time.monotonic()
        (result,) = connector.upsert(a_lead())
        waited = time.monotonic() - started

        assert result.outcome == "created"
        assert budget.acquired == case("HS-05")["expected"]["attempts"] == 3
        assert waited >= case("HS-05")["expected"]["min_total_wait_seconds"]
        assert sandbox.count(UPSERT) == 1
        assert len(sandbox.contacts()) == 1

    def test_the_retry_after_header_sets_the_first_wait(self, sandbox, case, sleep):
        first = case("HS-05")["input"]["replies_in_order"][0]
        sandbox.arm(path="batch/upsert", status=429, headers=first["headers"])

        sandbox.connector(sleep=sleep).upsert(a_lead())

        assert sleep.waits == [1.0]

    def test_a_daily_429_raises_at_once_without_retrying(self, sandbox, case, budget):
        daily = case("HS-05")["input"]["variant_daily"]
        sandbox.arm(path="batch/upsert", status=429, body=daily["body"], times=5)

        with pytest.raises(CrmDailyLimitReached) as caught:
            sandbox.connector(budget=budget).upsert(a_lead())

        assert budget.acquired == case("HS-05")["expected"]["variant_daily"]["attempts"]
        assert caught.value.code == "rate_limited_daily"

    def test_a_daily_429_is_looked_at_again_in_an_hour_not_at_utc_midnight(
        self, sandbox, case
    ):
        # The account's own midnight is unknown: UTC midnight could park its
        # work for most of a day after HubSpot already reset the limit.
        daily = case("HS-05")["input"]["variant_daily"]
        sandbox.arm(path="batch/upsert", status=429, body=daily["body"])

        with pytest.raises(CrmDailyLimitReached) as caught:
            sandbox.connector().upsert(a_lead())

        in_an_hour = datetime.now(UTC) + timedelta(hours=1)
        assert abs(caught.value.resets_at - in_an_hour) < timedelta(minutes=1)
        assert f"{caught.value.resets_at:%H:%M} UTC" in str(caught.value)

    def test_server_errors_are_retried_then_raised_as_unavailable(
        self, sandbox, budget, sleep
    ):
        sandbox.arm(path="batch/upsert", status=503, times=5)

        with pytest.raises(CrmUnavailable):
            sandbox.connector(budget=budget, sleep=sleep).upsert(a_lead())

        assert budget.acquired == 5
        assert len(sleep.waits) == 4

    def test_a_timeout_is_retried(self, sandbox, sleep):
        sandbox.arm(path="batch/upsert", delay_seconds=1.5)
        credentials = HubSpotCredentials(
            access_token="sandbox-hubspot-token",
            host=sandbox.base_url,
            timeout_seconds=0.5,
        )

        (result,) = HubSpotConnector(credentials, sleep=sleep).upsert(a_lead())

        assert result.outcome == "created"
        assert len(sleep.waits) == 1

    def test_an_unreachable_host_is_unavailable(self, sleep):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        credentials = HubSpotCredentials(
            access_token="pat-x", host=f"http://127.0.0.1:{port}"
        )

        with pytest.raises(CrmUnavailable) as caught:
            HubSpotConnector(credentials, sleep=sleep).test_connection()

        assert len(sleep.waits) == 4
        message = str(caught.value)
        assert f"127.0.0.1:{port} could not be reached" in message
        assert "in time" not in message
        assert "timeout_seconds" not in message
        assert "pat-x" not in message

    def test_a_call_that_keeps_timing_out_says_so(self, sandbox, sleep):
        sandbox.arm(path="batch/upsert", delay_seconds=1.5, times=5)
        credentials = HubSpotCredentials(
            access_token="sandbox-hubspot-token",
            host=sandbox.base_url,
            timeout_seconds=0.5,
        )

        with pytest.raises(CrmUnavailable) as caught:
            HubSpotConnector(credentials, sleep=sleep).upsert(a_lead())

        assert "did not answer in time" in str(caught.value)
        assert "timeout_seconds" in str(caught.value)

    def test_a_name_that_does_not_resolve_is_unreachable_not_a_timeout(self):
        # NameResolutionError is a TimeoutError in urllib3 2.x; built here, as
        # the tests never ask a DNS server.
        unresolved = urllib3.exceptions.NameResolutionError(
            "crm.invalid", None, socket.gaierror("Name or service not known")
        )

        error = translate("upsert", unresolved, host="https://crm.invalid")

        assert isinstance(error, CrmUnavailable)
        assert "crm.invalid could not be reached" in str(error)
        assert "in time" not in str(error)


class TestBudget:
    def test_every_response_s_rate_limit_headers_reach_the_budget(
        self, sandbox, budget
    ):
        sandbox.arm(path="batch/upsert", status=429, body={"policyName": "X"})
        connector = sandbox.connector(budget=budget, sleep=lambda s: None)

        connector.upsert(a_lead())

        assert len(budget.observed) == 2
        failed, succeeded = budget.observed
        assert "X-HubSpot-RateLimit-Remaining" not in failed
        assert succeeded["X-HubSpot-RateLimit-Max"] == "190"
        assert succeeded["x-hubspot-ratelimit-remaining"] == "189"

    def test_the_sandbox_s_own_429_headers_reach_the_budget(self, sandbox, budget):
        sandbox.limits(per_ten_seconds=1)
        connector = sandbox.connector(budget=budget, sleep=lambda s: None)
        connector.test_connection()

        with pytest.raises(CrmRateLimited):
            connector.test_connection()

        refused = budget.observed[1:]
        assert len(refused) == 5
        assert all(h["X-HubSpot-RateLimit-Remaining"] == "0" for h in refused)


class TestAuth:
    def test_a_bad_private_app_token_fails_at_once(self, sandbox, budget):
        credentials = HubSpotCredentials(
            access_token="pat-wrong", host=sandbox.base_url
        )

        with pytest.raises(CrmAuthError):
            HubSpotConnector(credentials, budget=budget).upsert(a_lead())

        assert budget.acquired == 1

    def test_an_expired_oauth_token_is_refreshed_once_and_the_call_replayed(
        self, sandbox
    ):
        connector = sandbox.oauth_connector()
        connector.test_connection()
        sandbox.http.post("/_sandbox/hubspot/oauth/expire").raise_for_status()

        (result,) = connector.upsert(a_lead())

        assert result.outcome == "created"
        assert sandbox.count(TOKEN) == 2
        assert sandbox.count(UPSERT) == 2

    def test_a_second_401_after_refreshing_is_an_auth_error(self, sandbox, budget):
        connector = sandbox.oauth_connector(budget=budget)
        connector.test_connection()
        sandbox.arm(path="batch/upsert", status=401, times=2)

        with pytest.raises(CrmAuthError):
            connector.upsert(a_lead())

        assert sandbox.count(TOKEN) == 2
        assert sandbox.count(UPSERT) == 0
        assert budget.acquired == 3

    def test_a_token_about_to_expire_is_refreshed_before_the_call(self, sandbox):
        sandbox.http.put(
            "/_sandbox/hubspot/oauth", json={"access_token_lifetime_seconds": 30}
        ).raise_for_status()
        connector = sandbox.oauth_connector()

        connector.test_connection()
        connector.test_connection()

        assert sandbox.count(TOKEN) == 2
        assert sandbox.count("GET /crm/v3/objects/contacts") == 2

    def test_a_refused_refresh_token_is_an_auth_error(self, sandbox):
        credentials = HubSpotCredentials(
            client_id="sandbox-hubspot-client-id",
            client_secret="sandbox-hubspot-client-secret",
            refresh_token="revoked",
            host=sandbox.base_url,
        )

        with pytest.raises(CrmAuthError, match="refresh token"):
            HubSpotConnector(credentials).test_connection()
