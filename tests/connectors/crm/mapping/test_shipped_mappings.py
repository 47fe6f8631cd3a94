"""The mapping files shipped in `config/crm/`: they load, fit the sandboxes, and map
a realistic lead to exactly the record expected."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import pytest

from connectors.crm.mapping import CrmMapping, apply_policies, check_mapping
from connectors.crm.protocol import CrmField, CrmSnapshot

LEAD_ID = "7c1e5d2a-4b8f-4e0a-9c3d-2f6b8a1e4d70"


@pytest.fixture
def lead(make_lead: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """A lead as intake stores it: cleaned, scored, captured in California."""
    return make_lead(
        id=LEAD_ID,
        email="ada.lovelace@analytical.example",
        email_display="Ada.Lovelace@Analytical.example",
        phone="+14155550123",
        phone_raw="(415) 555-0123",
        first_name="Ada",
        last_name="Lovelace",
        company="Analytical Engines Ltd",
        job_title="VP Engineering",
        website="https://analytical.example",
        street="1 Market St",
        city="San Francisco",
        state="CA",
        postal_code="94105",
        country="US",
        timezone="America/Los_Angeles",
        notes="Asked for a demo of the scheduling module.",
        source="Web Form",
        status="new",
        score=87,
        score_reasons=["title_seniority:vp +20", "source=Web Form +"],
        custom={"industry": "Software", "employees": "51-200"},
        captured_at=datetime(2024, 3, 10, 5, 30, tzinfo=UTC),
        created_at=datetime(2024, 3, 10, 5, 31, tzinfo=UTC),
        updated_at=datetime(2024, 3, 10, 5, 31, tzinfo=UTC),
    )


class TestHubSpot:
    def test_fits_the_sandbox_contact_properties(
        self, hubspot_mapping: CrmMapping, hubspot_fields: list[CrmField]
    ) -> None:
        assert hubspot_mapping.provider == "hubspot"
        assert check_mapping(hubspot_mapping, hubspot_fields, key_field="email") == []

    def test_maps_a_lead_to_exactly_the_expected_contact(
        self,
        hubspot_mapping: CrmMapping,
        hubspot_fields: list[CrmField],
        lead: dict[str, Any],
    ) -> None:
        crm_fields = {field.name: field for field in hubspot_fields}

        mapped = hubspot_mapping.apply(lead, crm_fields=crm_fields)

        assert mapped.fields == {
            "firstname": "Ada",
            "lastname": "Lovelace",
            "company": "Analytical Engines Ltd",
            "phone": "+14155550123",
            "jobtitle": "VP Engineering",
            "website": "https://analytical.example",
            "address": "1 Market St",
            "city": "San Francisco",
            "state": "CA",
            "zip": "94105",
            "country": "US",
            "message": "Asked for a demo of the scheduling module.",
            "lifecyclestage": "lead",
            "lead_score": 87,
            "lead_source": "Web Form",
            "orchestrator_lead_id": LEAD_ID,
            # 05:30 UTC on the 10th is still the 9th in California.
            "lead_captured_date": date(2024, 3, 9),
        }
        assert mapped.warnings == []

    def test_sets_the_lifecycle_stage_only_on_create(
        self, hubspot_mapping: CrmMapping, lead: dict[str, Any]
    ) -> None:
        mapped = hubspot_mapping.apply(lead)
        existing = CrmSnapshot(
            crm_id="501",
            key="ada.lovelace@analytical.example",
            fields={"lifecyclestage": "customer"},
        )

        assert hubspot_mapping.needs_current_record
        assert hubspot_mapping.fields_to_read == ("lifecyclestage",)
        assert apply_policies(mapped.fields, hubspot_mapping, None) == mapped.fields
        assert "lifecyclestage" not in apply_policies(
            mapped.fields, hubspot_mapping, existing
        )

    def test_unsubscribes_a_lead_that_opted_out_from_the_marketing_type(
        self, hubspot_mapping: CrmMapping, make_lead: Callable[..., dict[str, Any]]
    ) -> None:
        rule = hubspot_mapping.unsubscribes

        assert rule is not None
        # The account's one marketing type, found when first needed.
        assert rule.subscription_id is None
        assert rule.applies_to(make_lead(email_opt_out=True))
        assert not rule.applies_to(make_lead(email_opt_out=False))


class TestSalesforce:
    def test_fits_the_sandbox_lead_fields(
        self, salesforce_mapping: CrmMapping, salesforce_fields: list[CrmField]
    ) -> None:
        assert salesforce_mapping.provider == "salesforce"
        assert (
            check_mapping(
                salesforce_mapping, salesforce_fields, key_field="Web_Lead_Id__c"
            )
            == []
        )

    def test_maps_a_lead_to_exactly_the_expected_lead(
        self,
        salesforce_mapping: CrmMapping,
        salesforce_by_name: dict[str, CrmField],
        lead: dict[str, Any],
    ) -> None:
        mapped = salesforce_mapping.apply(lead, crm_fields=salesforce_by_name)

        assert mapped.fields == {
            "FirstName": "Ada",
            "LastName": "Lovelace",
            "Company": "Analytical Engines Ltd",
            "Email": "ada.lovelace@analytical.example",
            "Phone": "+14155550123",
            "Title": "VP Engineering",
            "Website": "https://analytical.example",
            "Street": "1 Market St",
            "City": "San Francisco",
            "State": "CA",
            "PostalCode": "94105",
            "Country": "US",
            "Description": "Asked for a demo of the scheduling module.",
            "LeadSource": "Web",
            "Lead_Score__c": 87,
            "Captured_Date__c": date(2024, 3, 9),
        }
        assert mapped.warnings == []

    def test_fills_the_required_fields_of_a_sparse_lead(
        self,
        salesforce_mapping: CrmMapping,
        salesforce_by_name: dict[str, CrmField],
        make_lead: Callable[..., dict[str, Any]],
    ) -> None:
        lead = make_lead(email="someone@example.com", first_name="  ", source="api")

        mapped = salesforce_mapping.apply(lead, crm_fields=salesforce_by_name)

        assert mapped.fields == {
            "LastName": "[not provided]",
            "Company": "[not provided]",
            "Email": "someone@example.com",
            "LeadSource": "Other",
        }

    @pytest.mark.parametrize(
        ("source", "option"),
        [
            ("webform", "Web"),
            ("Website", "Web"),
            ("form", "Web"),
            ("WEBINAR", "Webinar"),
            ("referral", "Partner Referral"),
            ("Partner", "Partner Referral"),
            ("phone", "Phone Inquiry"),
            ("Purchased List", "Purchased List"),
            ("import", "Purchased List"),
            ("webhook:typeform", "Other"),
        ],
    )
    def test_maps_common_source_words_to_a_lead_source(
        self,
        salesforce_mapping: CrmMapping,
        make_lead: Callable[..., dict[str, Any]],
        source: str,
        option: str,
    ) -> None:
        mapped = salesforce_mapping.apply(make_lead(source=source))

        assert mapped.fields["LeadSource"] == option

    def test_cuts_long_names_at_the_field_length_and_says_so(
        self,
        salesforce_mapping: CrmMapping,
        salesforce_by_name: dict[str, CrmField],
        make_lead: Callable[..., dict[str, Any]],
    ) -> None:
        lead = make_lead(first_name="A" * 60, city="C" * 41)

        mapped = salesforce_mapping.apply(lead, crm_fields=salesforce_by_name)

        assert mapped.fields["FirstName"] == "A" * 40
        assert mapped.fields["City"] == "C" * 40
        assert mapped.warnings == ["truncated:FirstName", "truncated:City"]

    def test_writes_everything_on_every_sync(
        self, salesforce_mapping: CrmMapping
    ) -> None:
        assert not salesforce_mapping.needs_current_record

    def test_marks_a_lead_that_opted_out(
        self, salesforce_mapping: CrmMapping, make_lead: Callable[..., dict[str, Any]]
    ) -> None:
        mapped = salesforce_mapping.apply(make_lead(email_opt_out=True))
        existing = CrmSnapshot(
            crm_id="00Q1", key="ada@example.com", fields={"LastName": "Lovelace"}
        )

        assert mapped.fields["HasOptedOutOfEmail"] is True
        assert apply_policies(mapped.fields, salesforce_mapping, existing)[
            "HasOptedOutOfEmail"
        ]
        assert salesforce_mapping.unsubscribes is None

    def test_never_clears_an_opt_out_for_a_lead_that_has_none(
        self, salesforce_mapping: CrmMapping, make_lead: Callable[..., dict[str, Any]]
    ) -> None:
        mapped = salesforce_mapping.apply(make_lead(email_opt_out=False))

        assert mapped.fields["HasOptedOutOfEmail"] is False
        assert "HasOptedOutOfEmail" not in apply_policies(
            mapped.fields, salesforce_mapping, None
        )
