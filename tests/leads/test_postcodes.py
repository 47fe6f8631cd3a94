"""US ZIP codes whose leading zeros a spreadsheet ate, and everything left alone."""

from __future__ import annotations

import pytest

from leads.postcodes import may_be_padded, pad_zip


@pytest.mark.parametrize(
    ("given", "country", "padded"),
    [("2134", "US", "02134"), ("601", "US", "00601"), ("601", "PR", "00601")],
)
def test_three_and_four_digit_us_zips_are_padded_to_five(given, country, padded):
    assert pad_zip(given, country) == padded


@pytest.mark.parametrize(
    ("given", "country"),
    [
        ("02134", "US"),
        ("07030-5774", "US"),
        ("SW1A 1AA", "GB"),
        ("2134", "GB"),
        ("1010", "AT"),
        ("2134", None),
        ("21", "US"),
    ],
)
def test_other_codes_are_left_alone(given, country):
    assert pad_zip(given, country) is None


class TestMayBePadded:
    def test_a_five_digit_us_zip_with_a_leading_zero_may_be(self):
        assert may_be_padded("00601", "US")
        assert may_be_padded("02134", None)

    @pytest.mark.parametrize(
        ("code", "country"),
        [("10001", "US"), ("02134", "GB"), ("02134-1234", "US"), (None, "US")],
    )
    def test_anything_padding_cannot_give_may_not(self, code, country):
        assert not may_be_padded(code, country)
