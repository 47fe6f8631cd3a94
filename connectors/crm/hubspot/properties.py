"""The contact object's properties, from HubSpot's properties API, as `CrmField`s."""

from __future__ import annotations

from typing import Any

from connectors.crm.hubspot.client import HubSpotClient
from connectors.crm.protocol import CrmField

# E-mail is the key contacts are deduplicated and upserted by, although the
# properties API does not flag it `hasUniqueValue`.
UNIQUE = {"email"}


def list_contact_fields(client: HubSpotClient) -> list[CrmField]:
    """Every contact property, with its type, options and whether it is writable."""
    response = client.call(
        "list contact properties",
        client.properties_api.get_all_with_http_info,
        "contacts",
        count=0,
    )
    return [_field(prop) for prop in response.results or ()]


def _field(prop: Any) -> CrmField:
    metadata = prop.modification_metadata
    read_only = bool(metadata and metadata.read_only_value) or bool(prop.calculated)
    options = None
    if prop.type == "enumeration":
        options = tuple(option.value for option in prop.options or ())
    return CrmField(
        name=prop.name,
        label=prop.label,
        type=prop.type,
        createable=not read_only,
        updateable=not read_only,
        unique=prop.name in UNIQUE or bool(prop.has_unique_value),
        picklist=options,
    )
