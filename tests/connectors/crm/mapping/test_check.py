"""Checking a mapping against a CRM's fields: every problem, named by field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from connectors.crm.mapping import CrmMapping, MappingProblem, check_mapping
from connectors.crm.protocol import CrmField

# A Salesforce mapping with nothing wrong, for each test to spoil one thing of.
VALID: dict[str, dict[str, Any]] = {
    "LastName": {"source": "last_name", "fallback": "[not provided]"},
    "Company": {"source": "company", "fallback": "[not provided]"},
}


@pytest.fixture
def problems_of(
    mapping_of: Callable[..., CrmMapping], salesforce_fields: list[CrmField]
) -> Callable[..., list[MappingProblem]]:
    """The problems of VALID plus `fields`, against the Salesforce Lead."""

    def check(
        fields: dict[str, dict[str, Any]], key_field: str = "Web_Lead_Id__c"
    ) -> list[MappingProblem]:
        mapping = mapping_of({**VALID, **fields})
        return check_mapping(mapping, salesforce_fields, key_field=key_field)

    return check


def _only(problems: list[MappingProblem]) -> MappingProblem:
    assert len(problems) == 1, problems
    return problems[0]


def test_a_mapping_that_fits_has_no_problems(
    problems_of: Callable[..., list[MappingProblem]],
) -> None:
    assert problems_of({"Title": {"source": "job_title"}}) == []


class TestFieldsTheCrmLacks:
    def test_names_a_missing_field_and_the_closest_ones(
        self, problems_of: Callable[..., list[MappingProblem]]
    ) -> None:
        problem = _only(problems_of({"Lead_Scor__c": {"source": "score"}}))

        assert problem.field == "Lead_Scor__c"
        assert problem.code == "unknown_field"
        assert problem.message == (
            "Lead_Scor__c is not a field of the CRM object (did you mean "
            "Lead_Score__c?); fix the name or create the field in the CRM"
        )

    def test_suggests_the_crm_spelling_of_a_name_in_another_case(
        self, problems_of: Callable[..., list[MappingProblem]]
    ) -> None:
        problem = _only(problems_of({"firstname": {"source": "first_name"}}))

        assert "(did you mean FirstName?)" in problem.message


class TestWritability:
    def test_refuses_a_read_only_field(
        self, problems_of: Callable[..., list[MappingProblem]]
    ) -> None:
        problem = _only(problems_of({"IsConverted": {"constant": False}}))

        assert (problem.field, problem.code) == ("IsConverted", "read_only")
        assert problem.message == (
            "IsConverted is read-only in the CRM; remove it from the mapping"
        )

    def test_refuses_a_field_that_cannot_be_set_on_create(
        self,
        mapping_of: Callable[..., CrmMapping],
        salesforce_fields: list[CrmField],
    ) -> None:
        fields = [
            *salesforce_fields,
            CrmField(name="Stage__c", label="Stage", type="string", createable=False),
        ]
        mapping = mapping_of({**VALID, "Stage__c": {"constant": "x"}})

        problem = _only(check_mapping(mapping, fields, key_field="Web_Lead_Id__c"))

        assert (problem.field, problem.code) == ("Stage__c", "not_createable")
        assert "Stage__c cannot be set when a record is created" in problem.message

    def test_asks_for_never_overwrite_on_a_field_set_only_on_create(
        self,
        mapping_of: Callable[..., CrmMapping],
        salesforce_fields: list[CrmField],
    ) -> None:
        fields = [
            *salesforce_fields,
            CrmField(name="First__c", label="First", type="string", updateable=False),
        ]
        always = mapping_of({**VALID, "First__c": {"source": "source"}})
        on_create = mapping_of(
            {**VALID, "First__c": {"source": "source", "policy": "never_overwrite"}}
        )

        problem = _only(check_mapping(always, fields, key_field="Web_Lead_Id__c"))

        assert (problem.field, problem.code) == ("First__c", "not_updateable")
        assert "add `policy: never_overwrite`" in problem.message
        assert check_mapping(on_create, fields, key_field="Web_Lead_Id__c") == []


class TestTypes:
    @pytest.mark.parametrize(
        ("field", "rule", "fix"),
        [
            ("Lead_Score__c", {"source": "score"}, "number"),
            (
                "HasOptedOutOfEmail",
                {"source": "custom.o", "transform": "text"},
                "boolean",
            ),
            (
                "Captured_Date__c",
                {"source": "captured_at", "transform": "datetime"},
                "date",
            ),
            ("Rating", {"source": "custom.rating"}, "picklist"),
            ("Title", {"source": "custom.t", "transform": "boolean"}, "text"),
        ],
    )
    def test_refuses_a_transform_that_does_not_fit_the_field(
        self,
        problems_of: Callable[..., list[MappingProblem]],
        field: str,
        rule: dict[str, Any],
        fix: str,
    ) -> None:
        problem = _only(problems_of({field: rule}))

        assert (problem.field, problem.code) == (field, "type_mismatch")
        assert problem.message.startswith(f"{field} is a ")
        assert problem.message.endswith(f"use `transform: {fix}`")

    @pytest.mark.parametrize(
        ("field", "rule"),
        [
            ("Title", {"source": "score", "transform": "number"}),
            ("Title", {"source": "source", "transform": "picklist", "default": "Web"}),
            ("Lead_Score__c", {"source": "score", "transform": "number"}),
            ("Captured_Date__c", {"source": "captured_at", "transform": "date"}),
            ("HasOptedOutOfEmail", {"source": "custom.o", "transform": "boolean"}),
            ("Rating", {"constant": "Hot"}),
            ("Rating", {"constant": ""}),
        ],
    )
    def test_accepts_a_transform_that_fits_the_field(
        self,
        problems_of: Callable[..., list[MappingProblem]],
        field: str,
        rule: dict[str, Any],
    ) -> None:
        assert problems_of({field: rule}) == []

    def test_refuses_a_constant_of_another_type(
        self, problems_of: Callable[..., list[MappingProblem]]
    ) -> None:
        problem = _only(problems_of({"HasOptedOutOfEmail": {"constant": "no"}}))

        assert (problem.field, problem.code) == ("HasOptedOutOfEmail", "type_mismatch")
        assert problem.message == (
            "HasOptedOutOfEmail is a boolean field; the constant 'no' is text; "
            "give true or false"
        )

    def test_refuses_a_fallback_of_another_type(
        self, problems_of: Callable[..., list[MappingProblem]]
    ) -> None:
        problem = _only(
            problems_of(
                {
                    "Lead_Score__c": {
                        "source": "score",
                        "transform": "number",
                        "fallback": "none",
                    }
                }
            )
        )

        assert (problem.field, problem.code) == ("Lead_Score__c", "type_mismatch")
        assert "the fallback 'none' is text; give a number" in problem.message

    def test_does_not_judge_a_type_it_does_not_know(
        self,
        mapping_of: Callable[..., CrmMapping],
        salesforce_fields: list[CrmField],
    ) -> None:
        fields = [
            *salesforce_fields,
            CrmField(name="Geo__c", label="Geo", type="location"),
        ]
        mapping = mapping_of({**VALID, "Geo__c": {"source": "city"}})

        assert check_mapping(mapping, fields, key_field="Web_Lead_Id__c") == []


class TestPicklistValues:
    def test_names_a_mapped_value_that_is_not_an_option(
        self, problems_of: Callable[..., list[MappingProblem]]
    ) -> None:
        problem = _only(
            problems_of(
                {
                    "LeadSource": {
                        "source": "source",
                        "transform": "picklist",
                        "values": {"web": "web", "webinar": "Webinar"},
                        "default": "Other",
                    }
                }
            )
        )

        assert (problem.field, problem.code) == ("LeadSource", "picklist_value")
        assert problem.message == (
            "LeadSource: the value 'web' that 'web' maps to is not one of its "
            "options (Web, Phone Inquiry, Partner Referral, Purchased List, Webinar, "
            "Other); did you mean 'Web'?"
        )

    def test_names_every_value_that_is_not_an_option(
        self, problems_of: Callable[..., list[MappingProblem]]
    ) -> None:
        problems = problems_of(
            {
                "LeadSource": {
                    "source": "source",
                    "transform": "picklist",
                    "values": {"web": "web", "fair": "Trade Show"},
                    "default": "Misc",
                }
            }
        )

        assert [problem.code for problem in problems] == ["picklist_value"] * 3
        assert "the value 'Trade Show' that 'fair' maps to" in problems[1].message
        assert "the default 'Misc'" in problems[2].message

    def test_names_a_constant_that_is_not_an_option(
        self, problems_of: Callable[..., list[MappingProblem]]
    ) -> None:
        problem = _only(problems_of({"Rating": {"constant": "Lukewarm"}}))

        assert (problem.field, problem.code) == ("Rating", "picklist_value")
        assert "the constant 'Lukewarm' is not one of its options" in problem.message

    def test_names_a_fallback_that_is_not_an_option(
        self, problems_of: Callable[..., list[MappingProblem]]
    ) -> None:
        problem = _only(
            problems_of(
                {
                    "Rating": {
                        "source": "custom.rating",
                        "transform": "picklist",
                        "fallback": "cold",
                    }
                }
            )
        )

        assert (problem.field, problem.code) == ("Rating", "picklist_value")
        assert "the fallback 'cold'" in problem.message
        assert problem.message.endswith("did you mean 'Cold'?")


class TestLengths:
    def test_refuses_an_explicit_truncate_above_the_crm_length(
        self, problems_of: Callable[..., list[MappingProblem]]
    ) -> None:
        problem = _only(problems_of({"City": {"source": "city", "truncate": 50}}))

        assert (problem.field, problem.code) == ("City", "truncate_too_long")
        assert problem.message == (
            "City: `truncate: 50` is above the CRM's limit of 40 characters; use "
            "`truncate: true` (cuts at the CRM's length) or a number up to 40"
        )

    def test_accepts_a_truncate_within_the_crm_length(
        self, problems_of: Callable[..., list[MappingProblem]]
    ) -> None:
        assert problems_of({"City": {"source": "city", "truncate": 40}}) == []

    def test_refuses_a_constant_longer_than_the_field(
        self, problems_of: Callable[..., list[MappingProblem]]
    ) -> None:
        problem = _only(problems_of({"PostalCode": {"constant": "x" * 21}}))

        assert (problem.field, problem.code) == ("PostalCode", "value_too_long")
        assert "PostalCode: the constant is 21 characters" in problem.message


class TestRequiredFields:
    def test_names_a_required_field_the_mapping_does_not_set(
        self,
        mapping_of: Callable[..., CrmMapping],
        salesforce_fields: list[CrmField],
    ) -> None:
        mapping = mapping_of({"LastName": VALID["LastName"]})

        problem = _only(
            check_mapping(mapping, salesforce_fields, key_field="Web_Lead_Id__c")
        )

        assert (problem.field, problem.code) == ("Company", "required_unmapped")
        assert problem.message.startswith(
            "Company is required to create a record and the mapping does not set it"
        )

    def test_names_a_required_field_a_lead_can_leave_empty(
        self, problems_of: Callable[..., list[MappingProblem]]
    ) -> None:
        problem = _only(problems_of({"Company": {"source": "company"}}))

        assert (problem.field, problem.code) == ("Company", "required_may_be_empty")
        assert problem.message == (
            "Company is required to create a record and a lead without company "
            "leaves it empty, so the CRM would refuse that lead; add a `fallback` "
            "value"
        )

    def test_names_a_required_field_the_mapping_clears(
        self, problems_of: Callable[..., list[MappingProblem]]
    ) -> None:
        problem = _only(problems_of({"Company": {"constant": ""}}))

        assert (problem.field, problem.code) == ("Company", "required_may_be_empty")
        assert "the mapping clears it" in problem.message
        assert problem.message.endswith("give a non-blank constant")

    def test_does_not_ask_for_a_required_key_field(
        self,
        mapping_of: Callable[..., CrmMapping],
        salesforce_fields: list[CrmField],
    ) -> None:
        fields = [
            CrmField(
                name="Key__c", label="Key", type="string", required=True, unique=True
            ),
            *salesforce_fields,
        ]

        assert check_mapping(mapping_of(VALID), fields, key_field="Key__c") == []


class TestKeyField:
    def test_names_a_key_field_the_crm_lacks(
        self, problems_of: Callable[..., list[MappingProblem]]
    ) -> None:
        problem = _only(problems_of({}, key_field="Web_Lead_Id__C"))

        assert (problem.field, problem.code) == ("Web_Lead_Id__C", "key_field_missing")
        assert problem.message.startswith(
            "the key field Web_Lead_Id__C is not a field of the CRM object (did you "
            "mean Web_Lead_Id__c?)"
        )

    def test_names_a_key_field_that_is_not_unique(
        self, problems_of: Callable[..., list[MappingProblem]]
    ) -> None:
        problem = _only(problems_of({}, key_field="Phone"))

        assert (problem.field, problem.code) == ("Phone", "key_field_not_unique")
        assert "the key field Phone is neither unique nor an external id" in (
            problem.message
        )

    def test_accepts_salesforce_email_as_the_key_of_an_email_lookup(
        self, problems_of: Callable[..., list[MappingProblem]]
    ) -> None:
        # Lead.Email is not unique in Salesforce; without an external-id field
        # the connector looks records up by it, which is a valid setup.
        assert problems_of({}, key_field="Email") == []

    @pytest.mark.parametrize(
        "key", [{"unique": True}, {"external_id": True}], ids=["unique", "external_id"]
    )
    def test_accepts_a_unique_or_external_id_key(
        self,
        mapping_of: Callable[..., CrmMapping],
        salesforce_fields: list[CrmField],
        key: dict[str, bool],
    ) -> None:
        fields = [CrmField(name="Key__c", label="Key", type="string", **key)]

        assert (
            check_mapping(
                mapping_of(VALID), [*salesforce_fields, *fields], key_field="Key__c"
            )
            == []
        )
