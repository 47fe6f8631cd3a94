"""Sessions, re-login, retries and the API allocation, as the connector meets them."""

from __future__ import annotations

from contextlib import closing
from typing import Any

import pytest

from connectors.crm.errors import CrmAuthError, CrmDailyLimitReached, CrmUnavailable
from connectors.crm.protocol import CrmRecord
from connectors.crm.salesforce import SalesforceConnector, SalesforceCredentials
from connectors.crm.salesforce.client import SalesforceSession
from connectors.sandbox.salesforce import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_PASSWORD,
    SANDBOX_USERNAME,
)
from connectors.sandbox.server import running_sandbox

CREATE_PATH = r"/sobjects/Lead/$"


def sf01_record(cases: Any) -> CrmRecord:
    lead = cases("SF-01")["input"]["lead"]
    return CrmRecord(
        ref="lead-sf01",
        key=lead["Email"],
        fields={name: value for name, value in lead.items() if name != "Email"},
    )


def password_connector(sandbox: Any, **options: Any) -> Any:
    # SF-01's worker logs in with the password flow.
    return sandbox.connector(
        flow="password",
        username=SANDBOX_USERNAME,
        password=SANDBOX_PASSWORD,
        **options,
    )


class TestExpiredSession:
    """SF-01: a session that expired mid-run is renewed once, never looped on."""

    def test_logs_in_again_once_and_replays_the_create(
        self, sandbox: Any, cases: Any
    ) -> None:
        connector = password_connector(sandbox)
        connector.test_connection()
        sandbox.arm(method="POST", path=CREATE_PATH, status=401, times=1)

        [result] = connector.upsert([sf01_record(cases)])

        assert result.outcome == "created"
        assert result.crm_id == sandbox.lead(Email="mara.quill@example.com")["Id"]
        assert len(sandbox.leads()) == 1
        counts = sandbox.requests()
        assert counts["token"] == 2
        # One create met the injected 401 (the fault is used up), one reached
        # the sandbox.
        assert sandbox.faults() == []
        assert counts["create"] == 1

    def test_a_second_401_after_logging_in_again_is_an_auth_error(
        self, sandbox: Any, cases: Any
    ) -> None:
        connector = password_connector(sandbox)
        connector.test_connection()
        sandbox.arm(method="POST", path=CREATE_PATH, status=401, times=5)

        with pytest.raises(CrmAuthError) as caught:
            connector.upsert([sf01_record(cases)])

        assert caught.value.code == "auth"
        [fault] = sandbox.faults()
        assert fault["times"] - fault["left"] == 2
        assert sandbox.requests()["token"] == 2
        assert sandbox.leads() == []

    def test_sessions_the_org_expired_are_renewed_with_the_configured_flow(
        self, sandbox: Any
    ) -> None:
        connector = sandbox.connector(external_id_field="Web_Lead_Id__c")
        connector.test_connection()
        sandbox.http.post("/_sandbox/salesforce/sessions/expire", json={})

        [result] = connector.upsert(
            [CrmRecord("l1", "w-1", {"LastName": "Quill", "Company": "Q"})]
        )

        assert result.outcome == "created"
        counts = sandbox.requests()
        assert (counts["token"], counts["upsert"]) == (2, 2)

    def test_sessions_dead_on_arrival_end_in_an_auth_error(self, sandbox: Any) -> None:
        connector = sandbox.connector(external_id_field="Web_Lead_Id__c")
        connector.test_connection()
        sandbox.http.post(
            "/_sandbox/salesforce/sessions/expire", json={"include_new": True}
        )

        with pytest.raises(CrmAuthError):
            connector.upsert(
                [CrmRecord("l1", "w-1", {"LastName": "Q", "Company": "Q"})]
            )

        counts = sandbox.requests()
        assert (counts["token"], counts["upsert"]) == (2, 2)


