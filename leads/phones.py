"""Phone numbers: E.164 through libphonenumber, and numbers a spreadsheet mangled."""

from __future__ import annotations

import re

import phonenumbers

INVALID_PHONE = "invalid_phone"
PHONE_MANGLED = "phone_mangled_by_spreadsheet"

# What Excel and LibreOffice leave of a phone stored as a number: scientific
# notation (`4.15555E+09`, with a decimal comma in many European locales),
# which has already lost digits, or a float's trailing `.0`. Either way the
# person's number cannot be trusted, so it is not guessed back.
_SCIENTIFIC = re.compile(r"[+-]?\d+(?:[.,]\d+)?[eE][+-]?\d+")
_FLOAT_TAIL = re.compile(r"\d+[.,]0+")


def parse_phone(value: str, region: str) -> str | None:
    """The number in E.164, or None when libphonenumber does not find it valid.

    An extension (`x123`, `ext. 123`) is read and left out: E.164 has no place
    for it.
    """
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mangled_by_spreadsheet(value: str) -> bool:
    """Whether the text is a phone number a spreadsheet turned into a number."""
    return bool(_SCIENTIFIC.fullmatch(value) or _FLOAT_TAIL.fullmatch(value))


def phone_warning(phone: str | None, phone_raw: str | None) -> str | None:
    """Why a lead has no usable phone although one was given, or None."""
    if phone or not phone_raw:
        return None
    return PHONE_MANGLED if mangled_by_spreadsheet(phone_raw) else INVALID_PHONE
