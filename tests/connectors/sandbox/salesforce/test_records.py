"""Leads, queries, collections, sessions and limits, through simple-salesforce."""

from __future__ import annotations

import json
from typing import Any

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from connectors.sandbox.salesforce import error_response

VALID = {"LastName": "Doe", "Company": "Acme (fake)", "Email": "jd@example.com"}


class TestCreate:
    def test_creates_a_lead_with_its_defaults(self, sf: Salesforce) -> None:
        created = sf.Lead.create(VALID)

        lead = sf.Lead.get(created["id"])
        assert created["success"] and created["id"].startswith("00Q")
        assert lead["attributes"]["type"] == "Lead"
        assert (lead["Status"], lead["HasOptedOutOfEmail"]) == (
            "Open - Not Contacted",
            False,
        )
        assert lead["CreatedDate"].endswith("+0000")

    @pytest.mark.parametrize(
        ("values", "code", "fields"),
        [
            (
                {"Email": "a@example.com"},
                "REQUIRED_FIELD_MISSING",
                ["LastName", "Company"],
            ),
            (VALID | {"LastName": ""}, "REQUIRED_FIELD_MISSING", ["LastName"]),
            (VALID | {"FirstName": "x" * 41}, "STRING_TOO_LONG", ["FirstName"]),
            (VALID | {"Email": "not an email"}, "INVALID_EMAIL_ADDRESS", ["Email"]),
            (
                VALID | {"LeadSource": "Webinarr"},
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                ["LeadSource"],
            ),
            (VALID | {"Nickname": "JD"}, "INVALID_FIELD", ["Nickname"]),
            (
                VALID | {"CreatedDate": "2024-01-01T00:00:00Z"},
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                ["CreatedDate"],
            ),
            (
                VALID | {"Captured_Date__c": "01/02/2024"},
                "JSON_PARSER_ERROR",
                ["Captured_Date__c"],
            ),
            (
                VALID | {"HasOptedOutOfEmail": "yes"},
                "JSON_PARSER_ERROR",
                ["HasOptedOutOfEmail"],
            ),
        ],
    )
    def test_refuses_invalid_values_naming_the_field(
        self, sf: Salesforce, values: dict[str, Any], code: str, fields: list[str]
    ) -> None:
        with pytest.raises(SalesforceMalformedRequest) as caught:
            sf.Lead.create(values)
        [error] = caught.value.content
        assert (error["errorCode"], error["fields"]) == (code, fields)

    def test_datetimes_need_a_zone(self, org: Any, sf: Salesforce) -> None:
        [lead_id] = org.seed(VALID)
        with pytest.raises(SalesforceMalformedRequest):
            sf.Lead.update(
                lead_id, {"Description": "x", "LastModifiedDate": "2024-01-01"}
            )
        assert org.state.salesforce.leads[lead_id]["Description"] is None


