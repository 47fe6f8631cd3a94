"""HubSpot's failures as `CrmError`s: the one table from vendor status to our error."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import urllib3.exceptions
from hubspot.communication_preferences.exceptions import (
    ApiException as PreferencesApiException,
)
from hubspot.crm.contacts.exceptions import ApiException as ContactsApiException
from hubspot.crm.properties.exceptions import ApiException as PropertiesApiException
from hubspot.oauth.exceptions import ApiException as OAuthApiException

from connectors.crm.errors import (
    CrmAuthError,
    CrmDailyLimitReached,
    CrmError,
    CrmRateLimited,
    CrmRequestError,
    CrmUnavailable,
)
from connectors.crm.urls import host_of

# Each generated package of hubspot-api-client has its own ApiException class.
API_EXCEPTIONS = (
    ContactsApiException,
    PropertiesApiException,
    OAuthApiException,
    PreferencesApiException,
)

EXISTING_ID = re.compile(r"Existing ID: (\d+)")
INVALID_VALUES = "Property values were not valid: "
# Unsubscribing an address again answers 400 "<address> is already
# unsubscribed from subscription <id>" (ethyca/fides#5237 ignores that 400 on
# this call; the wording is quoted by integrations that treat it as success).
ALREADY_UNSUBSCRIBED = re.compile(r"\balready unsubscribed\b", re.IGNORECASE)
DAILY_RECHECK = timedelta(hours=1)


@dataclass(frozen=True)
class Problem:
    """One value HubSpot refused: its code, its message, the property it names."""

    code: str
    message: str
    fields: tuple[str, ...] = ()


class HubSpotValidationError(CrmRequestError):
    """400 `VALIDATION_ERROR`: HubSpot refused values; `problems` lists each one."""

    def __init__(self, message: str, problems: tuple[Problem, ...]) -> None:
        code = problems[0].code if problems else "VALIDATION_ERROR"
        super().__init__(message, code=code, status=400)
        self.problems = problems


class HubSpotConflict(CrmRequestError):
    """409 `CONFLICT`: the e-mail already belongs to contact `existing_id` (HS-01)."""

    def __init__(self, message: str, existing_id: str | None) -> None:
        super().__init__(message, code="CONFLICT", status=409)
        self.existing_id = existing_id


class HubSpotNotFound(CrmRequestError):
    """404 `OBJECT_NOT_FOUND`: no record with that id or e-mail."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="OBJECT_NOT_FOUND", status=404)


