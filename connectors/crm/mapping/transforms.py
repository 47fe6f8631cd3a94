"""Turning one lead's values into CRM field values, field by field.

A mapping file is compiled once into `FieldPlan`s; `map_lead` then runs for
every synced lead, so the per-value work here is kept to plain type checks and
dictionary look-ups.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from connectors.crm.protocol import CrmField, FieldValue

# Written as numbers are in data files: a point for decimals, no grouping
# commas (`1,000` means a thousand to some people and one to others).
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


@dataclass(frozen=True)
class MappedLead:
    """A lead as CRM fields, before the field policies pick what to send.

    Attributes:
        fields: CRM field name → value. A field the lead has no value for is
            absent: our blank never clears the CRM's value.
        warnings: `reason:Field` for each value changed or left out
            (`truncated:Description`, `invalid_boolean:HasOptedOutOfEmail`).
    """

    fields: dict[str, FieldValue]
    warnings: list[str]


class _Lead:
    """What the converters of one lead share: the lead, the zone, the CRM's fields."""

    __slots__ = ("values", "default_zone", "crm_fields", "warnings")

    def __init__(
        self,
        values: Mapping[str, Any],
        default_zone: ZoneInfo,
        crm_fields: Mapping[str, CrmField] | None,
        warnings: list[str],
    ) -> None:
        self.values = values
        self.default_zone = default_zone
        self.crm_fields = crm_fields
        self.warnings = warnings


Converter = Callable[[Any, "FieldPlan", _Lead], FieldValue | None]


@dataclass(frozen=True, slots=True)
class FieldPlan:
    """One CRM field of a mapping, ready to run.

    Attributes:
        name: the CRM field.
        convert: the transform; returns None when the lead gives no usable value.
        source: the lead column read, or the key read from the lead's `custom`.
        from_custom: whether `source` is a key of the lead's `custom`.
        constant: the fixed value, when the field has one (`has_constant`).
        fallback: written when the lead gives no usable value.
        truncate: `True` to cut text at the CRM field's length, or a length.
        choices: picklist words, case-folded → the CRM value.
        default: the picklist value for a word `choices` does not hold.
    """

    name: str
    convert: Converter
    source: str = ""
    from_custom: bool = False
    has_constant: bool = False
    constant: FieldValue | None = None
    fallback: FieldValue | None = None
    truncate: bool | int | None = None
    choices: Mapping[str, str] | None = None
    default: str | None = None


def map_lead(
    plans: tuple[FieldPlan, ...],
    lead: Mapping[str, Any],
    default_zone: str,
    crm_fields: Mapping[str, CrmField] | None,
) -> MappedLead:
    """`lead` as CRM fields by `plans`; see `CrmMapping.apply`."""
    zone = zone_named(default_zone)
    if zone is None:
        raise ValueError(
            f"default_zone {default_zone!r} is not an IANA time zone name "
            "(such as UTC or Europe/Berlin)"
        )
    fields: dict[str, FieldValue] = {}
    warnings: list[str] = []
    context = _Lead(lead, zone, crm_fields, warnings)
    custom: Mapping[str, Any] = lead.get("custom") or {}

    for plan in plans:
        if plan.has_constant:
            value = plan.constant
        else:
            raw = (custom if plan.from_custom else lead).get(plan.source)
            value = None if raw is None else plan.convert(raw, plan, context)
            if value is None:
                value = plan.fallback
        if value is not None:
            fields[plan.name] = value
    return MappedLead(fields, warnings)


@lru_cache(maxsize=256)
def zone_named(name: str) -> ZoneInfo | None:
    """The IANA zone `name`, or None when there is no such zone."""
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError):
        # ZoneInfoNotFoundError is a KeyError; malformed keys raise ValueError.
        return None


def to_text(value: Any, plan: FieldPlan, lead: _Lead) -> str | None:
    """Text, trimmed; lists joined by `; `; cut to the CRM's length when asked."""
    if isinstance(value, str):
        text = value.strip()
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, date):
        text = value.isoformat()
    elif isinstance(value, list | tuple):
        text = "; ".join(filter(None, (str(item).strip() for item in value)))
    else:
        text = str(value).strip()
    if not text:
        return None

    limit = plan.truncate
    if limit is True:
        field = lead.crm_fields.get(plan.name) if lead.crm_fields else None
        limit = field.length if field is not None else None
    if limit and len(text) > limit:
        lead.warnings.append(f"truncated:{plan.name}")
        text = text[:limit].rstrip()
    return text


def to_number(value: Any, plan: FieldPlan, lead: _Lead) -> int | float | None:
    """An int or float, from a number or a decimal string (`42`, `-3.5`, `1e3`)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if _NUMBER.fullmatch(text):
            number = float(text)
            return int(text) if text.lstrip("+-").isdigit() else number
    lead.warnings.append(f"invalid_number:{plan.name}")
    return None


def to_boolean(value: Any, plan: FieldPlan, lead: _Lead) -> bool | None:
    """True or false, from a bool, 1/0, or true/false/yes/no/1/0 in any case."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return value == 1
    if isinstance(value, str):
        word = value.strip().casefold()
        if not word:
            return None
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    lead.warnings.append(f"invalid_boolean:{plan.name}")
    return None


def to_date(value: Any, plan: FieldPlan, lead: _Lead) -> date | None:
    """The calendar date: of an instant, in the lead's own zone; or `YYYY-MM-DD`."""
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            lead.warnings.append(f"naive_datetime:{plan.name}")
            return None
        return value.astimezone(_zone_of(lead, plan)).date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if _DAY.fullmatch(text):
            try:
                return date.fromisoformat(text)
            except ValueError:
                pass
    lead.warnings.append(f"invalid_date:{plan.name}")
    return None


def to_datetime(value: Any, plan: FieldPlan, lead: _Lead) -> datetime | None:
    """An aware instant in UTC; a time without a zone is refused, never guessed."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            lead.warnings.append(f"invalid_datetime:{plan.name}")
            return None
    if not isinstance(value, datetime):
        lead.warnings.append(f"invalid_datetime:{plan.name}")
        return None
    if value.utcoffset() is None:
        lead.warnings.append(f"naive_datetime:{plan.name}")
        return None
    return value.astimezone(UTC)


def to_picklist(value: Any, plan: FieldPlan, lead: _Lead) -> str | None:
    """The CRM option for a word: mapped, else `default`, else a valid option as is."""
    if isinstance(value, bool):
        word = "true" if value else "false"
    else:
        word = str(value).strip()
    if not word:
        return None
    key = word.casefold()

    if plan.choices is not None and key in plan.choices:
        return plan.choices[key]
    if plan.default is not None:
        return plan.default
    field = lead.crm_fields.get(plan.name) if lead.crm_fields else None
    if field is not None and field.picklist:
        option = _options(field.picklist).get(key)
        if option is not None:
            return option
    lead.warnings.append(f"unmapped_picklist:{plan.name}")
    return None


CONVERTERS: dict[str, Converter] = {
    "text": to_text,
    "number": to_number,
    "boolean": to_boolean,
    "date": to_date,
    "datetime": to_datetime,
    "picklist": to_picklist,
}


def _zone_of(lead: _Lead, plan: FieldPlan) -> ZoneInfo:
    name = lead.values.get("timezone")
    if not name:
        return lead.default_zone
    zone = zone_named(name)
    if zone is None:
        lead.warnings.append(f"unknown_timezone:{plan.name}")
        return lead.default_zone
    return zone


@lru_cache(maxsize=64)
def _options(picklist: tuple[str, ...]) -> dict[str, str]:
    return {option.casefold(): option for option in picklist}
