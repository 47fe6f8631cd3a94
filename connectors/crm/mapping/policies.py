"""Field policies: which mapped fields may replace what the CRM already holds."""

from __future__ import annotations

from collections.abc import Mapping

from connectors.crm.mapping.models import CrmMapping
from connectors.crm.protocol import CrmSnapshot, FieldValue


def apply_policies(
    fields: Mapping[str, FieldValue],
    mapping: CrmMapping,
    current: CrmSnapshot | None,
) -> dict[str, FieldValue]:
    """The mapped fields to send, given what the CRM holds now.

    `always` fields are sent; `if_empty` ones only when the CRM's value is
    empty, blank or absent; `never_overwrite` ones only when the CRM has no
    record yet; `if_true` ones only when the lead's value is true, so a flag a
    person raised in the CRM (an e-mail opt-out) is never lowered by a lead
    that lacks it. Read the record first when `mapping.needs_current_record`,
    asking for `mapping.fields_to_read`.

    Args:
        fields: `MappedLead.fields`.
        mapping: the mapping that produced them.
        current: the CRM's record, or None when it has none (the write creates).
            A field the snapshot lacks counts as empty.

    Returns:
        A new dict; a field the mapping does not name is sent as `always`.
    """
    rules = mapping.fields
    held = current.fields if current is not None else {}
    send: dict[str, FieldValue] = {}
    for name, value in fields.items():
        rule = rules.get(name)
        policy = rule.policy if rule is not None else "always"
        if policy == "if_true" and value is not True:
            continue
        if current is not None:
            if policy == "never_overwrite":
                continue
            if policy == "if_empty" and not _is_empty(held.get(name)):
                continue
        send[name] = value
    return send


def _is_empty(value: object) -> bool:
    # HubSpot returns an unset property as "" (or leaves it out); Salesforce
    # returns null.
    return value is None or (isinstance(value, str) and not value.strip())
