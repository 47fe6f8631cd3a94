"""The sandbox's contact properties and how HubSpot checks a value written to one."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

DAY_MS = 86_400_000

# A deliberately loose check, like HubSpot's: something@something.tld, no spaces.
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

LIFECYCLE_STAGES = (
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
)
LEAD_STATUSES = (
    "NEW",
    "OPEN",
    "IN_PROGRESS",
    "OPEN_DEAL",
    "UNQUALIFIED",
    "ATTEMPTED_TO_CONTACT",
    "CONNECTED",
    "BAD_TIMING",
)


@dataclass(frozen=True)
class PropertyDef:
    """One contact property, as the properties API describes it."""

    name: str
    label: str
    type: str = "string"
    field_type: str = "text"
    options: tuple[str, ...] = ()
    read_only: bool = False
    custom: bool = False
    group: str = "contactinformation"

    def as_api(self) -> dict[str, Any]:
        """The property in the shape `GET /crm/v3/properties/contacts` returns."""
        return {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "fieldType": self.field_type,
            "groupName": self.group,
            "description": "",
            "options": [
                {"label": value, "value": value, "hidden": False, "displayOrder": i}
                for i, value in enumerate(self.options)
            ],
            "displayOrder": -1,
            "hasUniqueValue": False,
            "hidden": False,
            "hubspotDefined": not self.custom,
            "calculated": False,
            "externalOptions": False,
            "formField": not self.read_only,
            "archived": False,
            "modificationMetadata": {
                "archivable": self.custom,
                "readOnlyDefinition": not self.custom,
                "readOnlyValue": self.read_only,
            },
            "createdAt": "2024-01-01T00:00:00Z",
            "updatedAt": "2024-01-01T00:00:00Z",
        }


CONTACT_PROPERTIES: dict[str, PropertyDef] = {
    prop.name: prop
    for prop in (
        PropertyDef("email", "Email"),
        PropertyDef("firstname", "First Name"),
        PropertyDef("lastname", "Last Name"),
        PropertyDef("company", "Company Name"),
        PropertyDef("phone", "Phone Number", field_type="phonenumber"),
        PropertyDef("jobtitle", "Job Title"),
        PropertyDef("website", "Website URL"),
        PropertyDef("address", "Street Address"),
        PropertyDef("city", "City"),
        PropertyDef("state", "State/Region"),
        PropertyDef("zip", "Postal Code"),
        PropertyDef("country", "Country/Region"),
        PropertyDef("message", "Message", field_type="textarea"),
        PropertyDef(
            "lifecyclestage",
            "Lifecycle Stage",
            type="enumeration",
            field_type="radio",
            options=LIFECYCLE_STAGES,
        ),
        PropertyDef(
            "hs_lead_status",
            "Lead Status",
            type="enumeration",
            field_type="radio",
            options=LEAD_STATUSES,
        ),
        PropertyDef(
            "hs_email_optout",
            "Unsubscribed from all email",
            type="bool",
            field_type="booleancheckbox",
            options=("true", "false"),
            read_only=True,
        ),
        PropertyDef(
            "hs_sales_email_last_replied",
            "Recent Sales Email Replied Date",
            "datetime",
            "date",
            read_only=True,
        ),
        PropertyDef("createdate", "Create Date", "datetime", "date", read_only=True),
        PropertyDef(
            "lastmodifieddate",
            "Last Modified Date",
            "datetime",
            "date",
            read_only=True,
        ),
        PropertyDef("hs_object_id", "Record ID", "number", "number", read_only=True),
        PropertyDef("lead_score", "Lead score", "number", "number", custom=True),
        PropertyDef("lead_source", "Lead source", custom=True),
        PropertyDef("orchestrator_lead_id", "Orchestrator lead id", custom=True),
        PropertyDef(
            "lead_captured_date", "Lead captured date", "date", "date", custom=True
        ),
    )
}

# What a read returns when the caller names no properties (HubSpot's default set).
DEFAULT_PROPERTIES = (
    "createdate",
    "email",
    "firstname",
    "hs_object_id",
    "lastmodifieddate",
    "lastname",
)


@dataclass(frozen=True)
class Invalid:
    """One refused value, in the shape HubSpot lists inside its error message."""

    name: str
    code: str
    message: str

    def as_api(self) -> dict[str, Any]:
        return {
            "isValid": False,
            "message": self.message,
            "error": self.code,
            "name": self.name,
        }


def validation_message(problems: list[Invalid]) -> str:
    """HubSpot's text for refused values: a JSON list inside the message."""
    listed = json.dumps([p.as_api() for p in problems], separators=(",", ":"))
    return f"Property values were not valid: {listed}"


def parse_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_instant_ms(text: str) -> int | None:
    """Epoch milliseconds from either form HubSpot accepts: digits or ISO 8601."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def check_value(name: str, value: object) -> str | Invalid:
    """The value as stored, or why HubSpot would refuse it.

    `""` is always accepted on a writable property: it clears the value.
    """
    prop = CONTACT_PROPERTIES.get(name)
    if prop is None:
        return Invalid(
            name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'
        )
    if prop.read_only:
        return Invalid(
            name,
            "READ_ONLY_VALUE",
            f'"{name}" is a read only property; its value cannot be set.',
        )
    text = value if isinstance(value, str) else json.dumps(value)
    if text == "":
        return ""
    if name == "email":
        text = text.strip().lower()
        if not EMAIL_PATTERN.fullmatch(text):
            return Invalid(name, "INVALID_EMAIL", f"Email address {text} is invalid")
        return text
    if prop.type == "number" and parse_number(text) is None:
        # The code HubSpot gives a non-number is unverified; the message shape is.
        return Invalid(name, "INVALID_NUMBER", f"{text} was not a valid number.")
    if prop.type == "enumeration" and text not in prop.options:
        allowed = ", ".join(prop.options)
        return Invalid(
            name,
            "INVALID_OPTION",
            f"{text} was not one of the allowed options: [{allowed}]",
        )
    if prop.type == "bool" and text not in ("true", "false"):
        return Invalid(name, "INVALID_BOOLEAN", f"{text} is not a valid boolean.")
    if prop.type in ("date", "datetime"):
        ms = parse_instant_ms(text)
        if ms is None:
            return Invalid(name, "INVALID_DATE", f"{text} is not a valid date.")
        if prop.type == "date" and ms % DAY_MS:
            # HubSpot's own wording for a date property sent anything but midnight UTC.
            at = datetime.fromtimestamp(ms / 1000, UTC)
            return Invalid(
                name,
                "INVALID_DATE",
                f"{ms} is at {at:%H:%M:%S}.{at.microsecond // 1000} UTC, not midnight!",
            )
        return str(ms)
    return text
