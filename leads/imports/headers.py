"""Matching the column headers of a lead file to lead fields, by name or by mapping."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from leads.imports.errors import HeaderError

# The lead fields an imported column can fill; any other column is custom.
LEAD_FIELDS = (
    "email",
    "phone",
    "first_name",
    "last_name",
    "company",
    "job_title",
    "website",
    "street",
    "city",
    "state",
    "postal_code",
    "country",
    "timezone",
    "notes",
    "source",
    "status",
)

# Spellings of each field as `header_key` reduces them: ours, Salesforce's Lead
# field names (export and API), HubSpot's contact export labels, and a few
# other common ones. The field's own name is matched too.
_SPELLINGS: dict[str, tuple[str, ...]] = {
    "email": ("emailaddress",),
    "phone": ("phonenumber", "telephone", "telephonenumber"),
    "first_name": ("givenname", "forename"),
    "last_name": ("surname", "familyname"),
    "company": ("companyname", "organisation", "organization"),
    "job_title": ("title", "position"),
    "website": ("websiteurl", "url"),
    "street": ("streetaddress", "address", "addressline1"),
    "city": ("town",),
    "state": ("stateregion", "stateprovince", "province", "region"),
    "postal_code": ("postcode", "zip", "zipcode", "zippostalcode"),
    "country": ("countryregion", "countrycode"),
    "timezone": ("tz",),
    "notes": ("note", "description", "comments", "comment"),
    "source": ("leadsource", "originalsource"),
    "status": ("leadstatus",),
}

# Spellings that fill a field only when no column of the file names it
# directly: Salesforce's MobilePhone and HubSpot's Mobile Phone Number stand in
# for a missing Phone, a Salesforce Contact export's Mailing* address for the
# plain one.
_STAND_INS: dict[str, tuple[str, ...]] = {
    "phone": ("mobilephone", "mobilephonenumber", "mobile", "mobilenumber"),
    "street": ("mailingstreet",),
    "city": ("mailingcity",),
    "state": ("mailingstate",),
    "postal_code": ("mailingpostalcode",),
    "country": ("mailingcountry",),
}


def header_key(name: str) -> str:
    """The header as headers are compared: NFKC, case-folded, letters and digits."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(char for char in folded if char.isalnum())


