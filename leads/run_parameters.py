"""Flow-run parameters as the Prefect server gets them: JSON values, no personal data.

Prefect stores a run's parameters and shows them in its UI, logs and events, and
some Prefect 3 releases sent a `datetime` parameter as a Unix float that a
deployment's schema then refused with 409 Conflict (PrefectHQ/prefect#19257).
Every place that creates a flow run passes its parameters through `json_ready`
first: values become what pydantic would write as JSON, and a value that looks
like an e-mail address or a phone number is refused, since parameters carry
lead ids and never the lead's own details.
"""

from __future__ import annotations

import ipaddress
import math
import re
import unicodedata
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from pydantic_core import PydanticSerializationError, to_jsonable_python

from leads.tracebacks import PlainMessage

PersonalDataKind = Literal["email", "phone"]

# Anything shaped local@domain.tld, anywhere in the value: an address inside a
# display name (`Ada <ada@example.com>`) is as personal as a bare one.
_EMAIL = re.compile(r"[^\s@<>\"',;:]+@[^\s@<>\"',;:.]+(?:\.[^\s@<>\"',;:.]+)+")
# Only digits, phone punctuation and an optional leading +: a phone number is
# then recognised by its count of digits (ITU-T E.164 allows at most 15).
_PHONE_CHARACTERS = re.compile(r"\+?[\d\s().\-/]+")
_PHONE_DIGITS = range(7, 16)
# Values made of the same characters that are not phone numbers.
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# Thousands grouped by spaces (with a decimal point) or by points (a decimal
# comma is not phone punctuation, so such a value never gets this far).
_GROUPED_NUMBER = re.compile(r"\d{1,3}(?: \d{3})+(?:\.\d+)?|\d{1,3}(?:\.\d{3})+")
_DATE = re.compile(
    r"(?:\d{4}[-/.](?P<month>\d{1,2})[-/.](?P<day>\d{1,2})"
    r"|(?P<first>\d{1,2})[-/.](?P<second>\d{1,2})[-/.]\d{4})"
)


class ParameterError(PlainMessage, ValueError):
    """Root of the reasons flow-run parameters cannot be sent to Prefect."""


class PersonalDataInParameters(ParameterError):
    """A parameter carries what looks like an e-mail address or a phone number.

    The message names the parameter's path (`request.email`), never its value.
    """

    def __init__(self, path: str, kind: PersonalDataKind) -> None:
        self.path = path
        self.kind = kind
        what = "an e-mail address" if kind == "email" else "a phone number"
        super().__init__(
            f"flow parameter {path!r} looks like {what}: Prefect stores and shows "
            "parameters, so pass the lead's id and let the flow read the rest "
            "from the store"
        )


class ParameterNotSerialisable(ParameterError, TypeError):
    """A parameter has a value JSON cannot carry (an open connection, NaN, …)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(
            f"flow parameter {path!r} cannot be sent as JSON ({reason}); pass ids, "
            "numbers, strings, dates or pydantic models"
        )


def json_ready(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Converts flow-run parameters to plain JSON values and checks them.

    Pydantic models become dicts, datetimes ISO 8601 strings with their offset,
    dates `YYYY-MM-DD`, sets and tuples lists; a flow's own parameter
    validation turns them back into the annotated types.

    Only e-mail addresses and phone numbers can be recognised; a name cannot,
    so callers pass ids and never a lead's fields.

    Args:
        parameters: parameter name → value, as the flow is called with them.

    Returns:
        A new dict holding only JSON types (dict, list, str, int, float, bool,
        None).

    Raises:
        PersonalDataInParameters: a string (or a mapping key) at some path
            looks like an e-mail address or a phone number.
        ParameterNotSerialisable: a value has no JSON form.
    """
    ready: dict[str, Any] = {}
    for name, value in parameters.items():
        try:
            ready[str(name)] = to_jsonable_python(value)
        except PydanticSerializationError as exc:
            raise ParameterNotSerialisable(str(name), type(value).__name__) from exc

    for path, text in _strings(ready, ""):
        kind = personal_data_kind(text)
        if kind is not None:
            raise PersonalDataInParameters(path, kind)
    return ready


def personal_data_kind(text: str) -> PersonalDataKind | None:
    """Whether `text` looks like an e-mail address or a phone number, and which.

    The phone test is deliberately narrow, so ids, counts, dates and versions
    pass: the whole value must be digits with phone punctuation, 7 to 15
    digits, and either start with `+` or be split by a separator while not
    reading as a number, a date or an IP address.
    """
    # Full-width and other compatibility forms (`ＢＯＢ＠…`) read as plain ones.
    text = unicodedata.normalize("NFKC", text)
    if _EMAIL.search(text):
        return "email"
    return "phone" if _looks_like_phone(text.strip()) else None


def _looks_like_phone(text: str) -> bool:
    if not _PHONE_CHARACTERS.fullmatch(text):
        return False
    if sum(character.isdigit() for character in text) not in _PHONE_DIGITS:
        return False
    if text.startswith("+"):
        return True
    if _NUMBER.fullmatch(text) or _GROUPED_NUMBER.fullmatch(text):
        return False
    return not (_is_date(text) or _is_ip_address(text))


def _is_date(text: str) -> bool:
    found = _DATE.fullmatch(text)
    if found is None:
        return False
    if found["month"] is not None:
        return 1 <= int(found["month"]) <= 12 and 1 <= int(found["day"]) <= 31
    # Day and month come in either order (01/06/2024 or 06/01/2024).
    first, second = int(found["first"]), int(found["second"])
    return 1 <= min(first, second) <= 12 and max(first, second) <= 31


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string in a JSON value with its path; keys are strings too.

    Raises:
        ParameterNotSerialisable: a float is NaN or infinite, which JSON lacks.
    """
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, float) and not math.isfinite(value):
        raise ParameterNotSerialisable(path, f"{value} is not a JSON number")
    elif isinstance(value, dict):
        for key, item in value.items():
            # A key is checked before its value, and named by a placeholder:
            # the error message must not repeat what it refuses.
            yield (f"{path}.<key>" if path else "<name>"), key
            yield from _strings(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")
