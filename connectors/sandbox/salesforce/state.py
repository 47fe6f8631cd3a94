"""What the Salesforce half of the sandbox holds: records, sessions, limits, jobs."""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from typing import Any, TypeVar

from connectors.sandbox.salesforce.fields import (
    ACCOUNT,
    LEAD,
    FieldDef,
    FieldError,
    RecordRefused,
    SObjectType,
    check_values,
    format_datetime,
)

T = TypeVar("T")

API_VERSION = "59.0"
# Salesforce Enterprise Edition's base: 100,000 requests per rolling 24 hours
# (https://developer.salesforce.com/docs/atlas.en-us.salesforce_app_limits_cheatsheet.meta/salesforce_app_limits_cheatsheet/salesforce_app_limits_platform_api.htm).
DEFAULT_DAILY_ALLOCATION = 100_000
# SOQL returns at most 2,000 records a page unless asked for fewer.
DEFAULT_PAGE_SIZE = 2_000
WINDOW_SECONDS = 24 * 60 * 60
ORG_ID = "00D000000000001AAA"
USER_ID = "005000000000001AAA"


class MultipleMatches(Exception):
    """An upsert's external id matched several records (Salesforce's 300)."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__(f"{len(ids)} records match")
        self.ids = ids


@dataclass
class Session:
    """An access token the sandbox issued."""

    username: str
    client_id: str
    issued_at: float
    expired: bool = False


@dataclass
class Settings:
    """The knobs control routes turn."""

    duplicate_rule: bool = False
    daily_allocation: int = DEFAULT_DAILY_ALLOCATION
    page_size: int = DEFAULT_PAGE_SIZE
    # Bulk jobs stop (state `Failed`) after this many rows; the rest is unprocessed.
    bulk_fail_after: int | None = None
    # Tokens issued from now on are dead on arrival (SF-01's second 401).
    sessions_born_expired: bool = False


@dataclass
class BulkJob:
    """A Bulk API 2.0 ingest job and, once processed, its per-row results."""

    id: str
    operation: str
    sobject: SObjectType
    external_id_field: str | None
    created: str
    state: str = "Open"
    data: bytes = b""
    columns: list[str] = dataclass_field(default_factory=list)
    successful: list[dict[str, str]] = dataclass_field(default_factory=list)
    failed: list[dict[str, str]] = dataclass_field(default_factory=list)
    unprocessed: list[dict[str, str]] = dataclass_field(default_factory=list)
    error_message: str | None = None

    def info(self, version: str) -> dict[str, Any]:
        """The job as `GET jobs/ingest/<id>` shows it."""
        body: dict[str, Any] = {
            "id": self.id,
            "operation": self.operation,
            "object": self.sobject.name,
            "createdById": USER_ID,
            "createdDate": self.created,
            "systemModstamp": self.created,
            "state": self.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(version),
            "jobType": "V2Ingest",
            "lineEnding": "LF",
            "columnDelimiter": "COMMA",
            "numberRecordsProcessed": len(self.successful) + len(self.failed),
            "numberRecordsFailed": len(self.failed),
            "retries": 0,
            "totalProcessingTime": 0,
        }
        if self.external_id_field:
            body["externalIdFieldName"] = self.external_id_field
        if self.error_message:
            body["errorMessage"] = self.error_message
        return body


def now_text() -> str:
    return format_datetime(datetime.now(UTC))


class State:
    """Leads, Accounts, sessions and the API allocation, safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        # Ids keep counting after a reset, as a real org never reuses one.
        self._next_number = 1
        # Grows with every change to Leads and Accounts, so a saver can tell.
        self.version = 0
        self.reset()

    def reset(self) -> None:
        """Forgets every record, session, job, counter and setting."""
        with self._lock:
            self.version += 1
            self.leads: dict[str, dict[str, Any]] = {}
            self.accounts: dict[str, dict[str, Any]] = {}
            self.deleted: dict[str, dict[str, Any]] = {}
            self.sessions: dict[str, Session] = {}
            self.cursors: dict[str, list[dict[str, Any]]] = {}
            self.jobs: dict[str, BulkJob] = {}
            self.requests: Counter[str] = Counter()
            self.settings = Settings()
            self._calls: deque[float] = deque()
            self._extra_usage = 0
            # Public keys (PEM) JWT bearer assertions are checked against.
            self.jwt_keys: list[str] = []

    # Records ---------------------------------------------------------------

    def new_id(self, prefix: str) -> str:
        """A fresh 18-character id: `00Q000000000001AAA` for the first Lead."""
        with self._lock:
            number = self._next_number
            self._next_number += 1
        return f"{prefix}{number:012d}AAA"

    def table(self, sobject: SObjectType) -> dict[str, dict[str, Any]]:
        return self.leads if sobject is LEAD else self.accounts

    def as_rest(
        self,
        sobject: SObjectType,
        record: dict[str, Any],
        fields: list[FieldDef] | tuple[FieldDef, ...] | None = None,
        version: str = API_VERSION,
    ) -> dict[str, Any]:
        """A stored record as the REST API returns it, `attributes` first."""
        chosen = fields or sobject.fields
        body: dict[str, Any] = {
            "attributes": {
                "type": sobject.name,
                "url": f"/services/data/v{version}/sobjects/{sobject.name}/"
                f"{record['Id']}",
            }
        }
        body.update({field.name: record.get(field.name) for field in chosen})
        return body

    def snapshot(self) -> list[dict[str, Any]]:
        """Every Lead as the REST API returns it."""
        with self._lock:
            return [self.as_rest(LEAD, record) for record in self.leads.values()]

    def seed(self, sobject: SObjectType, values: dict[str, Any]) -> str:
        """Stores a record as given, past every rule (for tests and demos)."""
        with self._lock:
            record = self._blank(sobject)
            for name, value in values.items():
                field = sobject.field(name)
                if field is None:
                    raise RecordRefused(
                        FieldError("INVALID_FIELD", f"No such column '{name}'", (name,))
                    )
                record[field.name] = value
            record["Id"] = record["Id"] or self.new_id(sobject.key_prefix)
            self.table(sobject)[record["Id"]] = record
            self.version += 1
            return str(record["Id"])

    def _blank(self, sobject: SObjectType) -> dict[str, Any]:
        stamp = now_text()
        record = {field.name: field.default for field in sobject.fields}
        record.update(CreatedDate=stamp, LastModifiedDate=stamp)
        return record

    def write(
        self,
        operations: list[Callable[[dict[str, dict[str, Any]]], T]],
        *,
        sobject: SObjectType = LEAD,
        all_or_none: bool = False,
    ) -> list[T | RecordRefused | MultipleMatches]:
        """Runs `operations` on a copy of the table and keeps what succeeded.

        With `all_or_none`, one failure keeps nothing. Each operation gets the
        working table and returns its result or raises `RecordRefused`.
        """
        with self._lock:
            staged = dict(self.table(sobject))
            results: list[T | RecordRefused | MultipleMatches] = []
            for operation in operations:
                try:
                    results.append(operation(staged))
                except (RecordRefused, MultipleMatches) as exc:
                    results.append(exc)
            failed = any(
                isinstance(result, RecordRefused | MultipleMatches)
                for result in results
            )
            if not (all_or_none and failed):
                if sobject is LEAD:
                    self.leads = staged
                else:
                    self.accounts = staged
                self.version += 1
            return results

    def create(
        self, sobject: SObjectType, values: dict[str, Any]
    ) -> Callable[[dict[str, dict[str, Any]]], str]:
        """An operation for `write` that creates a record and returns its id."""

        def operation(table: dict[str, dict[str, Any]]) -> str:
            converted = check_values(sobject, values, creating=True)
            self._check_unique(sobject, table, converted, None)
            self._check_duplicate_rule(sobject, table, converted)
            record = self._blank(sobject)
            record.update(converted)
            record["Id"] = self.new_id(sobject.key_prefix)
            table[record["Id"]] = record
            return str(record["Id"])

        return operation

    def update(
        self, sobject: SObjectType, record_id: str, values: dict[str, Any]
    ) -> Callable[[dict[str, dict[str, Any]]], str]:
        """An operation for `write` that updates a record by id."""

        def operation(table: dict[str, dict[str, Any]]) -> str:
            if record_id not in table:
                if record_id in self.deleted:
                    raise RecordRefused(
                        FieldError("ENTITY_IS_DELETED", "entity is deleted")
                    )
                raise RecordRefused(
                    FieldError(
                        "INVALID_CROSS_REFERENCE_KEY",
                        f"invalid cross reference id: {record_id}",
                    )
                )
            converted = check_values(sobject, values, creating=False)
            self._check_unique(sobject, table, converted, record_id)
            record = dict(table[record_id])
            record.update(converted)
            record["LastModifiedDate"] = now_text()
            table[record_id] = record
            return record_id

        return operation

    def upsert(
        self, sobject: SObjectType, field: FieldDef, value: str, values: dict[str, Any]
    ) -> Callable[[dict[str, dict[str, Any]]], tuple[str, bool]]:
        """An operation for `write` upserting by an external id: (id, created)."""

        def operation(table: dict[str, dict[str, Any]]) -> tuple[str, bool]:
            if not value:
                raise RecordRefused(
                    FieldError(
                        "MISSING_ARGUMENT",
                        f"{field.name} not specified",
                        (field.name,),
                    )
                )
            given = {
                name: item
                for name, item in values.items()
                if name.lower() != field.name.lower()
            }
            matches = [
                record_id
                for record_id, record in table.items()
                if isinstance(record.get(field.name), str)
                and record[field.name].casefold() == value.casefold()
            ]
            if len(matches) > 1:
                raise MultipleMatches(matches)
            if matches:
                return self.update(sobject, matches[0], given)(table), False
            return self.create(sobject, {**given, field.name: value})(table), True

        return operation

    def delete(self, sobject: SObjectType, record_id: str) -> bool:
        """Moves a record to the recycle bin (queryAll still sees it)."""
        with self._lock:
            record = self.table(sobject).pop(record_id, None)
            if record is None:
                return False
            self.deleted[record_id] = record
            self.version += 1
            return True

    def records(self) -> dict[str, Any]:
        """Leads, Accounts and the next id number: what outlives a restart."""
        with self._lock:
            return {
                "next_id": self._next_number,
                "leads": [dict(record) for record in self.leads.values()],
                "accounts": [dict(record) for record in self.accounts.values()],
            }

    def restore(self, records: Mapping[str, Any]) -> None:
        """Puts back what `records()` gave; fields no longer known are dropped."""
        leads = [self._restored(LEAD, record) for record in records["leads"]]
        accounts = [self._restored(ACCOUNT, record) for record in records["accounts"]]
        with self._lock:
            self.leads = {record["Id"]: record for record in leads}
            self.accounts = {record["Id"]: record for record in accounts}
            self._next_number = records["next_id"]
            self.version += 1

    @staticmethod
    def _restored(sobject: SObjectType, saved: Mapping[str, Any]) -> dict[str, Any]:
        record = {field.name: field.default for field in sobject.fields}
        for name, value in saved.items():
            field = sobject.field(name)
            if field is not None:
                record[field.name] = value
        return record

    def _check_unique(
        self,
        sobject: SObjectType,
        table: dict[str, dict[str, Any]],
        values: dict[str, Any],
        own_id: str | None,
    ) -> None:
        for field in sobject.fields:
            value = values.get(field.name)
            if not field.unique or not isinstance(value, str):
                continue
            for record_id, record in table.items():
                other = record.get(field.name)
                if (
                    record_id != own_id
                    and isinstance(other, str)
                    and other.casefold() == value.casefold()
                ):
                    raise RecordRefused(
                        FieldError(
                            "DUPLICATE_VALUE",
                            f"duplicate value found: {field.name} duplicates value "
                            f"on record with id: {record_id}",
                        )
                    )

    def _check_duplicate_rule(
        self,
        sobject: SObjectType,
        table: dict[str, dict[str, Any]],
        values: dict[str, Any],
    ) -> None:
        email = values.get("Email")
        if sobject is not LEAD or not self.settings.duplicate_rule or not email:
            return
        matches = [
            record
            for record in table.values()
            if isinstance(record.get("Email"), str)
            and record["Email"].casefold() == email.casefold()
        ]
        if not matches:
            return
        # The shape of SF-06's reply: the standard rule blocks the save and
        # names the matching records.
        duplicate_result = {
            "allowSave": False,
            "duplicateRule": "Standard_Lead_Duplicate_Rule",
            "duplicateRuleEntityType": "Lead",
            "errorMessage": "You're creating a duplicate record. We recommend you "
            "use an existing record instead.",
            "matchResults": [
                {
                    "entityType": "Lead",
                    "errors": [],
                    "matchEngine": "ExactMatchEngine",
                    "matchRecords": [
                        {
                            "additionalInformation": [],
                            "fieldDiffs": [],
                            "matchConfidence": 100.0,
                            "record": {
                                "attributes": {
                                    "type": "Lead",
                                    "url": f"/services/data/v{API_VERSION}/sobjects/"
                                    f"Lead/{record['Id']}",
                                },
                                "Id": record["Id"],
                                "Email": record["Email"],
                            },
                        }
                        for record in matches
                    ],
                    "rule": "Standard_Lead_Match_Rule_v1_0",
                    "size": len(matches),
                    "success": True,
                }
            ],
        }
        raise RecordRefused(
            FieldError("DUPLICATES_DETECTED", "Use one of these records?"),
            extra={"duplicateResult": duplicate_result},
        )

    # Sessions --------------------------------------------------------------

    def issue_session(self, username: str, client_id: str) -> str:
        with self._lock:
            token = f"{ORG_ID[:15]}!{secrets.token_urlsafe(24)}"
            self.sessions[token] = Session(
                username,
                client_id,
                time.time(),
                expired=self.settings.sessions_born_expired,
            )
            return token

    def session_valid(self, token: str | None) -> bool:
        with self._lock:
            session = self.sessions.get(token or "")
            return session is not None and not session.expired

    def expire_sessions(self, *, include_new: bool = False) -> int:
        """Expires every session issued so far (and, if asked, every later one)."""
        with self._lock:
            for session in self.sessions.values():
                session.expired = True
            self.settings.sessions_born_expired = include_new
            return len(self.sessions)

    # Allocation and counters -------------------------------------------------

    def count(self, kind: str) -> None:
        with self._lock:
            self.requests[kind] += 1

    def api_usage(self) -> tuple[int, int]:
        """Requests spent in the last 24 hours, and the allocation."""
        with self._lock:
            horizon = time.monotonic() - WINDOW_SECONDS
            while self._calls and self._calls[0] < horizon:
                self._calls.popleft()
            return len(self._calls) + self._extra_usage, self.settings.daily_allocation

    def spend(self) -> bool:
        """Takes one request from the allocation; False when none is left."""
        with self._lock:
            used, allocation = self.api_usage()
            if used >= allocation:
                return False
            self._calls.append(time.monotonic())
            return True

    def set_usage(self, used: int) -> None:
        """Pretends `used` requests were spent in the window."""
        with self._lock:
            self._calls.clear()
            self._extra_usage = used
