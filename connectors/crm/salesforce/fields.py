"""Lead field values in Salesforce's wire formats, and Lead fields from describe."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from connectors.crm.protocol import CrmField, FieldValue

# A null clears a field over REST ("To set a field value to null, use null",
# https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_update_fields.htm);
# in Bulk API 2.0 CSV an empty cell leaves the field alone and `#N/A` clears it
# (https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/datafiles_prepare_csv.htm).
CSV_NULL = "#N/A"


class UnwritableValue(ValueError):
    """A value Salesforce cannot take as given (a naive datetime, NaN)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def wire_value(field: str, value: FieldValue) -> Any:
    """`value` as JSON for Salesforce REST: `""` becomes null, which clears the field.

    Raises:
        UnwritableValue: a naive datetime (Salesforce needs the zone) or a
            number JSON cannot carry.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise UnwritableValue(field, f"{value} is not a number Salesforce takes")
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise UnwritableValue(
                field, "a datetime without a time zone; give it one (UTC if unsure)"
            )
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    if value == "":
        return None
    return value


def csv_cell(wired: Any) -> str:
    """A REST value (from `wire_value`) as a Bulk API 2.0 CSV cell; `#N/A` clears."""
    if wired is None:
        return CSV_NULL
    if isinstance(wired, bool):
        return "true" if wired else "false"
    return str(wired)


def wire_fields(fields: Mapping[str, FieldValue]) -> dict[str, Any]:
    """Every field of a record in REST form; fields absent stay absent."""
    return {name: wire_value(name, value) for name, value in fields.items()}


def crm_fields(describe: Mapping[str, Any]) -> list[CrmField]:
    """The fields of a `sobjects/Lead/describe` reply as `CrmField`s."""
    fields = []
    for entry in describe.get("fields", []):
        createable = bool(entry.get("createable"))
        picklist = tuple(
            str(option["value"])
            for option in entry.get("picklistValues") or ()
            if option.get("active", True)
        )
        fields.append(
            CrmField(
                name=str(entry["name"]),
                label=str(entry.get("label") or entry["name"]),
                type=str(entry.get("type") or "string"),
                length=int(entry["length"]) if entry.get("length") else None,
                # Salesforce's own rule: a field a create must carry is one
                # that cannot be null, can be set, and gets no default.
                required=(
                    not entry.get("nillable", True)
                    and createable
                    and not entry.get("defaultedOnCreate", False)
                ),
                createable=createable,
                updateable=bool(entry.get("updateable")),
                unique=bool(entry.get("unique")),
                external_id=bool(entry.get("externalId")),
                picklist=picklist or None,
            )
        )
    return fields
