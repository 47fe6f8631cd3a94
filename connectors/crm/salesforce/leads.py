"""Leads over REST: upsert by external id or e-mail, read, and changed."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
)
from simple_salesforce.format import format_external_id

from connectors.crm.errors import CrmRequestError
from connectors.crm.protocol import CrmRecord, CrmSnapshot, SyncFailure, SyncResult
from connectors.crm.salesforce import soql
from connectors.crm.salesforce.client import SalesforceClient
from connectors.crm.salesforce.errors import failure_of, record_failure
from connectors.crm.salesforce.fields import UnwritableValue, wire_fields

# sObject Collections take at most 200 records a call
# (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections.htm).
BATCH_SIZE = 200
DUPLICATES_DETECTED = "DUPLICATES_DETECTED"


@dataclass(frozen=True)
class Pending:
    """A record on its way to Salesforce: where it sits in the input, its REST body."""

    index: int
    record: CrmRecord
    body: dict[str, Any]


@dataclass(frozen=True)
class Duplicate:
    """A create the org's duplicate rule refused, and what it matched (SF-06).

    Attributes:
        pending: the refused record.
        match_id: the first Lead the rule matched, when it named one.
        others: records of other objects it matched instead (`Contact 003…`).
    """

    pending: Pending
    match_id: str | None
    others: tuple[str, ...] = ()


def failed(
    record: CrmRecord, failure: SyncFailure, crm_id: str | None = None
) -> SyncResult:
    return SyncResult(record.ref, "failed", crm_id=crm_id, failure=failure)


def chunks(items: Sequence[Pending], size: int = BATCH_SIZE) -> Iterator[list[Pending]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def rounds(pending: Sequence[Pending]) -> list[list[Pending]]:
    """`pending` split so no key appears twice in a round; later rounds write later.

    Two records with one key in a single call would be two creates (or a
    refused collection); in separate rounds the second one updates the first.
    """
    result: list[list[Pending]] = []
    seen: dict[str, int] = {}
    for item in pending:
        turn = seen.get(item.record.key, 0)
        seen[item.record.key] = turn + 1
        if turn == len(result):
            result.append([])
        result[turn].append(item)
    return result


def duplicate_match(errors: Any) -> tuple[str | None, tuple[str, ...]]:
    """The first Lead a DUPLICATES_DETECTED error names, and the other records.

    A duplicate rule may match records of other objects (a Contact, whose Id
    starts `003`); only a Lead can take the Lead's update, so matches are told
    apart by their `entityType`, never by position.

    Returns:
        The Lead's Id (None when no Lead was matched), and each other matched
        record as `<object> <Id>`.
    """
    lead_id: str | None = None
    others: list[str] = []
    for error in errors if isinstance(errors, list) else [errors]:
        if not isinstance(error, Mapping):
            continue
        for match in (error.get("duplicateResult") or {}).get("matchResults") or ():
            entity = str(match.get("entityType") or "unknown object")
            for found in match.get("matchRecords") or ():
                record_id = (found.get("record") or {}).get("Id")
                if not record_id:
                    continue
                if entity != "Lead":
                    others.append(f"{entity} {record_id}")
                elif lead_id is None:
                    lead_id = str(record_id)
    return lead_id, tuple(dict.fromkeys(others))


def parse_timestamp(value: Any) -> datetime | None:
    """A Salesforce datetime (`2024-01-01T12:00:00.000+0000`) as an aware datetime."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        return None