class TestRetries:
    def test_retries_a_503_then_succeeds(self, sandbox: Any, sleep: Any) -> None:
        connector = sandbox.connector(external_id_field="Web_Lead_Id__c", sleep=sleep)
        sandbox.arm(method="PATCH", path="/composite/sobjects/Lead/", status=503)
        records = [
            CrmRecord(f"l{n}", f"w-{n}", {"LastName": "Q", "Company": "Q"})
            for n in range(2)
        ]

        results = connector.upsert(records)

        assert [result.outcome for result in results] == ["created", "created"]
        assert len(sleep.waits) == 1
        assert len(sandbox.leads()) == 2

    def test_a_create_that_timed_out_is_not_sent_again(
        self, sandbox: Any, sleep: Any
    ) -> None:
        connector = sandbox.connector(timeout_seconds=0.5, sleep=sleep)
        connector.test_connection()
        sandbox.arm(method="POST", path=CREATE_PATH, delay_seconds=1.5)

        with pytest.raises(CrmUnavailable) as caught:
            connector.upsert([CrmRecord("l1", "a@example.com", {"LastName": "Q"})])

        assert sleep.waits == []
        assert "did not answer create lead in time" in str(caught.value)

    def test_an_unreachable_org_is_unavailable(self, sandbox: Any, sleep: Any) -> None:
        connector = sandbox.connector(
            token_url="http://127.0.0.1:9/services/oauth2/token", sleep=sleep
        )
        with pytest.raises(CrmUnavailable) as caught:
            connector.test_connection()
        assert len(sleep.waits) == 4
        assert "127.0.0.1:9 could not be reached" in str(caught.value)
        assert "in time" not in str(caught.value)

    def test_an_instance_that_went_away_is_unreachable_not_slow(
        self, sleep: Any
    ) -> None:
        with running_sandbox() as (base_url, _):
            credentials = SalesforceCredentials(
                flow="client_credentials",
                token_url=f"{base_url}/services/oauth2/token",
                client_id=SANDBOX_CLIENT_ID,
                client_secret=SANDBOX_CLIENT_SECRET,
            )
            connector = SalesforceConnector(credentials, sleep=sleep)
            connector.test_connection()

        with closing(connector), pytest.raises(CrmUnavailable) as caught:
            connector.list_fields()

        assert len(sleep.waits) == 4
        message = str(caught.value)
        host = base_url.removeprefix("http://")
        assert f"Salesforce at {host} could not be reached for describe lead" in (
            message
        )
        assert "in time" not in message


class TestAllocation:
    def test_a_spent_daily_allocation_raises_daily_limit_reached(
        self, sandbox: Any, sleep: Any
    ) -> None:
        connector = sandbox.connector(sleep=sleep)
        sandbox.settings(daily_allocation=10, api_usage=10)

        with pytest.raises(CrmDailyLimitReached) as caught:
            connector.test_connection()

        assert caught.value.code == "rate_limited_daily"
        assert sleep.waits == []

    def test_the_budget_sees_every_responses_limit_info(
        self, sandbox: Any, budget: Any
    ) -> None:
        sandbox.settings(daily_allocation=5000, api_usage=25)
        connector = sandbox.connector(budget=budget)

        connector.test_connection()
        connector.list_fields()

        usage = [
            h["Sforce-Limit-Info"] for h in budget.observed if "Sforce-Limit-Info" in h
        ]
        assert usage == ["api-usage=26/5000", "api-usage=27/5000"]
        assert budget.acquired == 2


class TestSession:
    def test_rewrites_https_only_for_a_loopback_instance(self) -> None:
        session = SalesforceSession(timeout=1, on_headers=lambda headers: None)
        session.route_to("https://acme.my.salesforce.com")
        assert session.loopback_instance is None
        assert session.trust_env

        session.route_to("http://127.0.0.1:8100")
        assert session.loopback_instance == "127.0.0.1:8100"
        session.close()
