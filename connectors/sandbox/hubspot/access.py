"""Who may call the sandbox's HubSpot API, and how often: tokens and rate limits."""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from connectors.sandbox.hubspot.errors import HubSpotError

SANDBOX_TOKEN = "sandbox-hubspot-token"
SANDBOX_CLIENT_ID = "sandbox-hubspot-client-id"
SANDBOX_CLIENT_SECRET = "sandbox-hubspot-client-secret"
SANDBOX_REFRESH_TOKEN = "sandbox-hubspot-refresh-token"
# The one authorization code the sandbox's consent screen would have issued.
SANDBOX_AUTHORIZATION_CODE = "sandbox-hubspot-authorization-code"

# HubSpot's OAuth access tokens live 30 minutes (`expires_in: 1800`).
DEFAULT_TOKEN_LIFETIME_SECONDS = 1800

# Professional and Enterprise private apps: 190 calls per 10 s, 625,000 a day.
DEFAULT_PER_TEN_SECONDS = 190
DEFAULT_DAILY = 625_000
# The search endpoints allow about five requests a second per account.
DEFAULT_SEARCH_PER_SECOND = 5
WINDOW_SECONDS = 10.0

MISSING_CREDENTIALS = (
    "Authentication credentials not found. This API supports OAuth 2.0 "
    "authentication and you can find more details at "
    "https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)


class Tokens:
    """The private-app token and the OAuth tokens the sandbox has issued."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.lifetime_seconds = DEFAULT_TOKEN_LIFETIME_SECONDS
        self._issued: dict[str, float] = {}

    def reset(self) -> None:
        with self._lock:
            self._issued.clear()
            self.lifetime_seconds = DEFAULT_TOKEN_LIFETIME_SECONDS

    def expire_all(self) -> int:
        """Makes every issued access token expired now; returns how many there were."""
        with self._lock:
            now = self._clock()
            for token in self._issued:
                self._issued[token] = min(self._issued[token], now - 1)
            return len(self._issued)

    def check(self, authorization: str | None) -> None:
        """Accepts a `Bearer` header holding a live token.

        Raises:
            HubSpotError: 401 `INVALID_AUTHENTICATION` for a missing or unknown
                token, 401 `EXPIRED_AUTHENTICATION` for an expired one.
        """
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HubSpotError(401, MISSING_CREDENTIALS)
        if token == SANDBOX_TOKEN:
            return
        with self._lock:
            expires_at = self._issued.get(token)
        if expires_at is None:
            raise HubSpotError(
                401,
                "The OAuth token used to make this call is not valid.",
                category="INVALID_AUTHENTICATION",
            )
        overdue = self._clock() - expires_at
        if overdue >= 0:
            minutes = max(1, math.ceil(overdue / 60))
            raise HubSpotError(
                401,
                f"The OAuth token used to make this call expired {minutes} "
                "minute(s) ago.",
                category="EXPIRED_AUTHENTICATION",
            )

    def grant(self, form: Mapping[str, str]) -> dict[str, object]:
        """Answers `POST /oauth/v1/token` for the three grant types HubSpot knows.

        Raises:
            HubSpotError: 400 with HubSpot's OAuth `status` codes
                (`BAD_CLIENT_ID`, `BAD_REFRESH_TOKEN`, …).
        """
        grant_type = form.get("grant_type", "")
        if form.get("client_id") != SANDBOX_CLIENT_ID:
            raise _oauth_error("BAD_CLIENT_ID", "missing or unknown client_id")
        if form.get("client_secret") != SANDBOX_CLIENT_SECRET:
            raise _oauth_error("BAD_CLIENT_SECRET", "missing or invalid client_secret")
        if grant_type == "refresh_token":
            if form.get("refresh_token") != SANDBOX_REFRESH_TOKEN:
                raise _oauth_error(
                    "BAD_REFRESH_TOKEN", "missing or unknown refresh token"
                )
        elif grant_type == "authorization_code":
            if form.get("code") != SANDBOX_AUTHORIZATION_CODE:
                raise _oauth_error("BAD_AUTH_CODE", "missing or unknown auth code")
        elif grant_type != "client_credentials":
            raise _oauth_error("BAD_GRANT_TYPE", f"unknown grant_type {grant_type!r}")

        token = f"sandbox-oauth-{secrets.token_hex(12)}"
        with self._lock:
            lifetime = self.lifetime_seconds
            self._issued[token] = self._clock() + lifetime
        answer: dict[str, object] = {
            "access_token": token,
            "expires_in": lifetime,
            "token_type": "bearer",
        }
        # HubSpot returns the same refresh token on a refresh; a client-credentials
        # grant has none to return (unverified for HubSpot: it follows RFC 6749).
        if grant_type != "client_credentials":
            answer["refresh_token"] = SANDBOX_REFRESH_TOKEN
        return answer


def _oauth_error(status: str, message: str) -> HubSpotError:
    # The OAuth endpoint's errors put their code in `status`, not in `category`.
    error = HubSpotError(400, message, category="BAD_REQUEST")
    error.extra["status"] = status
    return error


class RateLimits:
    """HubSpot's ten-secondly, daily and search limits for the one sandbox account."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.configure()

    def configure(
        self,
        per_ten_seconds: int = DEFAULT_PER_TEN_SECONDS,
        daily: int = DEFAULT_DAILY,
        search_per_second: int | None = DEFAULT_SEARCH_PER_SECOND,
    ) -> None:
        """Sets the limits and forgets every call counted so far."""
        with self._lock:
            self.per_ten_seconds = per_ten_seconds
            self.daily = daily
            self.search_per_second = search_per_second
            self._window: deque[float] = deque()
            self._searches: deque[float] = deque()
            self._day = _utc_day()
            self._daily_used = 0

    def admit(self, *, search: bool) -> dict[str, str]:
        """Counts one call; returns the rate-limit headers for its response.

        Raises:
            HubSpotError: 429 with `policyName` `DAILY`, `TEN_SECONDLY_ROLLING`
                or, for search, `SECONDLY` (that name is unverified).
        """
        with self._lock:
            now = self._clock()
            if _utc_day() != self._day:
                self._day, self._daily_used = _utc_day(), 0
            while self._window and self._window[0] <= now - WINDOW_SECONDS:
                self._window.popleft()
            while self._searches and self._searches[0] <= now - 1.0:
                self._searches.popleft()

            if self._daily_used >= self.daily:
                raise HubSpotError(
                    429,
                    "You have reached your daily limit.",
                    headers=self._headers(),
                    policyName="DAILY",
                )
            if len(self._window) >= self.per_ten_seconds:
                wait = self._window[0] + WINDOW_SECONDS - now
                raise HubSpotError(
                    429,
                    "You have reached your ten_secondly_rolling limit.",
                    headers=self._headers() | {"Retry-After": _seconds(wait)},
                )
            if (
                search
                and self.search_per_second is not None
                and len(self._searches) >= self.search_per_second
            ):
                wait = self._searches[0] + 1.0 - now
                raise HubSpotError(
                    429,
                    "You have reached your secondly limit.",
                    headers=self._headers() | {"Retry-After": _seconds(wait)},
                    policyName="SECONDLY",
                )

            self._window.append(now)
            self._daily_used += 1
            if search:
                self._searches.append(now)
            return self._headers()

    def _headers(self) -> dict[str, str]:
        return {
            "X-HubSpot-RateLimit-Max": str(self.per_ten_seconds),
            "X-HubSpot-RateLimit-Remaining": str(
                max(0, self.per_ten_seconds - len(self._window))
            ),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(
                int(WINDOW_SECONDS * 1000)
            ),
            "X-HubSpot-RateLimit-Daily": str(self.daily),
            "X-HubSpot-RateLimit-Daily-Remaining": str(
                max(0, self.daily - self._daily_used)
            ),
        }


def _seconds(wait: float) -> str:
    # Whether HubSpot sends Retry-After at all is unverified; when the sandbox
    # does, it sends whole seconds as RFC 9110 asks.
    return str(max(1, math.ceil(wait)))


def _utc_day() -> str:
    # HubSpot resets the daily limit at midnight in the account's time zone; the
    # sandbox's account lives in UTC.
    return datetime.now(UTC).date().isoformat()
