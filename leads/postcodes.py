"""Postal codes: always text, and US ZIP codes whose leading zeros a spreadsheet ate."""

from __future__ import annotations

import re

ZIP_ZERO_PADDED = "zip_zero_padded"

# The United States and the territories USPS serves with US ZIP codes.
_ZIP_COUNTRIES = frozenset({"US", "PR", "VI", "GU", "AS", "MP"})

# Spreadsheets read 02134 as the number 2134; the smallest ZIP in use, 00501,
# loses two zeros. Five digits, a ZIP+4 or anything with a letter is left alone.
_STRIPPED_ZIP = re.compile(r"\d{3,4}")
_PADDED_ZIP = re.compile(r"0\d{4}")


def pad_zip(postal_code: str, country: str | None) -> str | None:
    """The ZIP code with its lost leading zeros back, or None when none were lost.

    Args:
        postal_code: the cleaned postal code.
        country: the lead's alpha-2 country, or the default region when the
            lead names none.
    """
    if country in _ZIP_COUNTRIES and _STRIPPED_ZIP.fullmatch(postal_code):
        return postal_code.zfill(5)
    return None


def may_be_padded(postal_code: str | None, country: str | None) -> bool:
    """Whether `pad_zip` could have produced this postal code for this country.

    A `zip_zero_padded` warning stays on a lead only while this holds; a code
    that changed to anything else no longer speaks of the padded value.
    """
    if postal_code is None or not _PADDED_ZIP.fullmatch(postal_code):
        return False
    return country is None or country in _ZIP_COUNTRIES
