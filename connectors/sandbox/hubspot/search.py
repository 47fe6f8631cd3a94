"""`POST /crm/v3/objects/contacts/search`, with HubSpot's limits on what it answers."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from connectors.sandbox.hubspot.contacts import Contact, Contacts
from connectors.sandbox.hubspot.errors import HubSpotError
from connectors.sandbox.hubspot.properties import (
    CONTACT_PROPERTIES,
    parse_instant_ms,
    parse_number,
)

# HubSpot's documented search limits: at most 10,000 results per query (paging
# past them answers 400), 200 per page, 5 filter groups of at most 25 filters
# in all, and one sorting rule per search.
MAX_RESULTS = 10_000
MAX_LIMIT = 200
DEFAULT_LIMIT = 10
MAX_FILTER_GROUPS = 5
MAX_FILTERS = 25
MAX_SORTS = 1
OPERATORS = {
    "EQ",
    "NEQ",
    "LT",
    "LTE",
    "GT",
    "GTE",
    "BETWEEN",
    "IN",
    "NOT_IN",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
    "CONTAINS_TOKEN",
    "NOT_CONTAINS_TOKEN",
}
# Free-text `query` looks in these, as HubSpot's default searchable properties.
QUERY_PROPERTIES = ("email", "firstname", "lastname", "phone", "company")
CACHED_QUERIES = 8

Comparable = float | str
Predicate = Callable[[Contact], bool]


class Searcher:
    """Answers searches; a query's sorted matches are cached until contacts change.

    Paging through 24,000 contacts asks the same query 120 times; sorting them
    once keeps each page a slice.
    """

    def __init__(self, contacts: Contacts) -> None:
        self._contacts = contacts
        self._cache: OrderedDict[str, tuple[int, list[Contact]]] = OrderedDict()
        self._lock = threading.Lock()

    def search(self, body: dict[str, Any]) -> dict[str, Any]:
        """The search response for a request body.

        Raises:
            HubSpotError: 400 for a request HubSpot refuses.
        """
        limit = _int(body.get("limit", DEFAULT_LIMIT), "limit")
        after = _int(body.get("after") or 0, "after")
        if not 0 < limit <= MAX_LIMIT:
            raise HubSpotError(400, f"limit must be between 1 and {MAX_LIMIT}.")
        if after >= MAX_RESULTS:
            # HubSpot answers 400 past its 10,000-result cap (HS-08), although its
            # last page still offers a `paging.next.after` of 10,000.
            raise HubSpotError(
                400,
                f"Search results are limited to {MAX_RESULTS} per query; "
                f"after={after} goes past that.",
            )
        # Requested properties the account lacks are left out of the
        # results, as HubSpot's reads do; filters and sorts on them are errors.
        names = body.get("properties") or None

        matches = self._matches(body)
        page = matches[after : min(after + limit, MAX_RESULTS)]
        answer: dict[str, Any] = {
            "total": len(matches),
            "results": [contact.as_api(names) for contact in page],
        }
        if after + limit < len(matches):
            answer["paging"] = {"next": {"after": str(after + limit)}}
        return answer

    def _matches(self, body: dict[str, Any]) -> list[Contact]:
        groups = body.get("filterGroups") or []
        sorts = body.get("sorts") or []
        query = body.get("query") or ""
        key = json.dumps([groups, sorts, query], sort_keys=True)
        version = self._contacts.version
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] == version:
                return cached[1]

        keep = _compile(groups, query)
        order = _ordering(sorts)
        with self._contacts.lock:
            version = self._contacts.version
            matches = [c for c in self._contacts.by_id.values() if keep(c)]
        matches = order(matches)
        with self._lock:
            self._cache[key] = (version, matches)
            self._cache.move_to_end(key)
            while len(self._cache) > CACHED_QUERIES:
                self._cache.popitem(last=False)
        return matches


def _int(value: object, name: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise HubSpotError(400, f"{name} must be an integer, got {value!r}.") from None


def _own(contact: Contact, name: str) -> Comparable | None:
    """The contact's value of `name`, comparable; system values without parsing."""
    if name == "createdate":
        return float(contact.created_ms)
    if name == "lastmodifieddate":
        return float(contact.updated_ms)
    if name == "hs_object_id":
        return float(contact.id)
    return _comparable(name, contact.values.get(name))


def _comparable(name: str, text: str | None) -> Comparable | None:
    """A value made comparable the way HubSpot compares its type."""
    if text is None:
        return None
    kind = CONTACT_PROPERTIES[name].type
    if kind in ("date", "datetime"):
        ms = parse_instant_ms(text)
        return None if ms is None else float(ms)
    if kind == "number":
        return parse_number(text)
    # String comparisons in search ignore case.
    return text.lower()


