"""Matching file headers to lead fields: spellings, vendor names, mappings, refusals."""

from __future__ import annotations

import pytest

from leads.imports import LEAD_FIELDS, HeaderError, header_key, match_headers


class TestMatchingByName:
    @pytest.mark.parametrize("field", LEAD_FIELDS)
    def test_every_lead_field_matches_its_own_name(self, field):
        assert match_headers([field]) == [field]

    @pytest.mark.parametrize(
        ("header", "field"),
        [
            ("E-mail", "email"),
            ("EMAIL ADDRESS", "email"),
            ("first name", "first_name"),
            ("First-Name", "first_name"),
            ("job_title", "job_title"),
            ("Job Title", "job_title"),
            ("ZIP", "postal_code"),
            ("Post code", "postal_code"),
            ("  Time Zone  ", "timezone"),
        ],
    )
    def test_case_spaces_underscores_and_punctuation_are_ignored(self, header, field):
        assert match_headers([header]) == [field]

    @pytest.mark.parametrize(
        ("header", "field"),
        [
            ("Email", "email"),
            ("FirstName", "first_name"),
            ("LastName", "last_name"),
            ("Company", "company"),
            ("Title", "job_title"),
            ("Phone", "phone"),
            ("Street", "street"),
            ("City", "city"),
            ("State", "state"),
            ("PostalCode", "postal_code"),
            ("Country", "country"),
            ("Website", "website"),
            ("LeadSource", "source"),
            ("Description", "notes"),
            ("Status", "status"),
        ],
    )
    def test_salesforce_lead_names_match(self, header, field):
        assert match_headers([header]) == [field]

    @pytest.mark.parametrize(
        ("header", "field"),
        [
            ("First Name", "first_name"),
            ("Last Name", "last_name"),
            ("Company Name", "company"),
            ("Job Title", "job_title"),
            ("Phone Number", "phone"),
            ("Street Address", "street"),
            ("State/Region", "state"),
            ("Postal Code", "postal_code"),
            ("Country/Region", "country"),
            ("Website URL", "website"),
            ("Lead Status", "status"),
            ("Original Source", "source"),
        ],
    )
    def test_hubspot_export_labels_match(self, header, field):
        assert match_headers([header]) == [field]

    @pytest.mark.parametrize("mobile", ["MobilePhone", "Mobile Phone Number"])
    def test_a_mobile_number_fills_phone_when_there_is_no_phone(self, mobile):
        assert match_headers(["Email", mobile]) == ["email", "phone"]

    @pytest.mark.parametrize(
        ("phone", "mobile"),
        [("Phone", "MobilePhone"), ("Phone Number", "Mobile Phone Number")],
    )
    def test_a_mobile_number_stays_custom_beside_a_phone(self, phone, mobile):
        assert match_headers([mobile, phone]) == [mobile, "phone"]

    def test_unknown_headers_are_kept_as_written_without_outer_spaces(self):
        assert match_headers(["email", " Deal Value ", "utm_campaign"]) == [
            "email",
            "Deal Value",
            "utm_campaign",
        ]


class TestMapping:
    def test_a_mapped_column_goes_where_the_mapping_says(self):
        assert match_headers(["Work E-mail", "Notes"], {"Work E-mail": "email"}) == [
            "email",
            "notes",
        ]

    def test_a_field_the_mapping_claims_is_not_also_matched_by_name(self):
        assert match_headers(["Mobile", "Phone"], {"Mobile": "phone"}) == [
            "phone",
            "Phone",
        ]

    def test_a_mapping_key_is_found_as_headers_are_compared(self):
        assert match_headers(["Deal Value"], {"deal_value": "amount"}) == ["amount"]

    def test_a_mapping_naming_a_missing_column_lists_the_columns(self):
        with pytest.raises(HeaderError) as caught:
            match_headers(["Email", "Name"], {"Mail": "email"})

        assert "'Mail', which the file does not have" in str(caught.value)
        assert "'Email', 'Name'" in str(caught.value)

    def test_a_mapping_to_an_empty_name_is_refused(self):
        with pytest.raises(HeaderError, match="column 2 \\('Deal'\\) an empty name"):
            match_headers(["Email", "Deal"], {"Deal": " "})


class TestRefusals:
    def test_two_spellings_of_one_field_are_refused_naming_both(self):
        with pytest.raises(HeaderError) as caught:
            match_headers(["Email", "Name", "E-mail"])

        assert caught.value.columns == (1, 3)
        assert str(caught.value).startswith(
            "column 1 ('Email') and column 3 ('E-mail') land on 'email'; expected "
            "one column per field"
        )

    def test_every_collision_is_named_at_once(self):
        with pytest.raises(HeaderError) as caught:
            match_headers(["Email", "tag", "E-mail", "tag"])

        assert caught.value.columns == (1, 2, 3, 4)
        assert "land on 'email'" in str(caught.value)
        assert "column 2 ('tag') and column 4 ('tag') land on 'tag'" in str(
            caught.value
        )

    def test_a_mapped_column_colliding_with_a_named_one_is_refused(self):
        with pytest.raises(HeaderError, match="land on 'phone'"):
            match_headers(["Mobile", "phone"], {"Mobile": "phone"})

    def test_empty_headers_are_refused_with_their_columns(self):
        with pytest.raises(HeaderError) as caught:
            match_headers(["email", "", "name", "  "])

        assert caught.value.columns == (2, 4)
        assert str(caught.value).startswith(
            "columns 2 and 4 of the header line have no name"
        )


@pytest.mark.parametrize(
    ("header", "key"),
    [("State/Region", "stateregion"), (" E-Mail ", "email"), ("Straße", "strasse")],
)
def test_header_key_keeps_only_folded_letters_and_digits(header, key):
    assert header_key(header) == key
