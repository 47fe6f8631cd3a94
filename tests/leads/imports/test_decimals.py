"""Reading numbers written with a decimal comma or a decimal point."""

from __future__ import annotations

import pytest

from leads.imports import parse_decimal


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.234,50", "1234.50"),
        ("1,234.50", "1234.50"),
        ("12,5", "12.5"),
        ("980,00", "980.00"),
        ("12.000,00", "12000.00"),
        ("1.234.567", "1234567"),
        ("1,234,567.8", "1234567.8"),
        ("1 234,50", "1234.50"),
        ("1\u202f234,50", "1234.50"),
        ("1'234.50", "1234.50"),
        ("0,125", "0.125"),
        (",5", "0.5"),
        ("-3,5", "-3.5"),
        ("+7", "7"),
        ("  42  ", "42"),
    ],
)
def test_reads_the_number_with_its_digits_kept(text, expected):
    assert str(parse_decimal(text)) == expected


@pytest.mark.parametrize("text", ["1,234", "1.234", "12,345"])
def test_a_single_mark_before_three_digits_is_refused_as_ambiguous(text):
    with pytest.raises(ValueError, match="ambiguous"):
        parse_decimal(text)


@pytest.mark.parametrize(
    ("text", "mark", "expected"),
    [("1,234", ",", "1.234"), ("1,234", ".", "1234"), ("1.234", ",", "1234")],
)
def test_a_declared_decimal_mark_settles_the_ambiguity(text, mark, expected):
    assert str(parse_decimal(text, decimal_mark=mark)) == expected


@pytest.mark.parametrize(
    "text", ["", "-", "abc", "12a", "1,23,456", "1.234,5.6", "--1", "1e5", "١٢"]
)
def test_text_that_is_not_a_number_is_refused(text):
    with pytest.raises(ValueError, match="not a number"):
        parse_decimal(text)


def test_a_value_against_the_declared_mark_is_refused():
    with pytest.raises(ValueError, match="not a number"):
        parse_decimal("1,234.50", decimal_mark=",")


def test_only_a_comma_or_a_point_can_be_declared_the_decimal_mark():
    with pytest.raises(ValueError, match="decimal_mark"):
        parse_decimal("1", decimal_mark=";")