class TestRecordEndpoints:
    def test_updates_with_204_and_null_clears(self, sf: Salesforce) -> None:
        lead_id = sf.Lead.create(VALID | {"Title": "CTO"})["id"]

        assert sf.Lead.update(lead_id, {"Title": None, "City": "Tartu"}) == 204

        lead = sf.Lead.get(lead_id)
        assert (lead["Title"], lead["City"]) == (None, "Tartu")

    def test_deleted_leads_are_only_seen_by_query_all(self, sf: Salesforce) -> None:
        lead_id = sf.Lead.create(VALID)["id"]
        sf.Lead.delete(lead_id)

        assert sf.query("SELECT Id FROM Lead")["totalSize"] == 0
        assert sf.query("SELECT Id FROM Lead", include_deleted=True)["totalSize"] == 1
        with pytest.raises(SalesforceResourceNotFound):
            sf.Lead.get(lead_id)

    def test_upserts_by_a_percent_encoded_external_id(self, sf: Salesforce) -> None:
        created = sf.Lead.upsert("Web_Lead_Id__c/a%2Fb%25c", VALID, raw_response=True)
        updated = sf.Lead.upsert(
            "Web_Lead_Id__c/a%2Fb%25c", {"Title": "CTO"}, raw_response=True
        )

        assert (created.status_code, updated.status_code) == (201, 200)
        assert created.json()["created"] is True
        assert updated.json()["id"] == created.json()["id"]
        assert sf.Lead.get_by_custom_id("Web_Lead_Id__c", "a/b%c")["Title"] == "CTO"

    def test_an_unencoded_slash_names_no_record(self, sf: Salesforce) -> None:
        with pytest.raises(SalesforceResourceNotFound):
            sf.Lead.upsert("Web_Lead_Id__c/a/b", VALID)

    def test_an_external_id_on_several_leads_answers_300(
        self, org: Any, sf: Salesforce
    ) -> None:
        org.seed(VALID | {"Web_Lead_Id__c": "w-1"}, VALID | {"Web_Lead_Id__c": "W-1"})
        with pytest.raises(SalesforceMoreThanOneRecord) as caught:
            sf.Lead.upsert("Web_Lead_Id__c/w-1", {"Title": "x"})
        assert len(caught.value.content) == 2

    def test_describe_lists_each_field_with_its_rules(self, sf: Salesforce) -> None:
        fields = {field["name"]: field for field in sf.Lead.describe()["fields"]}

        assert fields["Company"]["length"] == 255 and not fields["Company"]["nillable"]
        assert fields["Status"]["defaultedOnCreate"]
        assert (
            fields["Web_Lead_Id__c"]["externalId"]
            and fields["Web_Lead_Id__c"]["unique"]
        )
        assert fields["LeadSource"]["restrictedPicklist"]
        assert fields["Email"]["type"] == "email"
        assert fields["IsConverted"]["createable"] is False


class TestQueries:
    def test_pages_with_next_records_url(self, org: Any, sf: Salesforce) -> None:
        org.seed(*(VALID | {"LastName": f"L{n}"} for n in range(5)))
        org.settings(page_size=2)

        first = sf.query("SELECT Id, LastName FROM Lead ORDER BY LastName")
        everything = sf.query_all("SELECT Id FROM Lead")

        assert (first["totalSize"], first["done"], len(first["records"])) == (
            5,
            False,
            2,
        )
        assert first["nextRecordsUrl"].startswith("/services/data/v59.0/query/")
        assert len(everything["records"]) == 5

    def test_a_doubled_quote_is_malformed(self, sf: Salesforce) -> None:
        with pytest.raises(SalesforceMalformedRequest) as caught:
            sf.query("SELECT Id FROM Lead WHERE LastName = 'O''Shea'")
        assert caught.value.content[0]["errorCode"] == "MALFORMED_QUERY"


class TestCollections:
    def records(self, *values: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"attributes": {"type": "Lead"}} | v for v in values]

    def test_all_or_none_rolls_back_the_valid_records(
        self, org: Any, sf: Salesforce
    ) -> None:
        body = {"allOrNone": True, "records": self.records(VALID, {"LastName": "B"})}

        results = sf.restful("composite/sobjects", method="POST", json=body)

        assert [r["errors"][0]["statusCode"] for r in results] == [
            "ALL_OR_NONE_OPERATION_ROLLED_BACK",
            "REQUIRED_FIELD_MISSING",
        ]
        assert org.state.salesforce.leads == {}

    def test_more_than_200_records_are_refused(self, sf: Salesforce) -> None:
        body = {"allOrNone": False, "records": self.records(*[VALID] * 201)}
        with pytest.raises(SalesforceMalformedRequest) as caught:
            sf.restful("composite/sobjects", method="POST", json=body)
        assert caught.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"

    def test_upsert_by_external_id_answers_in_request_order(
        self, sf: Salesforce
    ) -> None:
        sf.Lead.upsert("Web_Lead_Id__c/w-2", VALID)
        body = {
            "allOrNone": False,
            "records": self.records(
                VALID | {"Web_Lead_Id__c": "w-1"},
                {"Web_Lead_Id__c": "w-2", "Title": "CTO"},
                {"Web_Lead_Id__c": "w-3", "LastName": "x" * 81, "Company": "C"},
            ),
        }

        results = sf.restful(
            "composite/sobjects/Lead/Web_Lead_Id__c", method="PATCH", json=body
        )

        assert [(r["success"], r.get("created")) for r in results] == [
            (True, True),
            (True, False),
            (False, None),
        ]
        assert results[2]["errors"][0]["statusCode"] == "STRING_TOO_LONG"

    def test_the_duplicate_rule_names_the_matching_lead(
        self, org: Any, sf: Salesforce
    ) -> None:
        [existing] = org.seed(VALID | {"Email": "Rosa.Ilves@example.com"})
        org.settings(duplicate_rule=True)

        with pytest.raises(SalesforceMalformedRequest) as caught:
            sf.Lead.create(VALID | {"Email": "rosa.ilves@example.com"})

        [error] = caught.value.content
        assert error["errorCode"] == "DUPLICATES_DETECTED"
        match = error["duplicateResult"]["matchResults"][0]["matchRecords"][0]
        assert match["record"]["Id"] == existing


