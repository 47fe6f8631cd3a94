"""HubSpot contacts: upserts and reads by e-mail, and changes over a time window."""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from hubspot.crm.contacts import (
    BatchInputSimplePublicObjectBatchInputUpsert,
    BatchReadInputSimplePublicObjectId,
    PublicObjectSearchRequest,
    SimplePublicObjectInput,
)

from connectors.crm.errors import CrmError, CrmRequestError
from connectors.crm.hubspot.client import HubSpotClient
from connectors.crm.hubspot.errors import (
    HubSpotConflict,
    HubSpotNotFound,
    HubSpotValidationError,
)
from connectors.crm.protocol import (
    CrmRecord,
    CrmSnapshot,
    FieldValue,
    SyncFailure,
    SyncResult,
)

logger = logging.getLogger(__name__)

KEY = "email"
# Every batch endpoint takes at most 100 inputs.
BATCH_SIZE = 100
# Search: at most 200 per page and 10,000 results per query (paging past them
# answers 400, HS-08), and about five requests a second per account.
PAGE_SIZE = 200
SEARCH_CAP = 10_000
SEARCH_INTERVAL_SECONDS = 0.25
MODIFIED = "lastmodifieddate"
# An e-mail address inside an error message: the local part's characters
# (RFC 5322 atext and dots) and a domain of labels. Quoted local parts do not
# occur in the addresses we send.
ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)*")


class InvalidValue(ValueError):
    """A field value HubSpot's format has no place for."""


