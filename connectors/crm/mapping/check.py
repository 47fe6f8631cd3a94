"""Checking a mapping against the fields a CRM really has, before anything syncs.

Which transforms fit which CRM field types (by the type's family; a type not
listed is not judged):

| transform, or constant/fallback | CRM field families it may write |
|---------------------------------|---------------------------------|
| `text`                          | text                            |
| `number`, a number              | number, text                    |
| `boolean`, true/false           | boolean                         |
| `date`, a date                  | date                            |
| `datetime`, a date-time         | datetime                        |
| `picklist`                      | picklist, text                  |
| a text value                    | text, picklist (an option)      |
| `constant: ""` (clears)         | any                             |

`text` into a picklist is refused because nothing would keep its words among
the options (use `picklist`); a date into a date-time field is refused because
midnight would have to be guessed in some zone.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from connectors.crm.mapping.models import CrmMapping, FieldRule
from connectors.crm.protocol import CrmField

# Salesforce describe types and HubSpot property types (`type`, and the
# `fieldType` some connectors report instead), by family.
FAMILIES = {
    "string": "text",
    "text": "text",
    "textarea": "text",
    "email": "text",
    "phone": "text",
    "phone_number": "text",
    "phonenumber": "text",
    "url": "text",
    "combobox": "text",
    "encryptedstring": "text",
    "id": "text",
    "reference": "text",
    "number": "number",
    "double": "number",
    "int": "number",
    "integer": "number",
    "long": "number",
    "currency": "number",
    "percent": "number",
    "bool": "boolean",
    "boolean": "boolean",
    "booleancheckbox": "boolean",
    "date": "date",
    "datetime": "datetime",
    "picklist": "picklist",
    "multipicklist": "picklist",
    "enumeration": "picklist",
    "select": "picklist",
    "radio": "picklist",
}
# Transform (or the kind of a constant) → the families it may write. Families
# are named as the transform that fits them best.
FITS = {
    "text": frozenset({"text"}),
    "number": frozenset({"number", "text"}),
    "boolean": frozenset({"boolean"}),
    "date": frozenset({"date"}),
    "datetime": frozenset({"datetime"}),
    "picklist": frozenset({"picklist", "text"}),
    "text_value": frozenset({"text", "picklist"}),
}
_KIND_WORDS = {
    "text": "text",
    "text_value": "text",
    "picklist": "one of its options",
    "number": "a number",
    "boolean": "true or false",
    "date": "a date (2024-03-10)",
    "datetime": "a date-time with a zone (2024-03-10T09:00:00Z)",
}


@dataclass(frozen=True)
class MappingProblem:
    """One thing wrong with a mapping against a CRM, and how to fix it.

    Attributes:
        field: the CRM field concerned.
        code: `unknown_field`, `read_only`, `not_createable`, `not_updateable`,
            `type_mismatch`, `picklist_value`, `value_too_long`,
            `truncate_too_long`, `required_unmapped`, `required_may_be_empty`,
            `key_field_missing` or `key_field_not_unique`.
        message: what is wrong and what to change, for people.
    """

    field: str
    code: str
    message: str


def check_mapping(
    mapping: CrmMapping, crm_fields: list[CrmField], *, key_field: str
) -> list[MappingProblem]:
    """Every problem the CRM would have with records written by `mapping`.

    Args:
        mapping: a loaded mapping.
        crm_fields: the CRM object's fields (`CrmConnector.list_fields`).
        key_field: the field the connector finds records by; the connector
            writes it from each record's key, so it need not be mapped.

    Returns:
        The problems: the key field's first, then each mapped field's in the
        file's order, then required fields the mapping can leave empty. Empty
        when the mapping fits.
    """
    by_name = {field.name: field for field in crm_fields}
    problems = list(_key_problems(key_field, by_name))
    for name, rule in mapping.fields.items():
        field = by_name.get(name)
        if field is None:
            problems.append(
                MappingProblem(
                    name,
                    "unknown_field",
                    f"{name} is not a field of the CRM object{_closest(name, by_name)}"
                    "; fix the name or create the field in the CRM",
                )
            )
        else:
            problems.extend(_field_problems(name, rule, field))
    problems.extend(_required_problems(mapping, crm_fields, key_field))
    return problems


def _key_problems(
    key_field: str, by_name: dict[str, CrmField]
) -> Iterator[MappingProblem]:
    field = by_name.get(key_field)
    if field is None:
        yield MappingProblem(
            key_field,
            "key_field_missing",
            f"the key field {key_field} is not a field of the CRM object"
            f"{_closest(key_field, by_name)}; create it (text, unique, external id) "
            "or configure the connector with a key field the object has",
        )
    elif key_field.lower() == "email" and field.type in ("email", "string"):
        # Salesforce's Lead.Email is not unique; without an external-id field
        # the connector finds records by an e-mail lookup and updates the one
        # found (a duplicate rule's match when several could be).
        return
    elif not (field.unique or field.external_id):
        yield MappingProblem(
            key_field,
            "key_field_not_unique",
            f"the key field {key_field} is neither unique nor an external id, so "
            "one key could match several records; mark it Unique and External ID "
            "in the CRM, or key records by a field that is (such as a text field "
            "holding our lead id)",
        )


def _field_problems(
    name: str, rule: FieldRule, field: CrmField
) -> Iterator[MappingProblem]:
    if not field.createable and not field.updateable:
        yield MappingProblem(
            name,
            "read_only",
            f"{name} is read-only in the CRM; remove it from the mapping",
        )
        return
    if not field.createable:
        yield MappingProblem(
            name,
            "not_createable",
            f"{name} cannot be set when a record is created, and the mapping "
            "writes it on create; remove it from the mapping",
        )
    if not field.updateable and rule.policy != "never_overwrite":
        yield MappingProblem(
            name,
            "not_updateable",
            f"{name} can only be set when a record is created; add "
            "`policy: never_overwrite` so updates leave it out",
        )

    family = FAMILIES.get(field.type.casefold())
    if family is not None:
        yield from _type_problems(name, rule, field, family)
    if family == "picklist" and field.picklist is not None:
        yield from _option_problems(name, rule, field.picklist)
    yield from _length_problems(name, rule, field)


def _type_problems(
    name: str, rule: FieldRule, field: CrmField, family: str
) -> Iterator[MappingProblem]:
    if not rule.has_constant and family not in FITS[rule.transform]:
        yield MappingProblem(
            name,
            "type_mismatch",
            f"{name} is a {field.type} field; transform {rule.transform} cannot "
            f"write it; use `transform: {family}`",
        )
    for key, value in _fixed_values(rule):
        kind = _kind(value)
        if value != "" and family not in FITS[kind]:
            yield MappingProblem(
                name,
                "type_mismatch",
                f"{name} is a {field.type} field; the {key} {value!r} is "
                f"{_KIND_WORDS[kind]}; give {_KIND_WORDS[family]}",
            )


def _option_problems(
    name: str, rule: FieldRule, options: tuple[str, ...]
) -> Iterator[MappingProblem]:
    written = [(f"the {key} {value!r}", value) for key, value in _fixed_values(rule)]
    if rule.values:
        written.extend(
            (f"the value {option!r} that {word!r} maps to", option)
            for word, option in rule.values.items()
        )
    if rule.default is not None:
        written.append((f"the default {rule.default!r}", rule.default))
    listed = ", ".join(options)
    for what, value in written:
        if isinstance(value, str) and value != "" and value not in options:
            hint = _closest_option(value, options)
            yield MappingProblem(
                name,
                "picklist_value",
                f"{name}: {what} is not one of its options ({listed}){hint}",
            )


def _length_problems(
    name: str, rule: FieldRule, field: CrmField
) -> Iterator[MappingProblem]:
    if field.length is None:
        return
    truncate = rule.truncate
    if not isinstance(truncate, bool) and (truncate or 0) > field.length:
        yield MappingProblem(
            name,
            "truncate_too_long",
            f"{name}: `truncate: {truncate}` is above the CRM's limit of "
            f"{field.length} characters; use `truncate: true` (cuts at the "
            f"CRM's length) or a number up to {field.length}",
        )
    for key, value in _fixed_values(rule):
        if isinstance(value, str) and len(value) > field.length:
            yield MappingProblem(
                name,
                "value_too_long",
                f"{name}: the {key} is {len(value)} characters and the CRM takes "
                f"at most {field.length}; shorten it",
            )


def _required_problems(
    mapping: CrmMapping, crm_fields: list[CrmField], key_field: str
) -> Iterator[MappingProblem]:
    for field in crm_fields:
        if not field.required or not field.createable or field.name == key_field:
            continue
        rule = mapping.fields.get(field.name)
        if rule is None:
            yield MappingProblem(
                field.name,
                "required_unmapped",
                f"{field.name} is required to create a record and the mapping "
                f"does not set it; add `{field.name}: {{source: <lead field>, "
                'fallback: "<value when the lead has none>"}` or a constant',
            )
        elif rule.can_be_empty:
            if rule.has_constant:
                why, fix = "the mapping clears it", "give a non-blank constant"
            else:
                why = f"a lead without {rule.source} leaves it empty"
                fix = "add a `fallback` value"
            yield MappingProblem(
                field.name,
                "required_may_be_empty",
                f"{field.name} is required to create a record and {why}, so the "
                f"CRM would refuse that lead; {fix}",
            )


def _fixed_values(rule: FieldRule) -> Iterator[tuple[str, Any]]:
    if rule.has_constant:
        yield "constant", rule.constant
    elif rule.fallback is not None:
        yield "fallback", rule.fallback


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, datetime):
        return "datetime"
    if isinstance(value, date):
        return "date"
    return "text_value"


def _closest(name: str, by_name: dict[str, CrmField]) -> str:
    folded = {candidate.casefold(): candidate for candidate in by_name}
    if name.casefold() in folded:
        return f" (did you mean {folded[name.casefold()]}?)"
    close = difflib.get_close_matches(name.casefold(), list(folded), n=3, cutoff=0.75)
    if not close:
        return ""
    return f" (did you mean {' or '.join(folded[match] for match in close)}?)"


def _closest_option(value: str, options: tuple[str, ...]) -> str:
    folded = {option.casefold(): option for option in options}
    close = difflib.get_close_matches(value.casefold(), list(folded), n=1)
    return f"; did you mean {folded[close[0]]!r}?" if close else ""
