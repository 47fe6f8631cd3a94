"""Cleaning submitted values into the canonical lead: trimmed text, e-mail key, E.164.

TODO(#4): the full pipeline (placeholders, control characters, names, countries,
postal codes, spreadsheet-mangled numbers, disposable and free-mail domains) grows
here; this is the minimal intake the lead store needs.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from leads.errors import FieldError
from leads.fields import TEXT_FIELDS

# Characters that surround pasted values but are not `str.isspace()`:
# zero-width space, joiners, word joiner and the byte-order mark.
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"


def _blank(char: str) -> bool:
    return char.isspace() or char in _INVISIBLE


def clean_text(value: str | None) -> str | None:
    """NFC text without surrounding white space (NBSP and zero-width too); "" → None."""
    if value is None:
        return None
    text = unicodedata.normalize("NFC", value)
    start, end = 0, len(text)
    while start < end and _blank(text[start]):
        start += 1
    while end > start and _blank(text[end - 1]):
        end -= 1
    return text[start:end] or None


@dataclass(frozen=True)
class Email:
    key: str
    display: str


def parse_email(value: str) -> Email:
    """The e-mail key (lower-cased, IDN domain in punycode) and the typed form.

    Raises:
        ValueError: the address is not a valid e-mail address; the message says why.
    """
    try:
        checked = validate_email(value, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from exc
    return Email(
        key=f"{checked.local_part.lower()}@{checked.ascii_domain}", display=value
    )


def email_key(value: str) -> str | None:
    """The key a stored lead would have for this address, or None when invalid."""
    text = clean_text(value)
    if text is None:
        return None
    try:
        return parse_email(text).key
    except ValueError:
        return None


def parse_phone(value: str, region: str) -> str | None:
    """The number in E.164, or None when libphonenumber does not find it valid."""
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@dataclass
class Cleaned:
    """Submitted fields turned into stored columns, with the problems found."""

    values: dict[str, Any] = field(default_factory=dict)
    errors: list[FieldError] = field(default_factory=list)


def clean_fields(given: dict[str, Any], region: str) -> Cleaned:
    """Cleans the fields a caller sent; a field sent as null stays None (a clear).

    `email` becomes `email` + `email_display`; `phone` becomes `phone` +
    `phone_raw` (the raw value kept only when it is not a valid number). Text
    the store cannot keep faithfully (NUL, lone surrogates, non-finite numbers,
    nesting past `MAX_DEPTH`) is an error naming the field, never a change.
    """
    result = Cleaned()
    for name, value in given.items():
        before = len(result.errors)
        check_value(name, value, result.errors)
        if len(result.errors) > before:
            continue
        if name == "email":
            _clean_email(value, result)
        elif name == "phone":
            _clean_phone(value, region, result)
        elif isinstance(value, str):
            result.values[name] = clean_text(value)
        elif isinstance(value, datetime):
            _clean_moment(name, value, result)
        else:
            result.values[name] = value
        _check_length(name, result)
    return result


# Deeper `custom` values are refused: nothing a form or CRM sends nests this far,
# and unbounded nesting exhausts recursion in every JSON layer after ours.
MAX_DEPTH = 16


def check_value(
    path: str, value: Any, errors: list[FieldError], depth: int = 0
) -> None:
    """Adds an error for each part of a JSON value the store cannot keep as given."""
    if isinstance(value, str):
        reason = _unstorable_text(value)
        if reason:
            errors.append(FieldError(path, reason[0], reason[1]))
    elif isinstance(value, float) and not math.isfinite(value):
        errors.append(
            FieldError(path, "not_finite", "NaN and Infinity are not JSON numbers")
        )
    elif isinstance(value, dict | list):
        if depth >= MAX_DEPTH:
            errors.append(
                FieldError(path, "too_deep", f"nested more than {MAX_DEPTH} levels")
            )
            return
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str) and _unstorable_text(key):
                errors.append(
                    FieldError(path, "invalid_key", f"key {key!r} cannot be stored")
                )
                continue
            check_value(f"{path}.{key}", item, errors, depth + 1)


def _unstorable_text(text: str) -> tuple[str, str] | None:
    if "\x00" in text:
        return "nul_character", "text may not contain the NUL character (U+0000)"
    if any("\ud800" <= char <= "\udfff" for char in text):
        return "invalid_unicode", "text holds a lone surrogate, not a character"
    return None


def _clean_moment(name: str, value: datetime, result: Cleaned) -> None:
    try:
        # Stored in UTC; answering in UTC too keeps writes and reads alike.
        result.values[name] = value.astimezone(UTC)
    except OverflowError:
        result.errors.append(
            FieldError(name, "invalid_datetime", "out of range once converted to UTC")
        )


def _check_length(name: str, result: Cleaned) -> None:
    # Checked again after cleaning: NFC can lengthen text (one character of
    # some scripts composes from, or decomposes to, several).
    limit = TEXT_FIELDS.get(name)
    value = result.values.get(name)
    if limit is None or not isinstance(value, str) or len(value) <= limit:
        return
    result.values.pop(name)
    result.errors.append(
        FieldError(name, "too_long", f"at most {limit} characters after normalising")
    )


def _clean_email(value: str | None, result: Cleaned) -> None:
    text = clean_text(value)
    if text is None:
        result.values.update(email=None, email_display=None)
        return
    try:
        email = parse_email(text)
    except ValueError as exc:
        result.errors.append(FieldError("email", "invalid_email", str(exc)))
        return
    result.values.update(email=email.key, email_display=email.display)


def _clean_phone(value: str | None, region: str, result: Cleaned) -> None:
    text = clean_text(value)
    if text is None:
        result.values.update(phone=None, phone_raw=None)
        return
    e164 = parse_phone(text, region)
    result.values.update(phone=e164, phone_raw=None if e164 else text)
