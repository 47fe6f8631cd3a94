"""What a CRM connector does, in our terms: records in, one result per record out."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal, Protocol

# A mapped field value before the connector writes it in the vendor's format:
# HubSpot wants every value as a string and dates as midnight-UTC milliseconds,
# Salesforce wants JSON types and ISO dates. `""` clears the CRM's value; a
# field that should be left alone is simply absent (never None).
FieldValue = str | int | float | bool | date | datetime

Outcome = Literal["created", "updated", "failed"]


@dataclass(frozen=True)
class CrmRecord:
    """One lead as the CRM should hold it after the write.

    Attributes:
        ref: our lead id; results are matched to records by it.
        key: the value the CRM finds the record by: the lower-cased e-mail, or
            the external id when the connector upserts by an external-id field.
        fields: CRM field name → value, already mapped and transformed. The key
            field itself need not be repeated here.
        unsubscribe: the person opted out of marketing e-mail and the CRM is
            not yet known to hold it. Only for a CRM that keeps opt-outs
            outside the record's fields (HubSpot's subscription types): its
            connector unsubscribes the key's address once the record is
            written, and the record is written only when both land. Elsewhere
            the opt-out is one of `fields` (Salesforce's `HasOptedOutOfEmail`).
    """

    ref: str
    key: str
    fields: Mapping[str, FieldValue]
    unsubscribe: bool = False


@dataclass(frozen=True)
class SyncFailure:
    """Why one record was not written.

    Attributes:
        code: the vendor's code (`REQUIRED_FIELD_MISSING`, `STRING_TOO_LONG`,
            `INVALID_EMAIL`…) or ours (`rate_limited`, `rate_limited_daily`,
            `unavailable`, `auth`, `unknown` when the CRM gave no result for it).
        message: the vendor's message, for people.
        retryable: the same record may succeed unchanged later.
        fields: the CRM fields the vendor named, if any.
        retry_after: seconds to wait before retrying, when the vendor said.
    """

    code: str
    message: str
    retryable: bool
    fields: tuple[str, ...] = ()
    retry_after: float | None = None


@dataclass(frozen=True)
class SyncResult:
    """What happened to one record.

    Attributes:
        ref: the record's `ref`.
        outcome: `created`, `updated`, or `failed`.
        crm_id: the CRM's id of the record written (also on some failures,
            when the CRM named the record it refused to touch).
        failure: why, when `outcome` is `failed`.
        note: how an update came about when it was not a plain update:
            `duplicate_rule` (Salesforce DUPLICATES_DETECTED resolved to the
            matched record, SF-06), `conflict` (HubSpot 409 resolved, HS-01/03).
    """

    ref: str
    outcome: Outcome
    crm_id: str | None = None
    failure: SyncFailure | None = None
    note: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome != "failed"


@dataclass(frozen=True)
class CrmSnapshot:
    """A record as the CRM holds it now (for previews, field policies, reconciling).

    Attributes:
        crm_id: the CRM's id.
        key: the record's key value (e-mail or external id), lower-cased e-mail.
        fields: the requested fields, as the CRM returned them (strings for
            HubSpot; JSON types for Salesforce); a missing field is absent.
        updated_at: when the CRM last changed it, when it says.
    """

    crm_id: str
    key: str
    fields: Mapping[str, object]
    updated_at: datetime | None = None


@dataclass(frozen=True)
class CrmField:
    """One field the CRM object has, from the vendor's describe/properties call."""

    name: str
    label: str
    type: str
    length: int | None = None
    required: bool = False
    createable: bool = True
    updateable: bool = True
    unique: bool = False
    external_id: bool = False
    picklist: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ConnectionInfo:
    """What a successful connection test learned."""

    provider: str
    account: str
    detail: Mapping[str, object] = field(default_factory=dict)


class CrmConnector(Protocol):
    """A CRM account, reached through its vendor's official client.

    Every method raises `connectors.crm.errors.CrmError` subclasses only; the
    vendor's own exceptions never leave the connector. Calls go through the
    rate budget the connector was built with.
    """

    provider: str
    # The CRM field records are found by (`email`, `Email`, `Web_Lead_Id__c`),
    # and what a record's `key` holds: the lead's lower-cased e-mail, or our
    # lead id when the CRM has an external-id field for it.
    key_field: str
    key_source: Literal["email", "lead_id"]
    # Most records one upsert call takes; `upsert` splits larger inputs itself.
    batch_size: int
    # Past this many records in one `upsert`, the connector uses the vendor's
    # bulk API instead (Salesforce Bulk 2.0); None when it has none.
    bulk_threshold: int | None

    def upsert(self, records: Sequence[CrmRecord]) -> list[SyncResult]:
        """Creates or updates each record by its key; one result per record, in order.

        A record whose result the CRM did not return is `failed` with code
        `unknown`, never counted as written. Failures of single records come back
        as results; only a failure of the whole call that retrying did not cure
        raises (auth, daily limit, CRM down).
        """
        ...

    def read(
        self, keys: Sequence[str], fields: Sequence[str]
    ) -> dict[str, CrmSnapshot]:
        """The records found by `keys` (key → snapshot); a key not found is absent."""
        ...

    def changed(
        self, start: datetime, end: datetime, fields: Sequence[str]
    ) -> Iterator[CrmSnapshot]:
        """Every record modified in `[start, end)`, each once (for reconciling)."""
        ...

    def erase(self, crm_id: str) -> bool:
        """Deletes the record with the CRM's id `crm_id` for good, for an erasure.

        HubSpot's GDPR delete; Salesforce's delete of the Lead. Safe to repeat:
        a record already gone is not an error.

        Returns:
            True when this call deleted it; False when the CRM had no such
            record (never there, or deleted before).

        Raises:
            CrmError: the deletion failed; `retryable` says whether it may
                succeed later.
        """
        ...

    def list_fields(self) -> list[CrmField]:
        """The lead/contact object's fields, for checking a mapping."""
        ...

    def test_connection(self) -> ConnectionInfo:
        """Authenticates and makes one cheap call; raises `CrmError` when it fails."""
        ...

    def close(self) -> None:
        """Releases connections."""
        ...