class TestSessionsAndLimits:
    def test_an_unknown_token_answers_401_as_an_array(self, org: Any) -> None:
        sf = org.salesforce(session_id="00D000000000001!forged")
        with pytest.raises(SalesforceExpiredSession) as caught:
            sf.query("SELECT Id FROM Lead")
        assert caught.value.content[0]["errorCode"] == "INVALID_SESSION_ID"

    def test_expired_sessions_are_refused(self, org: Any, sf: Salesforce) -> None:
        org.http.post("/_sandbox/salesforce/sessions/expire", json={})
        with pytest.raises(SalesforceExpiredSession):
            sf.limits()

    def test_every_response_reports_usage_and_a_spent_allocation_refuses(
        self, org: Any, sf: Salesforce
    ) -> None:
        org.settings(daily_allocation=3)
        sf.limits()
        with pytest.raises(SalesforceMalformedRequest):
            sf.Lead.create({})
        assert sf.api_usage["api-usage"].used == 1
        limits = sf.limits()
        assert limits["DailyApiRequests"] == {"Max": 3, "Remaining": 0}

        with pytest.raises(SalesforceRefusedRequest) as caught:
            sf.limits()

        assert caught.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
        assert "TotalRequests" in caught.value.content[0]["message"]

    def test_token_errors_are_oauth_shaped(self, org: Any) -> None:
        refused = org.http.post(
            "/services/oauth2/token",
            data={"grant_type": "password", "client_id": "nope", "username": "u"},
        )
        unsupported = org.http.post(
            "/services/oauth2/token", data={"grant_type": "authorization_code"}
        )

        assert refused.status_code == unsupported.status_code == 400
        assert refused.json()["error"] == "invalid_client_id"
        assert unsupported.json()["error"] == "unsupported_grant_type"

    def test_the_token_names_the_sandbox_as_instance(self, org: Any) -> None:
        token = org.token()
        assert token["instance_url"] == org.base_url
        assert {"access_token", "id", "token_type", "issued_at", "signature"} <= set(
            token
        )


class TestErrorResponse:
    @pytest.mark.parametrize(
        ("status", "code"),
        [
            (400, "MALFORMED_QUERY"),
            (401, "INVALID_SESSION_ID"),
            (403, "REQUEST_LIMIT_EXCEEDED"),
            (500, "UNKNOWN_EXCEPTION"),
            (503, "SERVER_UNAVAILABLE"),
        ],
    )
    def test_is_an_array_with_the_code_of_the_status(
        self, status: int, code: str
    ) -> None:
        response = error_response(status, "fault injected")
        assert response.status_code == status
        body = json.loads(bytes(response.body))
        assert body == [
            {"message": body[0]["message"], "errorCode": code, "fields": []}
        ]
