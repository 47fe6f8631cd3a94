"""The errors every CRM connector raises, whatever the vendor's own exceptions are."""

from __future__ import annotations

from datetime import datetime


class CrmError(Exception):
    """A CRM call failed.

    Attributes:
        code: a short reason code stored on the lead (`auth`, `rate_limited`,
            `unavailable`, or the vendor's own code such as `REQUIRED_FIELD_MISSING`).
        retryable: whether the same call may succeed later unchanged.
        retry_after: seconds the vendor asked us to wait, when it said.
        status: the HTTP status, when there was a response.
    """

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        code: str = "error",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.retry_after = retry_after


class CrmAuthError(CrmError):
    """The credentials were refused, or a fresh session was refused again (SF-01)."""

    def __init__(self, message: str, *, status: int | None = 401) -> None:
        super().__init__(message, code="auth", status=status)


class CrmUnavailable(CrmError, ConnectionError):
    """The CRM did not answer, timed out, or answered 5xx: worth trying again."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message, code="unavailable", status=status, retry_after=retry_after
        )


class CrmRateLimited(CrmError):
    """The CRM's short-window rate limit was hit (HubSpot's ten-secondly 429)."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(
            message, code="rate_limited", status=429, retry_after=retry_after
        )


class CrmDailyLimitReached(CrmError):
    """The account's daily allowance is spent; nothing succeeds before `resets_at`.

    Not retried in a loop: the rest of the work is parked until the window resets
    (HS-05's DAILY variant, Salesforce's `REQUEST_LIMIT_EXCEEDED`).
    """

    def __init__(self, message: str, *, resets_at: datetime | None = None) -> None:
        super().__init__(message, code="rate_limited_daily", status=429)
        self.resets_at = resets_at


class CrmRequestError(CrmError):
    """The CRM refused the request as malformed or invalid; retrying cannot help."""


class CrmConfigError(CrmError, ValueError):
    """The connector's settings are incomplete or contradictory; says which and why.

    Attributes:
        problems: (setting, what is wrong) pairs, when known one by one.
    """

    def __init__(
        self, message: str, *, problems: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(message, code="config")
        self.problems = problems