class Leads:
    """The Lead object of one org, found by an external-id field or by e-mail."""

    def __init__(self, client: SalesforceClient, key_field: str) -> None:
        self._client = client
        self.key_field = key_field
        self.by_external_id = key_field != "Email"

    # Writing ------------------------------------------------------------------

    def prepare(
        self, records: Sequence[CrmRecord]
    ) -> tuple[list[Pending], dict[int, SyncResult]]:
        """Each record's REST body; records with unwritable values fail here."""
        pending: list[Pending] = []
        refused: dict[int, SyncResult] = {}
        for index, record in enumerate(records):
            try:
                body = wire_fields(record.fields)
            except UnwritableValue as exc:
                refused[index] = failed(
                    record,
                    SyncFailure("invalid_value", str(exc), False, (exc.field,)),
                )
                continue
            if self.by_external_id:
                body[self.key_field] = record.key
            pending.append(Pending(index, record, body))
        return pending, refused

    def write(self, pending: Sequence[Pending]) -> dict[int, SyncResult]:
        """Upserts `pending` over REST, at most 200 a call; results by input index."""
        results: dict[int, SyncResult] = {}
        duplicates: list[Duplicate] = []
        for batch in rounds(pending):
            for chunk in chunks(batch):
                try:
                    if self.by_external_id:
                        found = self._upsert_by_external_id(chunk)
                    else:
                        found = self._upsert_by_email(chunk)
                except CrmRequestError as exc:
                    # Refused as a whole (a 400 for the call, not per record):
                    # these records fail, the other chunks still go.
                    results.update(batch_refused(chunk, exc))
                    continue
                for item in found:
                    if isinstance(item, Duplicate):
                        duplicates.append(item)
                    else:
                        results[item[0]] = item[1]
        results.update(self.merge_duplicates(duplicates))
        return results

    def _upsert_by_external_id(
        self, chunk: list[Pending]
    ) -> list[tuple[int, SyncResult] | Duplicate]:
        if len(chunk) == 1:
            [item] = chunk
            # The value goes into the URL: percent-encode everything, `/`
            # included, or `a/b` would name another resource (the client does
            # not encode it, simple-salesforce#389).
            path = format_external_id(self.key_field, item.record.key)
            body = {k: v for k, v in item.body.items() if k != self.key_field}

            def upsert_one(sf: Salesforce) -> Any:
                try:
                    return sf.Lead.upsert(path, body, raw_response=True)
                except (SalesforceMalformedRequest, SalesforceMoreThanOneRecord) as exc:
                    return exc

            reply = self._client.call("upsert lead by external id", upsert_one, count=1)
            return [self._single_reply(item, reply, created=None)]

        records = [{"attributes": {"type": "Lead"}, **item.body} for item in chunk]
        replies = self._client.call(
            "upsert leads by external id",
            lambda sf: sf.restful(
                f"composite/sobjects/Lead/{self.key_field}",
                method="PATCH",
                json={"allOrNone": False, "records": records},
            ),
            count=len(chunk),
        )
        return self._collection_replies(chunk, replies, created=None)

    def _upsert_by_email(
        self, chunk: list[Pending]
    ) -> list[tuple[int, SyncResult] | Duplicate]:
        existing = self.find_by_email([item.record.key for item in chunk])
        to_update = [item for item in chunk if item.record.key in existing]
        to_create = [item for item in chunk if item.record.key not in existing]
        outcomes: list[tuple[int, SyncResult] | Duplicate] = []
        if to_create:
            outcomes += self.create(
                [
                    Pending(
                        item.index, item.record, {"Email": item.record.key} | item.body
                    )
                    for item in to_create
                ]
            )
        if to_update:
            outcomes += self.update(
                [(item, existing[item.record.key]) for item in to_update], note=None
            )
        return outcomes

    def find_by_email(self, emails: Sequence[str]) -> dict[str, str]:
        """Lower-cased e-mail → Id of its oldest Lead, one query for ≤ 200 addresses."""
        if len(emails) == 1:
            query = soql.lead_ids_by_email(emails[0])
            reply = self._client.call(
                "find lead by email", lambda sf: sf.query_all(query), count=1
            )
            records = reply.get("records") or []
            return {emails[0].lower(): str(records[0]["Id"])} if records else {}
        query = soql.leads_by_emails(emails)
        reply = self._client.call(
            "find leads by email", lambda sf: sf.query_all(query), count=len(emails)
        )
        found: dict[str, str] = {}
        for record in reply.get("records") or []:
            email = str(record.get("Email") or "").lower()
            found.setdefault(email, str(record["Id"]))
        return found

    def create(self, chunk: list[Pending]) -> list[tuple[int, SyncResult] | Duplicate]:
        """Creates ≤ 200 Leads; never retried after a timeout (it may have worked)."""
        if len(chunk) == 1:
            [item] = chunk

            def create_one(sf: Salesforce) -> Any:
                try:
                    return sf.Lead.create(item.body)
                except SalesforceMalformedRequest as exc:
                    return exc

            reply = self._client.call(
                "create lead", create_one, count=1, repeatable=False
            )
            return [self._single_reply(item, reply, created=True)]
        records = [{"attributes": {"type": "Lead"}, **item.body} for item in chunk]
        replies = self._client.call(
            "create leads",
            lambda sf: sf.restful(
                "composite/sobjects",
                method="POST",
                json={"allOrNone": False, "records": records},
            ),
            count=len(chunk),
            repeatable=False,
        )
        return self._collection_replies(chunk, replies, created=True)

    def update(
        self, targets: list[tuple[Pending, str]], *, note: str | None
    ) -> list[tuple[int, SyncResult] | Duplicate]:
        """Updates ≤ 200 Leads by Id."""
        if len(targets) == 1:
            [(item, record_id)] = targets

            def update_one(sf: Salesforce) -> Any:
                try:
                    sf.Lead.update(record_id, item.body)
                except SalesforceMalformedRequest as exc:
                    return exc
                return {"id": record_id, "success": True, "errors": []}

            reply = self._client.call("update lead", update_one, count=1)
            return [self._single_reply(item, reply, created=False, note=note)]
        records = [
            {"attributes": {"type": "Lead"}, **item.body, "Id": record_id}
            for item, record_id in targets
        ]
        replies = self._client.call(
            "update leads",
            lambda sf: sf.restful(
                "composite/sobjects",
                method="PATCH",
                json={"allOrNone": False, "records": records},
            ),
            count=len(targets),
        )
        return self._collection_replies(
            [item for item, _ in targets], replies, created=False, note=note
        )

    def merge_duplicates(self, duplicates: list[Duplicate]) -> dict[int, SyncResult]:
        """Updates the Lead each duplicate-rule refusal matched, instead of creating.

        SF-06: an org's active duplicate rule refuses the create and names the
        existing Lead; that Lead is the same person, so it gets the update.
        When the error names no record (Bulk API results do not), the Lead is
        found by e-mail. When it names only records of other objects (a
        Contact), there is no Lead to update: the record fails for good.
        """
        results: dict[int, SyncResult] = {}
        unmatched = [
            item for item in duplicates if item.match_id is None and not item.others
        ]
        emails = sorted(
            {
                str(item.pending.body.get("Email") or item.pending.record.key).lower()
                for item in unmatched
                if item.pending.body.get("Email") or not self.by_external_id
            }
        )
        found: dict[str, str] = {}
        for start in range(0, len(emails), BATCH_SIZE):
            found.update(self.find_by_email(emails[start : start + BATCH_SIZE]))
        targets: list[tuple[Pending, str]] = []
        for item in duplicates:
            if item.match_id is None and item.others:
                results[item.pending.index] = failed(
                    item.pending.record,
                    SyncFailure(
                        DUPLICATES_DETECTED,
                        "the duplicate rule refused the Lead: it matches "
                        f"{', '.join(item.others)}, not a Lead, so there is no "
                        "Lead to update instead; handle the person on that "
                        "record or change the rule in Salesforce",
                        False,
                    ),
                )
                continue
            email = str(
                item.pending.body.get("Email") or item.pending.record.key
            ).lower()
            match_id = item.match_id or found.get(email)
            if match_id is None:
                results[item.pending.index] = failed(
                    item.pending.record,
                    SyncFailure(
                        DUPLICATES_DETECTED,
                        "the duplicate rule refused the Lead and named no "
                        "existing Lead to update instead",
                        False,
                    ),
                )
            else:
                targets.append((item.pending, match_id))
        for start in range(0, len(targets), BATCH_SIZE):
            for outcome in self.update(
                targets[start : start + BATCH_SIZE], note="duplicate_rule"
            ):
                if isinstance(outcome, tuple):
                    results[outcome[0]] = outcome[1]
        return results

    def _single_reply(
        self,
        item: Pending,
        reply: Any,
        *,
        created: bool | None,
        note: str | None = None,
    ) -> tuple[int, SyncResult] | Duplicate:
        """The result of a one-record call: a reply, or the record's own refusal."""
        if isinstance(reply, SalesforceMoreThanOneRecord):
            return item.index, failed(
                item.record,
                SyncFailure(
                    "MULTIPLE_RECORDS",
                    f"several Leads have this {self.key_field}; merge them in "
                    "Salesforce, then sync again",
                    False,
                    (self.key_field,),
                ),
            )
        if isinstance(reply, SalesforceMalformedRequest):
            return self._item_reply(
                item, {"success": False, "errors": reply.content}, created, note
            )
        if hasattr(reply, "status_code"):
            # sobjects/Lead/<field>/<value>: 201 with a body when created,
            # 200 with one (or 204 without, before API 46) when updated.
            body = reply.json() if reply.status_code != 204 and reply.content else {}
            body = {"success": True, "errors": [], **body}
            body.setdefault("created", reply.status_code == 201)
            return self._item_reply(item, body, created, note)
        return self._item_reply(item, reply, created, note)

    def _collection_replies(
        self,
        chunk: list[Pending],
        replies: Any,
        *,
        created: bool | None,
        note: str | None = None,
    ) -> list[tuple[int, SyncResult] | Duplicate]:
        """sObject Collections results matched to `chunk` by position.

        Salesforce answers one result per record in request order; a reply of
        another length cannot be matched, so none of it counts as written
        (SF-04).
        """
        if not isinstance(replies, list) or len(replies) != len(chunk):
            count = len(replies) if isinstance(replies, list) else 0
            failure = SyncFailure(
                "unknown",
                f"Salesforce returned {count} results for {len(chunk)} records; "
                "whether any was written is unknown",
                True,
            )
            return [(item.index, failed(item.record, failure)) for item in chunk]
        return [
            self._item_reply(item, reply, created, note)
            for item, reply in zip(chunk, replies, strict=True)
        ]

    def _item_reply(
        self,
        item: Pending,
        reply: Any,
        created: bool | None,
        note: str | None,
    ) -> tuple[int, SyncResult] | Duplicate:
        if not isinstance(reply, Mapping):
            failure = SyncFailure("unknown", "Salesforce gave no result", True)
            return item.index, failed(item.record, failure)
        crm_id = str(reply["id"]) if reply.get("id") else None
        if reply.get("success"):
            was_created = reply.get("created", created)
            outcome = "created" if was_created else "updated"
            return item.index, SyncResult(
                item.record.ref, outcome, crm_id=crm_id, note=note
            )
        errors = reply.get("errors") or []
        failure = record_failure(errors)
        if failure.code == DUPLICATES_DETECTED and note is None:
            match_id, others = duplicate_match(errors)
            return Duplicate(item, match_id, others)
        return item.index, failed(item.record, failure, crm_id)

    # Reading ------------------------------------------------------------------

    def read(
        self, keys: Sequence[str], fields: Sequence[str]
    ) -> dict[str, CrmSnapshot]:
        """The Leads found by `keys`, one SOQL query per 200 keys."""
        found: dict[str, CrmSnapshot] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), BATCH_SIZE):
            batch = unique[start : start + BATCH_SIZE]
            query = soql.leads_by_keys(self.key_field, batch, fields)
            reply = self._client.call(
                "read leads",
                lambda sf, query=query: sf.query_all(query),
                count=len(batch),
            )
            for record in reply.get("records") or []:
                snapshot = self.snapshot(record, fields)
                found.setdefault(snapshot.key, snapshot)
        return found

    def changed(
        self, start: datetime, end: datetime, fields: Sequence[str]
    ) -> Iterator[CrmSnapshot]:
        """Every Lead modified in `[start, end)`, page by page, each once."""
        query = soql.leads_changed(start, end, self.key_field, fields)
        page = self._client.call("changed leads", lambda sf: sf.query(query))
        seen: set[str] = set()
        while True:
            for record in page.get("records") or []:
                snapshot = self.snapshot(record, fields)
                if snapshot.crm_id not in seen:
                    seen.add(snapshot.crm_id)
                    yield snapshot
            if page.get("done", True) or not page.get("nextRecordsUrl"):
                return
            locator = str(page["nextRecordsUrl"])
            page = self._client.call(
                "changed leads (next page)",
                lambda sf, locator=locator: sf.query_more(
                    locator, identifier_is_url=True
                ),
            )

    def snapshot(self, record: Mapping[str, Any], fields: Sequence[str]) -> CrmSnapshot:
        """A SOQL record as a `CrmSnapshot`; e-mail keys lower-cased."""
        by_lower = {name.lower(): name for name in record if name != "attributes"}
        key = str(record.get(self.key_field) or "")
        if not self.by_external_id:
            key = key.lower()
        chosen = {
            name: record[by_lower[name.lower()]]
            for name in fields
            if name.lower() in by_lower
        }
        return CrmSnapshot(
            crm_id=str(record["Id"]),
            key=key,
            fields=chosen,
            updated_at=parse_timestamp(record.get("LastModifiedDate")),
        )


def require_results(
    records: Sequence[CrmRecord], results: Mapping[int, SyncResult]
) -> list[SyncResult]:
    """One result per record in input order; a record without one is `unknown`."""
    missing = SyncFailure("unknown", "no result came back for this record", True)
    return [
        results.get(index) or failed(record, missing)
        for index, record in enumerate(records)
    ]


def batch_refused(
    chunk: list[Pending], error: CrmRequestError
) -> dict[int, SyncResult]:
    """A call Salesforce refused as a whole, as the failure of each of its records."""
    return {item.index: failed(item.record, failure_of(error)) for item in chunk}
