"""Reading lead values for scoring: numbers as typed in forms, placeholders as gaps."""

from __future__ import annotations

import math

import pytest

from leads.scoring.values import (
    category_key,
    field_value,
    is_missing,
    parse_number,
)


@pytest.mark.parametrize(
    ("written", "number"),
    [
        ("1,000", 1000.0),
        ("1.000,5", 1000.5),
        ("51-200", 125.5),
        ("51 – 200", 125.5),
        ("10 to 50", 30.0),
        ("1000+", 1000.0),
        ("10,001+", 10001.0),
        (" 2.5 ", 2.5),
        ("-5", -5.0),
        (7, 7.0),
        (2.5, 2.5),
    ],
)
def test_numbers_are_read_as_people_type_them_into_forms(written, number):
    assert parse_number(written) == number


@pytest.mark.parametrize(
    "written", ["Select", "N/A", "", "  ", "abc", None, True, math.nan, ["3"]]
)
def test_text_that_is_not_a_number_reads_as_none(written):
    assert parse_number(written) is None


@pytest.mark.parametrize("written", ["Select", "select", " N/A ", "-", "", None])
def test_placeholders_and_blanks_are_missing(written):
    assert is_missing(written)
    assert category_key(written) is None


def test_categories_compare_ignoring_case_and_spacing():
    assert category_key("  Direct   Traffic ") == category_key("direct traffic")
    assert category_key(True) == "true"
    assert category_key(3) == "3"


def test_custom_fields_are_found_ignoring_case_spaces_and_punctuation():
    lead = {"custom": {"Company Size": "51-200"}}

    assert field_value(lead, "company_size") == "51-200"
    assert field_value(lead, "Company Size") == "51-200"
    assert field_value(lead, "employees") is None


def test_lead_fields_are_read_from_the_lead_never_from_custom():
    lead = {"source": "Referral", "custom": {"Source": "Google"}}

    assert field_value(lead, "source") == "Referral"
    assert field_value({"custom": {"source": "Google"}}, "source") is None
