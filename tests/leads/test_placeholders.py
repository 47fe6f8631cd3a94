"""Placeholder values: what counts as "nothing here", and in which fields."""

from __future__ import annotations

import pytest

from leads.placeholders import CONTACT_FIELDS, is_placeholder


@pytest.mark.parametrize(
    "text",
    [
        "N/A",
        "n/a",
        "NA",
        "#N/A",
        "-",
        "--",
        "null",
        "NULL",
        "None",
        "none",
        "unknown",
        "Unknown",
        "tbd",
        "TBD",
        "Select",
        "?",
        ".",
        "",
        "#VALUE!",
    ],
)
def test_placeholders_are_recognised_whatever_their_case(text):
    assert is_placeholder(text)


@pytest.mark.parametrize("text", ["Null Ltd", "n/a corp", "NAM", "0", "Select Ltd"])
def test_values_that_only_contain_a_placeholder_are_real(text):
    assert not is_placeholder(text)


def test_names_are_not_contact_fields_so_a_surname_can_be_null():
    assert {"first_name", "last_name"}.isdisjoint(CONTACT_FIELDS)
    assert {"email", "phone", "company", "website", "country"} <= CONTACT_FIELDS
