"""What can go wrong with a lead, each failure naming the fields and reasons."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """One problem with one field: a stable `reason` code and a `message` for people."""

    field: str
    reason: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class LeadError(Exception):
    """Root of every lead failure."""


class LeadRejected(LeadError, ValueError):
    """The lead cannot be accepted as given; nothing was written."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        summary = "; ".join(f"{e.field}: {e.reason}" for e in errors)
        super().__init__(f"lead rejected ({summary})")


class LeadNotFound(LeadError, LookupError):
    """No lead with this id in this tenant."""

    def __init__(self, lead_id: str) -> None:
        self.lead_id = lead_id
        super().__init__(f"no lead with id {lead_id!r}")


class LeadConflict(LeadError):
    """The change would give the lead a key another lead already holds."""

    def __init__(self, field: str, other_id: str) -> None:
        self.field = field
        self.other_id = other_id
        super().__init__(f"another lead ({other_id}) already has this {field}")


# Pydantic's error types, renamed to the reason codes the API documents.
_REASONS = {
    "string_too_long": "too_long",
    "string_type": "not_a_string",
    "enum": "invalid_choice",
    "literal_error": "invalid_choice",
    "timezone_aware": "timezone_required",
    "datetime_parsing": "invalid_datetime",
    "datetime_from_date_parsing": "invalid_datetime",
    "datetime_type": "invalid_datetime",
    "dict_type": "not_an_object",
    "model_type": "not_an_object",
    "model_attributes_type": "not_an_object",
    "list_type": "not_a_list",
    "missing": "required",
    "json_invalid": "invalid_json",
    "int_parsing": "not_an_integer",
    "greater_than_equal": "too_small",
    "less_than_equal": "too_large",
}


def not_json(why: ValueError | str) -> str:
    """Why a body is not JSON, as the API and the webhooks say it.

    A `json.JSONDecodeError` as `why` says the line and column reading stopped at.
    """
    return f"the body is not JSON: {why}"


def field_errors(
    errors: list[Any], skip: int = 0, document: Any = None
) -> list[FieldError]:
    """Pydantic's error list as field errors, dropping `skip` leading path parts.

    Args:
        errors: Pydantic's (or FastAPI's) error dictionaries.
        skip: Leading parts of each location that name no field (`body`).
        document: The text a `json_invalid` error was read from, which
            FastAPI keeps as its error's `body`; with it, the message says
            where the JSON broke.
    """
    result = []
    for error in errors:
        path = [str(part) for part in error["loc"][skip:]]
        field = ".".join(path) or "body"
        message = error["msg"]
        if error["type"] == "json_invalid":
            # Pydantic's location is the character offset, not a field.
            field = "body"
            message = _json_invalid(error, document)
        reason = _REASONS.get(error["type"], error["type"])
        result.append(FieldError(field, reason, message))
    return result


def _json_invalid(error: Mapping[str, Any], document: Any) -> str:
    why = (error.get("ctx") or {}).get("error") or error["msg"]
    position = error["loc"][-1] if error["loc"] else None
    if isinstance(document, str) and isinstance(position, int):
        # FastAPI keeps only the decoder's message and the offset; the
        # decoder's own error, built again from them, says the line and column.
        return not_json(json.JSONDecodeError(why, document, position))
    return not_json(why)
