"""Salesforce's failures in our terms: the one table from vendor errors to ours."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests
from simple_salesforce.exceptions import (
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceOperationError,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from connectors.crm.errors import (
    CrmAuthError,
    CrmDailyLimitReached,
    CrmError,
    CrmRateLimited,
    CrmRequestError,
    CrmUnavailable,
)
from connectors.crm.protocol import SyncFailure
from connectors.crm.urls import host_of


class SessionExpired(CrmAuthError):
    """401 INVALID_SESSION_ID: the access token expired or was revoked (SF-01).

    The client re-authenticates once on it and replays the call; a second one
    leaves the connector as this `CrmAuthError`.
    """


class BulkJobFailed(CrmError):
    """A Bulk API 2.0 job ended Failed or Aborted, or never finished."""

    def __init__(self, message: str, *, code: str = "bulk_job_failed") -> None:
        super().__init__(message, code=code)


class BulkJobTimedOut(BulkJobFailed, TimeoutError):
    """A Bulk API 2.0 job still ran when `bulk_timeout_seconds` was up; aborted."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="bulk_timeout")


# Per-record codes worth sending again unchanged: a lock another transaction
# held, or a platform hiccup
# (https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_concepts_core_data_objects.htm).
RETRYABLE_RECORD_CODES = frozenset(
    {
        "UNABLE_TO_LOCK_ROW",
        "SERVER_UNAVAILABLE",
        "REQUEST_RUNNING_TOO_LONG",
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    }
)


def _first_error(content: Any) -> Mapping[str, Any]:
    """The first entry of Salesforce's error array, whatever came instead."""
    if isinstance(content, list) and content and isinstance(content[0], Mapping):
        return content[0]
    if isinstance(content, Mapping):
        return content
    return {}


def vendor_code(content: Any) -> str | None:
    """The `errorCode` (record endpoints) or `statusCode` (collections) of a reply."""
    first = _first_error(content)
    code = first.get("errorCode") or first.get("statusCode")
    return str(code) if code else None


def translate(exc: Exception, operation: str) -> CrmError:
    """The `CrmError` for a simple-salesforce or `requests` exception.

    This is the connector's one status/code → error table; every call's
    exceptions pass through it.
    """
    if isinstance(exc, SalesforceError):
        code = vendor_code(exc.content) or f"HTTP_{exc.status}"
        message = str(_first_error(exc.content).get("message") or "")[:500]
        detail = f"Salesforce refused {operation}: {exc.status} {code} {message}"
        if isinstance(exc, SalesforceExpiredSession):
            return SessionExpired(detail, status=401)
        if isinstance(exc, SalesforceRefusedRequest):
            if code == "REQUEST_LIMIT_EXCEEDED":
                # Salesforce uses the code for two limits: the org's rolling
                # daily allocation ("TotalRequests Limit exceeded.") and the
                # concurrent long-request cap ("ConcurrentPerOrgLongTxn Limit
                # exceeded."), which clears in seconds.
                if "ConcurrentPerOrgLongTxn" in message:
                    return CrmRateLimited(detail)
                return CrmDailyLimitReached(
                    f"{detail}; the org's daily API allocation is spent, park the "
                    "rest until usage falls"
                )
            return CrmAuthError(
                f"{detail}; check the integration user's permissions", status=403
            )
        if isinstance(
            exc,
            SalesforceMalformedRequest
            | SalesforceResourceNotFound
            | SalesforceMoreThanOneRecord,
        ):
            return CrmRequestError(detail, code=code, status=exc.status)
        if isinstance(exc, SalesforceGeneralError) and exc.status == 429:
            return CrmRateLimited(detail)
        if exc.status >= 500:
            # Salesforce sends no Retry-After; the retry loop backs off itself.
            return CrmUnavailable(detail, status=exc.status)
        return CrmRequestError(detail, code=code, status=exc.status)
    if isinstance(exc, SalesforceOperationError):
        # simple-salesforce's Bulk API 2.0 helper raises this when a job ends
        # Failed or Aborted, when its upload is refused, and ("Job timeout. Job
        # status: …") when its wait for the job ran out, after aborting the
        # job; it keeps no job id.
        if str(exc).startswith("Job timeout"):
            return BulkJobTimedOut(
                f"Salesforce {operation}: the job was still running when "
                f"bulk_timeout_seconds was up, so it was aborted ({str(exc)[:200]})"
            )
        return BulkJobFailed(f"Salesforce {operation}: {str(exc)[:300]}")
    if isinstance(exc, requests.Timeout | requests.ConnectionError):
        where = host_of(exc.request.url if exc.request is not None else None)
        name = type(exc).__name__
        # ConnectTimeout is both a Timeout and a ConnectionError: a wait that ran
        # out, so it is told as one.
        if isinstance(exc, requests.Timeout):
            return CrmUnavailable(
                f"Salesforce at {where} did not answer {operation} in time "
                f"({name}); retry later or raise timeout_seconds"
            )
        return CrmUnavailable(
            f"Salesforce at {where} could not be reached for {operation} ({name}); "
            "check the network and the org's instance URL"
        )
    if isinstance(exc, requests.JSONDecodeError):
        return CrmUnavailable(f"Salesforce answered {operation} with a body not JSON")
    if isinstance(exc, requests.RequestException):
        return CrmError(f"{operation} failed: {type(exc).__name__}", code="http_error")
    return CrmError(f"{operation} failed: {type(exc).__name__}", code="error")


def record_failure(errors: Any) -> SyncFailure:
    """The failure of one record from its `errors` list (collections or REST)."""
    first = _first_error(errors)
    code = str(first.get("statusCode") or first.get("errorCode") or "unknown")
    fields = first.get("fields") or ()
    return SyncFailure(
        code=code,
        message=str(first.get("message") or "Salesforce gave no message"),
        retryable=code in RETRYABLE_RECORD_CODES,
        fields=tuple(str(name) for name in fields),
    )


def bulk_failure(cell: str, columns: tuple[str, ...]) -> SyncFailure:
    """The failure of one Bulk API 2.0 row from its `sf__Error` cell.

    Salesforce writes `CODE:message:Field1,Field2 --`; the message may itself
    hold colons, so fields are taken only when the last part names columns.
    """
    text = cell.strip().removesuffix("--").strip()
    code, _, rest = text.partition(":")
    message, _, tail = rest.rpartition(":")
    named = tuple(name for name in tail.split(",") if name.strip() in columns)
    if not message or not named:
        message, named = rest, ()
    return SyncFailure(
        code=code or "unknown",
        message=message.strip().rstrip(":") or "Salesforce gave no message",
        retryable=code in RETRYABLE_RECORD_CODES,
        fields=tuple(name.strip() for name in named),
    )


def failure_of(error: CrmError) -> SyncFailure:
    """A whole-call error as the failure of each record in that call."""
    return SyncFailure(
        code=error.code,
        message=str(error),
        retryable=error.retryable,
        retry_after=error.retry_after,
    )
