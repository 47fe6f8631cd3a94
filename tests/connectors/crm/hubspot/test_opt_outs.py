"""Opt-outs: a contact written, then its address unsubscribed, or the record failed."""

from __future__ import annotations

import pytest

from connectors.crm.errors import CrmDailyLimitReached
from connectors.crm.mapping import OptOut
from connectors.crm.protocol import CrmRecord
from connectors.sandbox.hubspot.subscriptions import Definition

UPSERT = "POST /crm/v3/objects/contacts/batch/upsert"
UNSUBSCRIBE = "POST /communication-preferences/v3/unsubscribe"
DEFINITIONS = "GET /communication-preferences/v3/definitions"


def opted_out(ref: str, email: str, **fields) -> CrmRecord:
    return CrmRecord(ref=ref, key=email, fields=fields, unsubscribe=True)


def unsubscribed(sandbox) -> list[tuple[str, str]]:
    listed = sandbox.http.get("/_sandbox/hubspot/subscriptions").json()
    return [(item["email"], item["subscription_id"]) for item in listed]


class TestUnsubscribing:
    def test_writes_the_contact_then_unsubscribes_it_from_the_marketing_type(
        self, sandbox, budget
    ):
        connector = sandbox.connector(budget=budget)

        (result,) = connector.upsert([opted_out("l1", "ada@example.com")])

        assert (result.ref, result.outcome, result.failure) == ("l1", "created", None)
        assert unsubscribed(sandbox) == [("ada@example.com", "1001")]
        contact = sandbox.contacts()["ada@example.com"]
        assert contact["properties"]["hs_email_optout"] == "true"
        # The write, the one look-up of the types, the unsubscribe: each
        # drawn from the budget.
        assert budget.acquired == 3
        assert sandbox.count(DEFINITIONS) == 1

    def test_looks_the_subscription_type_up_once_per_connector(self, sandbox):
        connector = sandbox.connector()

        connector.upsert([opted_out("l1", "ada@example.com")])
        connector.upsert([opted_out("l2", "grace@example.com")])

        assert sandbox.count(DEFINITIONS) == 1
        assert sandbox.count(UNSUBSCRIBE) == 2

    def test_a_configured_type_needs_no_look_up_and_carries_the_legal_basis(
        self, sandbox
    ):
        rule = OptOut(
            subscription_id="1002",
            legal_basis="LEGITIMATE_INTEREST_OTHER",
            legal_basis_explanation="Asked us to stop.",
        )

        sandbox.connector(opt_out=rule).upsert([opted_out("l1", "ada@example.com")])

        assert sandbox.count(DEFINITIONS) == 0
        [sent] = sandbox.bodies(UNSUBSCRIBE)
        assert sent == {
            "emailAddress": "ada@example.com",
            "subscriptionId": "1002",
            "legalBasis": "LEGITIMATE_INTEREST_OTHER",
            "legalBasisExplanation": "Asked us to stop.",
        }

    def test_a_record_not_opted_out_makes_no_preferences_call(self, sandbox):
        sandbox.connector().upsert([CrmRecord("l1", "ada@example.com", {})])

        assert not [
            route
            for route in sandbox.received()["counts"]
            if "/communication-preferences/" in route
        ]

    def test_an_address_already_unsubscribed_is_a_success(self, sandbox):
        connector = sandbox.connector()
        connector.upsert([opted_out("l1", "ada@example.com")])

        (again,) = connector.upsert([opted_out("l1", "ada@example.com", city="Oslo")])

        assert (again.outcome, again.failure) == ("updated", None)
        assert sandbox.count(UNSUBSCRIBE) == 2
        assert unsubscribed(sandbox) == [("ada@example.com", "1001")]

    def test_two_records_of_one_address_unsubscribe_it_once(self, sandbox):
        results = sandbox.connector().upsert(
            [
                CrmRecord("l1", "ada@example.com", {"city": "Oslo"}),
                opted_out("l2", "Ada@Example.com"),
            ]
        )

        assert [r.outcome for r in results] == ["created", "created"]
        assert sandbox.count(UNSUBSCRIBE) == 1