def _filter(spec: dict[str, Any]) -> Predicate:
    name = spec.get("propertyName", "")
    operator = spec.get("operator", "")
    if name not in CONTACT_PROPERTIES:
        raise HubSpotError(400, f'Property "{name}" does not exist')
    if operator not in OPERATORS:
        raise HubSpotError(400, f"Unknown operator {operator!r}.")

    def own(contact: Contact) -> Comparable | None:
        return _own(contact, name)

    if operator == "HAS_PROPERTY":
        return lambda c: c.value(name) is not None
    if operator == "NOT_HAS_PROPERTY":
        return lambda c: c.value(name) is None
    if operator in ("IN", "NOT_IN"):
        values = {_comparable(name, str(v)) for v in spec.get("values") or []}
        if operator == "IN":
            return lambda c: own(c) in values
        return lambda c: own(c) not in values
    if operator in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        token = str(spec.get("value", "")).lower().strip("*")

        def contains(c: Contact) -> bool:
            return token in (c.value(name) or "").lower()

        if operator == "CONTAINS_TOKEN":
            return contains
        return lambda c: not contains(c)

    wanted = _comparable(name, str(spec.get("value", "")))
    if wanted is None:
        raise HubSpotError(400, f"{spec.get('value')!r} is not a valid {name} value.")
    if operator == "BETWEEN":
        high = _comparable(name, str(spec.get("highValue", "")))
        if high is None:
            raise HubSpotError(400, "BETWEEN needs a valid highValue.")
        return lambda c: (v := own(c)) is not None and wanted <= v <= high  # type: ignore[operator]
    compare: dict[str, Callable[[Any, Any], bool]] = {
        "EQ": lambda v, w: v == w,
        # Contacts without the property count as not equal (unverified at HubSpot).
        "NEQ": lambda v, w: v != w,
        "LT": lambda v, w: v is not None and v < w,
        "LTE": lambda v, w: v is not None and v <= w,
        "GT": lambda v, w: v is not None and v > w,
        "GTE": lambda v, w: v is not None and v >= w,
    }
    check = compare[operator]
    return lambda c: check(own(c), wanted)


def _compile(groups: list[dict[str, Any]], query: str) -> Predicate:
    """One predicate for the filter groups (OR of ANDs) and the free-text query."""
    if len(groups) > MAX_FILTER_GROUPS:
        raise HubSpotError(
            400, f"At most {MAX_FILTER_GROUPS} filterGroups are allowed."
        )
    if sum(len(g.get("filters") or []) for g in groups) > MAX_FILTERS:
        raise HubSpotError(400, f"At most {MAX_FILTERS} filters are allowed.")
    compiled = [[_filter(f) for f in g.get("filters") or []] for g in groups]
    needle = query.lower()

    def keep(contact: Contact) -> bool:
        if needle and not any(
            needle in (contact.value(n) or "").lower() for n in QUERY_PROPERTIES
        ):
            return False
        return not compiled or any(all(f(contact) for f in g) for g in compiled)

    return keep


def _ordering(sorts: list[Any]) -> Callable[[list[Contact]], list[Contact]]:
    """Sorting by the one rule given (`"name"`, `"-name"` or an object), then by id."""
    if len(sorts) > MAX_SORTS:
        raise HubSpotError(400, "Only one sorting rule is allowed per search.")
    if not sorts:
        return lambda contacts: sorted(contacts, key=lambda c: c.id)
    rule = sorts[0]
    if isinstance(rule, str):
        name, descending = rule.lstrip("-"), rule.startswith("-")
    else:
        name = rule.get("propertyName", "")
        descending = rule.get("direction", "ASCENDING") == "DESCENDING"
    if name not in CONTACT_PROPERTIES:
        raise HubSpotError(400, f'Property "{name}" does not exist')

    def ordered(contacts: list[Contact]) -> list[Contact]:
        # Ties keep id order, ascending either way; HubSpot does not say how it
        # breaks them, which is why callers page with half-open windows.
        present = [(_own(c, name), c) for c in contacts]
        valued = sorted(
            (p for p in present if p[0] is not None),
            key=lambda p: p[1].id,
        )
        valued.sort(key=lambda p: p[0], reverse=descending)  # type: ignore[arg-type, return-value]
        unset = sorted((p[1] for p in present if p[0] is None), key=lambda c: c.id)
        return [c for _, c in valued] + unset

    return ordered