def to_hubspot(value: FieldValue) -> str:
    """A value in HubSpot's format: always a string.

    Dates become midnight UTC of that calendar date in epoch milliseconds (the
    date given is already the lead's local date); datetimes become the instant
    in epoch milliseconds; `""` stays `""`, which clears the property.

    Raises:
        InvalidValue: a naive datetime, or a number that is not finite.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidValue(
                f"datetime {value.isoformat()} has no time zone; HubSpot stores "
                "instants, so give it one"
            )
        return str(round(value.timestamp() * 1000))
    if isinstance(value, date):
        midnight = datetime(value.year, value.month, value.day, tzinfo=UTC)
        return str(round(midnight.timestamp() * 1000))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValue(f"{value} is not a number HubSpot can store")
        return str(int(value)) if value.is_integer() else repr(value)
    return value


@dataclass
class Pending:
    """One contact to write: its key, its properties, the refs that asked for it.

    `unsubscribe`: the address is to leave the opt-out subscription type too.
    """

    key: str
    properties: dict[str, str]
    refs: list[str]
    unsubscribe: bool = False


def collapse(records: Sequence[CrmRecord]) -> tuple[list[Pending], list[SyncResult]]:
    """One write per e-mail, and the records refused before any call.

    Two records with the same key would make HubSpot refuse the whole batch
    (HS-04): they become one write where later non-empty values win, and both
    refs get its result; an opt-out of either is kept.
    """
    by_key: dict[str, Pending] = {}
    refused = []
    for record in records:
        key = record.key.strip().lower()
        try:
            properties = {name: to_hubspot(v) for name, v in record.fields.items()}
        except InvalidValue as exc:
            failure = SyncFailure("invalid_value", str(exc), retryable=False)
            refused.append(SyncResult(record.ref, "failed", failure=failure))
            continue
        properties[KEY] = key
        pending = by_key.get(key)
        if pending is None:
            by_key[key] = Pending(key, properties, [record.ref], record.unsubscribe)
            continue
        pending.refs.append(record.ref)
        pending.unsubscribe = pending.unsubscribe or record.unsubscribe
        for name, value in properties.items():
            if value != "" or name not in pending.properties:
                pending.properties[name] = value
    return list(by_key.values()), refused


def _failed(error: CrmError, **extra: Any) -> SyncResult:
    failure = SyncFailure(
        error.code,
        str(error),
        retryable=error.retryable,
        retry_after=error.retry_after,
        **extra,
    )
    return SyncResult("", "failed", failure=failure)


class ContactWriter:
    """Upserts contacts by e-mail through batch upsert, 100 at a time."""

    def __init__(self, client: HubSpotClient) -> None:
        self._client = client

    def write(self, batch: list[Pending]) -> dict[str, SyncResult]:
        """Each key's result (its `ref` left blank for the caller to fill).

        A batch HubSpot refuses whole for one record's values (400) is split in
        halves until the bad records stand alone, so the good ones are written.
        A 409 is resolved to an update of the contact HubSpot names (HS-01/03).
        """
        try:
            response = self._client.call(
                "batch upsert contacts",
                self._client.batch_api.upsert_with_http_info,
                BatchInputSimplePublicObjectBatchInputUpsert(
                    inputs=[
                        {"idProperty": KEY, "id": p.key, "properties": p.properties}
                        for p in batch
                    ]
                ),
                count=len(batch),
            )
        except (HubSpotValidationError, HubSpotConflict) as exc:
            if len(batch) > 1:
                middle = len(batch) // 2
                return self.write(batch[:middle]) | self.write(batch[middle:])
            (only,) = batch
            if isinstance(exc, HubSpotConflict):
                return {only.key: self._resolve_conflict(only, exc)}
            return {only.key: self._refused(exc)}
        except CrmRequestError as exc:
            # Refused for a reason no record's values explain (403 scopes, a 404):
            # every record in the call shares it.
            return {p.key: _failed(exc) for p in batch}
        return self._results(batch, response)

    def _results(self, batch: list[Pending], response: Any) -> dict[str, SyncResult]:
        """Results matched by e-mail: HubSpot does not keep input order."""
        results: dict[str, SyncResult] = {}
        for item in response.results or ():
            key = str((item.properties or {}).get(KEY) or "").lower()
            # `new` may be missing from a reply; the contact was written either way.
            outcome = "created" if item.new else "updated"
            results[key] = SyncResult("", outcome, crm_id=str(item.id))
        keys = {p.key for p in batch}
        loose = []
        for error in getattr(response, "errors", None) or ():
            named = _keys_named(error, keys)
            failure = SyncFailure(
                _code(error),
                str(error.message),
                retryable=False,
                fields=_fields(error),
            )
            for key in named:
                results.setdefault(key, SyncResult("", "failed", failure=failure))
            if not named:
                loose.append(str(error.message))
        for pending in batch:
            if pending.key not in results:
                # HS-02: a reply with fewer results than inputs is never success.
                said = f" HubSpot reported: {'; '.join(loose)}" if loose else ""
                failure = SyncFailure(
                    "unknown",
                    f"HubSpot returned no result for this contact.{said}",
                    retryable=True,
                )
                results[pending.key] = SyncResult("", "failed", failure=failure)
        return results

    def _refused(self, exc: HubSpotValidationError) -> SyncResult:
        fields = tuple(dict.fromkeys(f for p in exc.problems for f in p.fields))
        messages = "; ".join(p.message for p in exc.problems) or str(exc)
        failure = SyncFailure(exc.code, messages, retryable=False, fields=fields)
        return SyncResult("", "failed", failure=failure)

    def _resolve_conflict(self, pending: Pending, exc: HubSpotConflict) -> SyncResult:
        """Updates the contact a 409 said holds the e-mail (HS-01)."""
        try:
            crm_id = exc.existing_id or self._id_of(pending.key)
            contact = self._client.call(
                "update conflicting contact",
                self._client.basic_api.update_with_http_info,
                crm_id,
                SimplePublicObjectInput(properties=pending.properties),
            )
        except HubSpotValidationError as refused:
            return self._refused(refused)
        except CrmRequestError as refused:
            return _failed(refused)
        return SyncResult("", "updated", crm_id=str(contact.id), note="conflict")

    def _id_of(self, key: str) -> str:
        contact = self._client.call(
            "read contact by e-mail",
            self._client.basic_api.get_by_id_with_http_info,
            key,
            properties=[KEY],
            id_property=KEY,
        )
        return str(contact.id)


def _keys_named(error: Any, keys: set[str]) -> list[str]:
    """The batch's keys a per-item error names in its context or message.

    Only whole addresses count: an error about `ann@x.com` must not be pinned
    on `n@x.com` too. A record the error does not clearly name is left without
    a result, which makes it `unknown` (retryable).
    """
    named = [
        str(value).lower()
        for values in (error.context or {}).values()
        for value in values or ()
        if str(value).lower() in keys
    ]
    if not named:
        for address in ADDRESS.findall(str(error.message or "")):
            address = address.lower()
            # A quote before an address is not part of it ('ann@x.com'), unless
            # a key really starts with one.
            if address not in keys:
                address = address.lstrip("'")
            if address in keys:
                named.append(address)
    return list(dict.fromkeys(named))


def _code(error: Any) -> str:
    for detail in error.errors or ():
        if detail.code:
            return str(detail.code)
    return str(error.category or "unknown")


def _fields(error: Any) -> tuple[str, ...]:
    names = [
        str(name)
        for detail in error.errors or ()
        for name in (detail.context or {}).get("propertyName") or ()
    ]
    names += [str(n) for n in (error.context or {}).get("propertyName") or ()]
    return tuple(dict.fromkeys(names))


def read_contacts(
    client: HubSpotClient, keys: Sequence[str], fields: Sequence[str]
) -> dict[str, CrmSnapshot]:
    """The contacts found by e-mail (lower-cased e-mail → snapshot)."""
    wanted = list(dict.fromkeys(k.strip().lower() for k in keys))
    names = list(dict.fromkeys([*fields, KEY]))
    found: dict[str, CrmSnapshot] = {}
    for start in range(0, len(wanted), BATCH_SIZE):
        chunk = wanted[start : start + BATCH_SIZE]
        try:
            response = client.call(
                "batch read contacts",
                client.batch_api.read_with_http_info,
                BatchReadInputSimplePublicObjectId(
                    inputs=[{"id": key} for key in chunk],
                    id_property=KEY,
                    properties=names,
                    properties_with_history=[],
                ),
                count=len(chunk),
            )
        except HubSpotNotFound:
            # None of the chunk exists (a 404 rather than a 207).
            continue
        # A 207's errors name the keys not found; absent keys are simply absent.
        for item in response.results or ():
            snapshot = snapshot_of(item, fields)
            found[snapshot.key] = snapshot
    return found


def read_contact(
    client: HubSpotClient, contact_id: str, fields: Sequence[str]
) -> CrmSnapshot | None:
    """One contact by its record id (as webhooks name it); None when it is gone."""
    try:
        item = client.call(
            "read contact",
            client.basic_api.get_by_id_with_http_info,
            contact_id,
            properties=list(dict.fromkeys([*fields, KEY])),
            archived=False,
        )
    except HubSpotNotFound:
        return None
    return snapshot_of(item, fields)


def snapshot_of(item: Any, fields: Sequence[str]) -> CrmSnapshot:
    properties = item.properties or {}
    return CrmSnapshot(
        crm_id=str(item.id),
        key=str(properties.get(KEY) or "").lower(),
        fields={
            name: properties[name]
            for name in fields
            if properties.get(name) is not None
        },
        updated_at=item.updated_at,
    )


class ChangeScanner:
    """Every contact modified in a window, through search, within its 10,000 cap."""

    def __init__(
        self,
        client: HubSpotClient,
        *,
        sleep: Callable[[float], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._sleep = sleep
        self._clock = clock
        self._last_search: float | None = None

    def scan(
        self, start: datetime, end: datetime, fields: Sequence[str]
    ) -> Iterator[CrmSnapshot]:
        """Each contact with `lastmodifieddate` in `[start, end)`, once.

        A window whose `total` exceeds what search will page through is split in
        halves until each part fits (HS-08); ids are de-duplicated because a
        contact modified during the scan may move into a later window.
        """
        if start.tzinfo is None or end.tzinfo is None:
            raise CrmRequestError(
                "changed(): start and end must be aware datetimes, "
                f"got {start!r} and {end!r}",
                code="invalid_window",
            )
        seen: set[str] = set()
        windows = [(_ms(start), _ms(end))]
        names = list(dict.fromkeys([*fields, KEY, MODIFIED]))
        while windows:
            low, high = windows.pop(0)
            page = self._search(low, high, names, 0)
            if page.total > SEARCH_CAP and high - low > 1:
                middle = (low + high) // 2
                windows[:0] = [(low, middle), (middle, high)]
                continue
            if page.total > SEARCH_CAP:
                # HubSpot search lists at most 10,000 results per query and a
                # window cannot be split below one millisecond: the rest of
                # such a burst is not seen by this run (the next run's window
                # overlaps, but starts after it). Said loudly, never silently.
                logger.warning(
                    "HubSpot search: %d contacts share one millisecond; "
                    "only %d can be listed",
                    page.total,
                    SEARCH_CAP,
                )
            while True:
                for item in page.results or ():
                    if item.id not in seen:
                        seen.add(item.id)
                        yield snapshot_of(item, fields)
                after = getattr(getattr(page.paging, "next", None), "after", None)
                if after is None or int(after) >= SEARCH_CAP:
                    break
                page = self._search(low, high, names, int(after))

    def _search(self, low: int, high: int, names: list[str], after: int) -> Any:
        # The search endpoints allow about five requests a second per account,
        # far below the ten-secondly budget: keep our own pace on top of it.
        if self._last_search is not None:
            wait = SEARCH_INTERVAL_SECONDS - (self._clock() - self._last_search)
            if wait > 0:
                self._sleep(wait)
        request = PublicObjectSearchRequest(
            filter_groups=[
                {
                    "filters": [
                        {
                            "propertyName": MODIFIED,
                            "operator": "GTE",
                            "value": str(low),
                        },
                        {
                            "propertyName": MODIFIED,
                            "operator": "LT",
                            "value": str(high),
                        },
                    ]
                }
            ],
            # HubSpot allows one sorting rule per search; ties are left in its
            # order, which the de-duplication by id makes harmless.
            sorts=[{"propertyName": MODIFIED, "direction": "ASCENDING"}],
            properties=names,
            limit=PAGE_SIZE,
            after=str(after) if after else None,
        )
        try:
            return self._client.call(
                "search contacts",
                self._client.search_api.do_search_with_http_info,
                request,
                count=PAGE_SIZE,
            )
        finally:
            self._last_search = self._clock()


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)
