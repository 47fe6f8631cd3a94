"""Reading one value of a stored lead the way scoring compares it: found, or missing."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from leads.imports import LEAD_FIELDS, header_key, parse_decimal
from leads.placeholders import is_placeholder

# Names read from the lead's own columns; every other name is a custom field.
# `flags` is the store's, set at intake (`free_mail`).
_COLUMNS = frozenset(LEAD_FIELDS) | {"flags"}

# `51-200`, `51 – 200`, `51 to 200`: a band such as company-size pickers give.
# The left side must end in a digit, so a minus sign is never taken for a dash.
_RANGE = re.compile(r"^(.*\d)\s*(?:-|–|—|\bto\b)\s*(\S.*)$", re.IGNORECASE)


@lru_cache(maxsize=4096)
def _key(name: str) -> str:
    return header_key(name)


def field_value(values: Mapping[str, Any], name: str) -> Any:
    """The value a lead holds under a lead field or custom name, or None.

    A custom name is looked up as written first, then as headers are compared
    (ignoring case, spaces and punctuation), so a model trained on a column
    `Company Size` reads `company_size` sent through the API.

    Args:
        values: the lead's stored columns, custom fields under `custom`.
        name: a lead field such as `source`, or a custom field name.
    """
    if name in _COLUMNS:
        return values.get(name)
    custom = values.get("custom")
    if not isinstance(custom, Mapping) or not custom:
        return None
    if name in custom:
        return custom[name]
    wanted = _key(name)
    for other, value in custom.items():
        if isinstance(other, str) and _key(other) == wanted:
            return value
    return None


def is_missing(value: Any) -> bool:
    """Whether a value says nothing: None, blank, a placeholder (`Select`), NaN."""
    if value is None:
        return True
    if isinstance(value, str):
        return is_placeholder(value.strip())
    if isinstance(value, float):
        return not math.isfinite(value)
    return isinstance(value, list | tuple | dict) and not value


def category_key(value: Any) -> str | None:
    """The value as categories are compared: case-folded, spaces collapsed.

    Returns:
        None when the value is missing or is not a single value (a list).
    """
    if isinstance(value, str):
        return _text_key(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return None if is_missing(value) else f"{value:g}"
    return None


# Form and CRM values repeat from lead to lead (a source, a country, a yes/no);
# remembering the keys of recent ones makes scoring and training several times
# cheaper. Bounded, so free text cannot grow it without end.
@lru_cache(maxsize=65_536)
def _text_key(value: str) -> str | None:
    text = " ".join(value.split())
    return None if is_placeholder(text) else text.casefold()


def display_text(value: Any) -> str:
    """The value as a reason shows it: trimmed, spaces collapsed, case kept."""
    if isinstance(value, str):
        return " ".join(value.split())
    return str(value)


def parse_number(value: Any) -> float | None:
    """The number a value stands for, or None.

    Text is read the way people type numbers into forms: `1,000` and `1.000,5`
    (thousands separators, either decimal mark), `1000+` (an open band: its
    floor), and `51-200` or `51 to 200` (a band: its midpoint).
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
        return number if math.isfinite(number) else None
    if not isinstance(value, str):
        return None
    return _text_number(value)


@lru_cache(maxsize=65_536)
def _text_number(value: str) -> float | None:
    text = value.strip()
    if is_placeholder(text):
        return None
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return number if math.isfinite(number) else None
    band = _RANGE.match(text)
    if band:
        low, high = _decimal(band[1]), _decimal(band[2])
        if low is None or high is None:
            return None
        return (low + high) / 2
    return _decimal(text.removesuffix("+"))


def _decimal(text: str) -> float | None:
    try:
        return float(parse_decimal(text))
    except ValueError:
        pass
    # `1,000` may be a thousand or one with a decimal comma; lead forms are
    # far more often in English, where the comma groups thousands.
    try:
        return float(parse_decimal(text, "."))
    except ValueError:
        return None
