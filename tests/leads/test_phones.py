"""Phones: E.164 with extensions dropped, and numbers a spreadsheet mangled."""

from __future__ import annotations

import pytest

from leads.phones import mangled_by_spreadsheet, parse_phone, phone_warning


@pytest.mark.parametrize(
    "raw",
    [
        "415-555-0100 x123",
        "(415) 555-0100 ext. 123",
        "+1 415 555 0100 ext 123",
        "415 555 0100;ext=9",
    ],
)
def test_an_extension_leaves_the_main_number_in_e164(raw):
    assert parse_phone(raw, "US") == "+14155550100"


@pytest.mark.parametrize(
    "raw", ["4.15555E+09", "4,15555E+09", "4.15555e9", "4155550100.0", "4155550100,00"]
)
def test_scientific_notation_and_float_tails_are_spreadsheet_damage(raw):
    assert mangled_by_spreadsheet(raw)


@pytest.mark.parametrize(
    "raw", ["4155550100", "415.555.0100", "+1 415 555 0100", "555", "E123"]
)
def test_ordinary_numbers_are_not_spreadsheet_damage(raw):
    assert not mangled_by_spreadsheet(raw)


class TestPhoneWarning:
    def test_a_valid_phone_or_none_at_all_needs_no_warning(self):
        assert phone_warning("+14155550100", None) is None
        assert phone_warning(None, None) is None

    def test_a_raw_number_that_is_not_valid_is_an_invalid_phone(self):
        assert phone_warning(None, "12") == "invalid_phone"

    def test_a_raw_number_a_spreadsheet_mangled_says_so(self):
        assert phone_warning(None, "4.15555E+09") == "phone_mangled_by_spreadsheet"