def _by_key(spellings: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    return {key: field for field, keys in spellings.items() for key in keys}


_FIELD_BY_KEY = {header_key(field): field for field in LEAD_FIELDS}
_FIELD_BY_KEY.update(_by_key(_SPELLINGS))
_STAND_IN_BY_KEY = _by_key(_STAND_INS)


def match_headers(
    names: Sequence[str], mapping: Mapping[str, str] | None = None
) -> list[str]:
    """The name each column's values go under: a lead field, or a custom name.

    A header the mapping names goes where the mapping says. Any other header
    is matched to a lead field ignoring case, spaces, underscores and
    punctuation (`First Name`, `FirstName` and `first_name` are `first_name`),
    unless the mapping already sends a column to that field; a header that
    matches no field is kept as written, stripped of surrounding spaces.

    Args:
        names: the header line's cells, in column order.
        mapping: file header → field or custom name; a key is found by its exact
            text first, then as headers are compared.

    Returns:
        One name per column, in column order.

    Raises:
        HeaderError: a header is empty, the mapping names a column the file does
            not have or gives an empty name, or two columns land on one name.
    """
    names = [name.strip() for name in names]
    _refuse_empty(names)
    targets: list[str | None] = [None] * len(names)

    for header, target in (mapping or {}).items():
        column = _find(names, header)
        if not target.strip():
            raise HeaderError(
                f"the mapping gives column {column + 1} ({names[column]!r}) an "
                "empty name; expected a lead field such as 'email' or a custom "
                "field name: give it one, or leave the column out of the mapping",
                columns=(column + 1,),
            )
        targets[column] = target.strip()

    claimed = set(targets)
    # Stand-ins go second, so that a Phone anywhere in the file wins over a
    # MobilePhone before it.
    for table in (_FIELD_BY_KEY, _STAND_IN_BY_KEY):
        found: dict[int, str] = {}
        for column, name in enumerate(names):
            field = table.get(header_key(name))
            if targets[column] is None and field is not None and field not in claimed:
                found[column] = field
        for column, field in found.items():
            targets[column] = field
        claimed.update(found.values())

    chosen = [target or name for target, name in zip(targets, names, strict=True)]
    _refuse_collisions(names, chosen)
    return chosen


def _refuse_empty(names: Sequence[str]) -> None:
    empty = tuple(column + 1 for column, name in enumerate(names) if not name)
    if not empty:
        return
    if len(empty) == 1:
        which = f"column {empty[0]} of the header line has"
    else:
        listed = ", ".join(str(column) for column in empty[:-1])
        which = f"columns {listed} and {empty[-1]} of the header line have"
    raise HeaderError(
        f"{which} no name; expected a name for every column: name it, or delete "
        "the column if it holds nothing",
        columns=empty,
    )


def _find(names: Sequence[str], header: str) -> int:
    wanted = header.strip()
    if wanted in names:
        return names.index(wanted)
    close = [column for column, name in enumerate(names) if _alike(name, wanted)]
    if len(close) == 1:
        return close[0]
    present = ", ".join(repr(name) for name in names)
    raise HeaderError(
        f"the mapping names the column {header!r}, which the file does not have; "
        f"the file's columns are {present}: correct the mapping or the file"
    )


def _alike(name: str, wanted: str) -> bool:
    return bool(header_key(name)) and header_key(name) == header_key(wanted)


def _refuse_collisions(names: Sequence[str], chosen: Sequence[str]) -> None:
    columns_of: dict[str, list[int]] = {}
    for column, target in enumerate(chosen):
        columns_of.setdefault(target, []).append(column + 1)
    clashes = {target: cols for target, cols in columns_of.items() if len(cols) > 1}
    if not clashes:
        return
    described = "; ".join(
        " and ".join(f"column {col} ({names[col - 1]!r})" for col in cols)
        + f" land on {target!r}"
        for target, cols in clashes.items()
    )
    raise HeaderError(
        f"{described}; expected one column per field: delete or rename all but "
        "one, or send the others elsewhere with the mapping",
        columns=tuple(sorted(col for cols in clashes.values() for col in cols)),
    )


@dataclass(frozen=True)
class ColumnMapping:
    """A user's mapping: where columns go, and which hold numbers.

    Attributes:
        names: file header → lead field or custom name.
        numbers: field or custom name → its decimal mark (`,` or `.`), or None
            to tell it from each value, for the columns declared numbers.
    """

    names: dict[str, str] = field(default_factory=dict)
    numbers: dict[str, str | None] = field(default_factory=dict)


def read_mapping(given: Mapping[str, Any] | None) -> ColumnMapping:
    """Reads a mapping: each header → a name, or `{field, type, decimal_mark}`.

    `{"Deal Value": {"field": "deal_value", "type": "number"}}` sends the
    column to `deal_value` and stores its values as numbers (`1.234,50` becomes
    1234.5); `{"Deal Value": "deal_value"}` keeps them as written.

    Raises:
        HeaderError: an entry is neither a name nor such an object; the message
            names the header.
    """
    names: dict[str, str] = {}
    numbers: dict[str, str | None] = {}
    for header, target in (given or {}).items():
        if isinstance(target, str):
            names[header] = target
            continue
        if not isinstance(target, Mapping) or not isinstance(target.get("field"), str):
            raise HeaderError(
                f"mapping for {header!r}: expected a field name, or an object "
                'such as {"field": "deal_value", "type": "number"}'
            )
        unknown = set(target) - {"field", "type", "decimal_mark"}
        kind = target.get("type", "text")
        mark = target.get("decimal_mark")
        if unknown or kind not in ("text", "number") or mark not in (None, ",", "."):
            raise HeaderError(
                f"mapping for {header!r}: `type` is `text` or `number`, "
                "`decimal_mark` is `,` or `.`, and nothing else may be set"
                + (f" (got {', '.join(sorted(unknown))})" if unknown else "")
            )
        names[header] = target["field"]
        if kind == "number":
            numbers[target["field"]] = mark
    return ColumnMapping(names, numbers)
