"""Each cleaning rule as `clean_fields` applies it, field by field."""

from __future__ import annotations

import pytest

from leads.models import LeadInput
from leads.normalise import clean_fields


def clean(region: str = "US", **given):
    return clean_fields(given, region)


def values(region: str = "US", **given) -> dict:
    cleaned = clean_fields(given, region)
    assert cleaned.errors == []
    return cleaned.values


class TestPlaceholders:
    @pytest.mark.parametrize(
        "field",
        [
            "company",
            "website",
            "job_title",
            "street",
            "city",
            "state",
            "postal_code",
            "country",
        ],
    )
    def test_a_placeholder_in_a_contact_field_becomes_empty(self, field):
        assert values(**{field: " N/A "})[field] is None

    def test_a_placeholder_email_is_no_email_and_no_error(self):
        assert values(email="N/A") == {"email": None, "email_display": None}

    def test_a_placeholder_phone_is_no_phone_and_no_raw(self):
        assert values(phone="  -  ") == {"phone": None, "phone_raw": None}

    def test_names_are_never_placeholders(self):
        assert values(first_name="None", last_name="Null") == {
            "first_name": "None",
            "last_name": "Null",
        }


class TestControlCharacters:
    @pytest.mark.parametrize("field", ["first_name", "last_name"])
    def test_a_line_break_in_a_name_is_refused_naming_the_field(self, field):
        cleaned = clean(**{field: "Ola\r\nBcc: list@attacker.test"})

        assert [(e.field, e.reason) for e in cleaned.errors] == [
            (field, "control_characters")
        ]
        assert field not in cleaned.values

    def test_a_tab_in_a_name_is_refused(self):
        assert clean(first_name="Ola\tBerg").errors[0].reason == "control_characters"

    def test_surrounding_white_space_of_a_name_is_only_trimmed(self):
        assert values(first_name="\tTara\n")["first_name"] == "Tara"

    @pytest.mark.parametrize("field", ["company", "job_title", "city", "website"])
    def test_one_line_fields_collapse_control_characters_to_a_space(self, field):
        assert values(**{field: "Berg & Co\nX-Priority: 1"})[field] == (
            "Berg & Co X-Priority: 1"
        )

    @pytest.mark.parametrize("field", ["street", "notes"])
    def test_street_and_notes_keep_their_line_breaks_as_lf(self, field):
        assert values(**{field: "1 Main St\r\nApt 2\rBack\x07"})[field] == (
            "1 Main St\nApt 2\nBack"
        )


class TestNamesAndCompanies:
    @pytest.mark.parametrize(
        "name", ["O'Neil", "McDonald", "van der Berg", "DeAndre", "Smith-Jones"]
    )
    def test_names_keep_the_case_they_were_typed_in(self, name):
        assert values(last_name=name)["last_name"] == name

    def test_inner_runs_of_white_space_collapse(self):
        assert values(first_name="Mary   Ann", company="Acme \u00a0 Inc") == {
            "first_name": "Mary Ann",
            "company": "Acme Inc",
        }


class TestCountry:
    @pytest.mark.parametrize(
        ("given", "code"),
        [("USA", "US"), ("United States", "US"), ("UK", "GB"), ("Deutschland", "DE")],
    )
    def test_known_countries_become_alpha_2(self, given, code):
        assert values(country=given)["country"] == code

    def test_an_unknown_country_is_kept_as_given(self):
        assert values(country=" Narnia ")["country"] == "Narnia"


class TestPostalCode:
    def test_a_us_zip_that_lost_its_zero_is_padded_with_a_warning(self):
        assert values(postal_code="2134", country="US") == {
            "postal_code": "02134",
            "country": "US",
            "warnings": ["zip_zero_padded"],
        }

    def test_without_a_country_the_default_region_decides(self):
        assert values(postal_code="601")["postal_code"] == "00601"
        assert values("GB", postal_code="601")["postal_code"] == "601"

    def test_a_country_sent_as_a_placeholder_counts_as_none(self):
        assert values(postal_code="601", country="N/A")["postal_code"] == "00601"

    def test_a_number_sent_for_a_zip_is_padded_as_text(self):
        given = LeadInput.model_validate({"postal_code": 2134}).given()

        assert clean_fields(given, "US").values["postal_code"] == "02134"

    @pytest.mark.parametrize(
        ("code", "country"),
        [("07030-5774", "US"), ("SW1A 1AA", "GB"), ("02134", "US"), ("2134", "AU")],
    )
    def test_other_codes_are_untouched_and_unwarned(self, code, country):
        cleaned = values(postal_code=code, country=country)

        assert cleaned["postal_code"] == code
        assert "warnings" not in cleaned


class TestPhone:
    @pytest.mark.parametrize("raw", ["4.15555E+09", "4,15555E+09", "4155550100.0"])
    def test_a_number_a_spreadsheet_mangled_is_kept_raw_only(self, raw):
        assert values(phone=raw) == {"phone": None, "phone_raw": raw}

    @pytest.mark.parametrize("raw", ["415-555-0100 x123", "(415) 555-0100 ext. 123"])
    def test_an_extension_keeps_the_main_number(self, raw):
        assert values(phone=raw) == {"phone": "+14155550100", "phone_raw": None}


class TestEmail:
    @pytest.mark.parametrize(
        "address",
        ["jane.roe+webinar@example.com", "ops+alerts+eu@example.com", "+@example.com"],
    )
    def test_plus_addresses_are_kept_verbatim(self, address):
        assert values(email=address) == {"email": address, "email_display": address}

    def test_a_domain_without_a_dot_is_invalid(self):
        assert clean(email="jane.roe+@example").errors[0].reason == "invalid_email"