class TestFailures:
    def test_a_refused_unsubscribe_fails_the_record_with_the_vendors_reason(
        self, sandbox
    ):
        connector = sandbox.connector(opt_out=OptOut(subscription_id="999"))

        (result,) = connector.upsert([opted_out("l1", "ada@example.com")])

        assert result.outcome == "failed"
        assert result.crm_id == sandbox.contacts()["ada@example.com"]["id"]
        assert result.failure.code == "VALIDATION_ERROR"
        assert not result.failure.retryable
        assert "opt-out was not" in result.failure.message
        assert "Subscription 999 does not exist" in result.failure.message

    def test_an_unsubscribe_still_down_after_retries_may_succeed_later(
        self, sandbox, sleep
    ):
        sandbox.arm(path="/unsubscribe", status=503, times=5)

        (result,) = sandbox.connector(sleep=sleep).upsert(
            [opted_out("l1", "ada@example.com")]
        )

        assert (result.outcome, result.failure.code) == ("failed", "unavailable")
        assert result.failure.retryable
        assert len(sleep.waits) == 4

    def test_only_the_record_whose_unsubscribe_failed_fails(self, sandbox):
        sandbox.arm(path="/unsubscribe", status=403)

        results = sandbox.connector().upsert(
            [CrmRecord("l1", "ada@example.com", {}), opted_out("l2", "bo@example.com")]
        )

        assert [r.outcome for r in results] == ["created", "failed"]
        assert results[1].failure.code == "auth"
        assert "communication_preferences.read_write" in results[1].failure.message

    def test_a_spent_daily_limit_stops_the_whole_upsert(self, sandbox):
        sandbox.arm(
            path="/unsubscribe",
            status=429,
            body={
                "status": "error",
                "message": "You have reached your daily limit.",
                "errorType": "RATE_LIMIT",
                "policyName": "DAILY",
            },
        )

        with pytest.raises(CrmDailyLimitReached):
            sandbox.connector().upsert([opted_out("l1", "ada@example.com")])


class TestWhichType:
    @pytest.mark.parametrize(
        ("definitions", "found"),
        [
            ([], "none is"),
            (
                [
                    Definition("1", "Marketing Information", "", "Marketing"),
                    Definition("2", "Newsletter", "", "Marketing"),
                ],
                "2 are",
            ),
        ],
    )
    def test_without_one_marketing_type_the_record_fails_naming_the_setting(
        self, sandbox, definitions, found
    ):
        sandbox.state.hubspot.subscriptions.definitions = definitions
        connector = sandbox.connector()

        (first,) = connector.upsert([opted_out("l1", "ada@example.com")])
        (second,) = connector.upsert([opted_out("l2", "bo@example.com")])

        assert first.outcome == second.outcome == "failed"
        assert first.failure.code == "config" and not first.failure.retryable
        assert f"of the account's active types {found} for marketing" in (
            first.failure.message
        )
        assert "set `opt_out.subscription_id` in the HubSpot mapping" in (
            first.failure.message
        )
        # Asked once: the answer does not change within a run.
        assert sandbox.count(DEFINITIONS) == 1
        assert sandbox.count(UNSUBSCRIBE) == 0

    def test_an_internal_or_inactive_marketing_type_is_not_chosen(self, sandbox):
        sandbox.state.hubspot.subscriptions.definitions = [
            Definition("1", "Internal", "", "Marketing", is_internal=True),
            Definition("2", "Old", "", "Marketing", is_active=False),
            Definition("3", "Marketing Information", "", "Marketing"),
        ]

        sandbox.connector().upsert([opted_out("l1", "ada@example.com")])

        assert unsubscribed(sandbox) == [("ada@example.com", "3")]
