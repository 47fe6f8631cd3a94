"""The connector as the rest of the product sees it: protocol, fields, connection."""

from __future__ import annotations

from typing import Any

from connectors.crm.protocol import CrmConnector


class TestProtocol:
    def test_keys_by_external_id_when_one_is_configured(self, sandbox: Any) -> None:
        connector = sandbox.connector(external_id_field="Web_Lead_Id__c")
        assert (connector.key_field, connector.key_source) == (
            "Web_Lead_Id__c",
            "lead_id",
        )

    def test_keys_by_email_otherwise(self, sandbox: Any) -> None:
        connector: CrmConnector = sandbox.connector()
        assert (connector.provider, connector.batch_size) == ("salesforce", 200)
        assert (connector.key_field, connector.key_source) == ("Email", "email")

    def test_an_empty_upsert_makes_no_call(self, sandbox: Any) -> None:
        assert sandbox.connector().upsert([]) == []
        assert sandbox.requests() == {}


class TestFields:
    def test_lists_the_lead_fields_from_describe(self, sandbox: Any) -> None:
        fields = {field.name: field for field in sandbox.connector().list_fields()}

        assert {"LastName", "Company", "Email", "Web_Lead_Id__c"} <= set(fields)
        required = {name for name, field in fields.items() if field.required}
        assert required == {"LastName", "Company"}
        assert fields["LastName"].length == 80
        assert fields["LeadSource"].picklist == (
            "Web",
            "Phone Inquiry",
            "Partner Referral",
            "Purchased List",
            "Webinar",
            "Other",
        )
        assert fields["Web_Lead_Id__c"].external_id and fields["Web_Lead_Id__c"].unique
        assert not fields["CreatedDate"].createable
        assert not fields["Status"].required


class TestConnection:
    def test_reports_the_instance_and_daily_requests(self, sandbox: Any) -> None:
        sandbox.settings(daily_allocation=15000, api_usage=17)

        info = sandbox.connector().test_connection()

        assert info.provider == "salesforce"
        assert info.account == sandbox.base_url
        assert info.detail == {
            "daily_requests_max": 15000,
            "daily_requests_remaining": 15000 - 18,
        }