class HubSpotAlreadyUnsubscribed(CrmRequestError):
    """400 to an unsubscribe: the address already was; what was asked holds."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="ALREADY_UNSUBSCRIBED", status=400)


def body_of(text: object) -> dict[str, Any]:
    """HubSpot's JSON error body, or an empty one when it sent something else."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        body = json.loads(str(text or "{}"))
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def problems_in(body: Mapping[str, Any]) -> tuple[Problem, ...]:
    """Every refused value a validation body names.

    HubSpot lists them as JSON inside `message` ("Property values were not
    valid: [{…, "error": "INVALID_OPTION", "name": "…"}]"); some answers also
    carry `errors: [{code, message, context: {propertyName: […]}}]`.
    """
    message = str(body.get("message", ""))
    if message.startswith(INVALID_VALUES):
        try:
            listed = json.loads(message[len(INVALID_VALUES) :])
        except ValueError:
            listed = []
        found = tuple(
            Problem(
                str(item.get("error", "VALIDATION_ERROR")),
                str(item.get("message", "")),
                (str(item["name"]),) if item.get("name") else (),
            )
            for item in listed
            if isinstance(item, dict)
        )
        if found:
            return found
    return tuple(
        Problem(
            str(item.get("code") or body.get("category") or "VALIDATION_ERROR"),
            str(item.get("message", "")),
            tuple((item.get("context") or {}).get("propertyName") or ()),
        )
        for item in body.get("errors") or ()
        if isinstance(item, dict)
    )


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date)."""
    value = (headers or {}).get("Retry-After")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def daily_limit_recheck() -> datetime:
    """When work parked by a DAILY 429 should try HubSpot again: in an hour.

    HubSpot resets the daily limit at midnight in the account's time zone,
    which neither the 429 nor the rate-limit headers reveal. UTC midnight is
    wrong for every other zone: east of UTC the limit resets hours before it,
    and west of it the parked work wakes before the reset, meets the limit
    again and is parked another day, up to ~16 hours past the real reset.
    Looking again hourly costs at most one refused call an hour and resumes
    the work within an hour of the reset.
    """
    return datetime.now(UTC) + DAILY_RECHECK


def _rate_limited(
    operation: str, message: str, body: Mapping[str, Any], headers: Mapping[str, str]
) -> CrmError:
    if body.get("policyName") == "DAILY":
        resets_at = daily_limit_recheck()
        return CrmDailyLimitReached(
            f"{operation}: HubSpot's daily API limit is spent ({message}); it "
            "resets at midnight in the account's time zone, so park the work and "
            f"try again at {resets_at:%Y-%m-%d %H:%M} UTC.",
            resets_at=resets_at,
        )
    return CrmRateLimited(
        f"{operation}: HubSpot's {body.get('policyName') or 'rate'} limit was hit "
        f"({message}); retry after a pause.",
        retry_after=retry_after(headers),
    )


def _unavailable(
    operation: str, message: str, body: Mapping[str, Any], headers: Mapping[str, str]
) -> CrmError:
    return CrmUnavailable(
        f"{operation}: HubSpot answered with a server error ({message}); retry later.",
        retry_after=retry_after(headers),
    )


def _refused(
    operation: str, message: str, body: Mapping[str, Any], headers: Mapping[str, str]
) -> CrmError:
    if ALREADY_UNSUBSCRIBED.search(message) and not message.startswith(INVALID_VALUES):
        return HubSpotAlreadyUnsubscribed(f"{operation}: {message}")
    if body.get("category", "VALIDATION_ERROR") == "VALIDATION_ERROR":
        return HubSpotValidationError(
            f"{operation}: HubSpot refused values: {message}", problems_in(body)
        )
    return CrmRequestError(
        f"{operation}: {message}", code=str(body.get("status")), status=400
    )


# The one table from HubSpot's status to our error; statuses not listed are
# refusals of the request (`CrmRequestError`). 5xx is matched below by range.
Translate = Callable[[str, str, Mapping[str, Any], Mapping[str, str]], CrmError]
BY_STATUS: dict[int, Translate] = {
    400: _refused,
    401: lambda op, msg, body, _h: CrmAuthError(
        f"{op}: HubSpot refused the token ({body.get('category') or msg}); "
        "check the private-app token or the OAuth app's refresh token."
    ),
    403: lambda op, msg, _b, _h: CrmAuthError(
        f"{op}: HubSpot refused access ({msg}); give the app the scopes this call "
        "needs: crm.objects.contacts.read and .write for contacts, "
        "communication_preferences.read_write for opt-outs.",
        status=403,
    ),
    404: lambda op, msg, _b, _h: HubSpotNotFound(f"{op}: {msg}"),
    409: lambda op, msg, _b, _h: HubSpotConflict(
        f"{op}: {msg}",
        (match.group(1) if (match := EXISTING_ID.search(msg)) else None),
    ),
    429: _rate_limited,
}


def translate(
    operation: str, exc: BaseException, *, host: str | None = None
) -> CrmError:
    """The `CrmError` for anything the HubSpot client raised during `operation`.

    Args:
        operation: what the call did, for the message.
        exc: what the client raised.
        host: the base URL called, named in messages when it could not be
            reached (only its host and port are shown).
    """
    if isinstance(exc, API_EXCEPTIONS):
        status = exc.status or 0
        body = body_of(exc.body)
        headers = exc.headers or {}
        message = str(body.get("message") or exc.reason or "no message")
        if status in BY_STATUS:
            return BY_STATUS[status](operation, message, body, headers)
        if 500 <= status <= 599:
            return _unavailable(operation, message, body, headers)
        if status == 0:
            # The client's own failures before any answer (TLS, an unencodable body).
            return CrmRequestError(f"{operation}: {exc.reason}", code="client")
        return CrmRequestError(
            f"{operation}: HubSpot answered {status}: {message}",
            code=str(body.get("category") or status),
            status=status,
        )
    where = host_of(host) if host else "the configured host"
    # urllib3 2.x makes NewConnectionError (and NameResolutionError under it) a
    # ConnectTimeoutError, so a refused connection or an unknown name would read
    # as a timeout if timeouts were checked first.
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return CrmUnavailable(
            f"{operation}: HubSpot at {where} could not be reached "
            f"({type(exc).__name__}); check the host setting and the network."
        )
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return CrmUnavailable(
            f"{operation}: HubSpot at {where} did not answer in time "
            f"({type(exc).__name__}); retry later or raise timeout_seconds."
        )
    if isinstance(exc, urllib3.exceptions.HTTPError):
        return CrmUnavailable(
            f"{operation}: the connection to HubSpot at {where} failed "
            f"({type(exc).__name__}); check the network and the host setting."
        )
    if isinstance(exc, ValueError):
        # The generated models refuse a body missing required fields.
        return CrmError(
            f"{operation}: HubSpot's answer did not have the expected shape ({exc}).",
            code="unexpected_response",
        )
    raise TypeError(f"not a HubSpot client failure: {exc!r}") from exc
