"""Cleaning submitted values into the canonical lead, whatever door they came in by.

Trimmed text, placeholders emptied, control characters refused in names and
flattened elsewhere, the e-mail key, E.164 phones, alpha-2 countries and US ZIP
codes with their leading zeros. The rules of each concern live in their own
module; this one applies them field by field.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from email_validator import EmailNotValidError, validate_email

from leads.control_characters import MULTI_LINE_FIELDS, keep_line_breaks, to_one_line
from leads.countries import country_code, is_country_code
from leads.deliverability import UNDELIVERABLE_EMAIL, Resolver, check_deliverable
from leads.errors import FieldError
from leads.fields import TEXT_FIELDS
from leads.names import PERSON_NAME_FIELDS, clean_name
from leads.phones import mangled_by_spreadsheet, parse_phone
from leads.placeholders import CONTACT_FIELDS, is_placeholder
from leads.postcodes import ZIP_ZERO_PADDED, pad_zip

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


@lru_cache(maxsize=4096)
def parse_email(value: str) -> Email:
    """The e-mail key (lower-cased, IDN domain in punycode) and the typed form.

    Cached: a submission is checked when parsed and again when cleaned, and an
    import repeats addresses.

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


@dataclass
class Cleaned:
    """Submitted fields turned into stored columns, with the problems found."""

    values: dict[str, Any] = field(default_factory=dict)
    errors: list[FieldError] = field(default_factory=list)


def clean_fields(
    given: dict[str, Any], region: str, *, resolver: Resolver | None = None
) -> Cleaned:
    """Cleans the fields a caller sent; a field sent as null stays None (a clear).

    `email` becomes `email` + `email_display`; `phone` becomes `phone` +
    `phone_raw` (the raw value kept only when it is not a valid number). Text
    the store cannot keep faithfully (NUL, lone surrogates, non-finite numbers,
    nesting past `MAX_DEPTH`) is an error naming the field, never a change; so
    is a control character in a person's name.

    Warnings found while cleaning (`zip_zero_padded`) are returned in
    `values["warnings"]`: they ride with the values to the write, where
    `derive_warnings` keeps them while the value they speak of stands.

    Args:
        given: the fields as sent.
        region: alpha-2 region for phones without a country prefix, and the
            country of a postal code, when the lead names no country.
        resolver: when given, an e-mail's domain must accept mail (a DNS
            lookup through it); None checks the syntax only.
    """
    result = Cleaned()
    # Phones are read last, in the lead's own country when it names one: a
    # national number of a GB lead is a GB number, whatever the default.
    ordered = sorted(given.items(), key=lambda item: item[0] == "phone")
    for name, value in ordered:
        before = len(result.errors)
        check_value(name, value, result.errors)
        if len(result.errors) > before:
            continue
        if name == "email":
            _clean_email(value, result, resolver)
        elif name == "phone":
            _clean_phone(value, _phone_region(result, region), result)
        elif isinstance(value, str):
            _clean_text_field(name, value, result)
        elif isinstance(value, datetime):
            _clean_moment(name, value, result)
        else:
            result.values[name] = value
        _check_length(name, result)
    _pad_postal_code(given, region, result)
    return result


def _phone_region(result: Cleaned, region: str) -> str:
    country = result.values.get("country")
    return country if isinstance(country, str) and is_country_code(country) else region


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
    try:
        # Only a lone surrogate cannot be encoded; checked in C, not per char.
        text.encode("utf-8")
    except UnicodeEncodeError:
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


def _clean_text_field(name: str, value: str, result: Cleaned) -> None:
    if name in PERSON_NAME_FIELDS:
        text = clean_text(value)
        try:
            result.values[name] = clean_name(text) if text else None
        except ValueError as exc:
            result.errors.append(FieldError(name, "control_characters", str(exc)))
        return
    if name in MULTI_LINE_FIELDS:
        text = clean_text(keep_line_breaks(value))
    elif name in TEXT_FIELDS:
        text = clean_text(to_one_line(value))
    else:
        text = clean_text(value)
    if name in CONTACT_FIELDS and text is not None and is_placeholder(text):
        text = None
    if name == "country" and text:
        # A country we cannot name is kept as given; `unknown_country` says so.
        text = country_code(text) or text
    result.values[name] = text


def _pad_postal_code(given: dict[str, Any], region: str, result: Cleaned) -> None:
    postal_code = result.values.get("postal_code")
    if not postal_code:
        return
    country = result.values.get("country") if "country" in given else None
    padded = pad_zip(postal_code, country or region)
    if padded:
        result.values["postal_code"] = padded
        # Found warnings ride in `values`; every write adds them to the
        # lead's (`keep_found_warnings`) rather than replacing the list.
        result.values["warnings"] = [ZIP_ZERO_PADDED]


def _clean_email(value: str | None, result: Cleaned, resolver: Resolver | None) -> None:
    text = clean_text(value)
    if text is None or is_placeholder(text):
        result.values.update(email=None, email_display=None)
        return
    try:
        email = parse_email(text)
    except ValueError as exc:
        result.errors.append(FieldError("email", "invalid_email", str(exc)))
        return
    if resolver is not None:
        try:
            check_deliverable(text, resolver)
        except ValueError as exc:
            result.errors.append(FieldError("email", UNDELIVERABLE_EMAIL, str(exc)))
            return
    result.values.update(email=email.key, email_display=email.display)


def _clean_phone(value: str | None, region: str, result: Cleaned) -> None:
    text = clean_text(to_one_line(value)) if value is not None else None
    if text is None or is_placeholder(text):
        result.values.update(phone=None, phone_raw=None)
        return
    e164 = None if mangled_by_spreadsheet(text) else parse_phone(text, region)
    result.values.update(phone=e164, phone_raw=None if e164 else text)
