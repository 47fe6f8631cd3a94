"""One `hubspot.Client` per connector; its calls budgeted, retried, translated."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import hubspot
import urllib3.exceptions

from connectors.crm.budget import RateBudget
from connectors.crm.errors import CrmAuthError
from connectors.crm.hubspot.credentials import HubSpotCredentials
from connectors.crm.hubspot.errors import API_EXCEPTIONS, translate
from connectors.crm.retries import call_with_retries

logger = logging.getLogger(__name__)

# Refresh an OAuth token this long before HubSpot says it expires, so a call
# never starts with a token that dies in flight.
REFRESH_MARGIN_SECONDS = 60.0
# No answer, or an answer the generated models refuse (a ValueError).
TRANSPORT_FAILURES = (urllib3.exceptions.HTTPError, ValueError)


class HubSpotClient:
    """The official client, set up once, and the one way to call it.

    Every call goes through `call`: it waits on the rate budget, retries what
    may succeed later (`connectors.crm.retries`), feeds every response's
    rate-limit headers to the budget, refreshes an OAuth token once on a 401,
    and turns the client's exceptions into `CrmError`s.
    """

    def __init__(
        self,
        credentials: HubSpotCredentials,
        *,
        budget: RateBudget,
        sleep: Callable[[float], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._credentials = credentials
        self._budget = budget
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.Lock()
        self._expires_at: float | None = None
        token = credentials.access_token
        # `retry=False` turns urllib3's own retries off (its default would retry
        # connection errors three times, and never a POST's 429); `base_url` is
        # what the client's generic `api_request` reads instead of `host`.
        client = hubspot.Client.create(
            access_token=token.get_secret_value() if token else None,
            host=credentials.api_host,
            base_url=credentials.api_host,
            retry=False,
        )
        # Each attribute access builds a new API client and connection pool.
        contacts = client.crm.contacts
        self.batch_api = contacts.batch_api
        self.basic_api = contacts.basic_api
        self.search_api = contacts.search_api
        self.properties_api = client.crm.properties.core_api
        preferences = client.communication_preferences
        self.status_api = preferences.status_api
        self.definition_api = preferences.definition_api
        # The APIs that carry the access token; each has its own configuration.
        self._apis: list[Any] = [
            self.batch_api,
            self.basic_api,
            self.search_api,
            self.properties_api,
            self.status_api,
            self.definition_api,
        ]
        self._tokens_api: Any = None
        if credentials.uses_oauth:
            oauth = hubspot.Client.create(host=credentials.token_host, retry=False)
            self._tokens_api = oauth.oauth.tokens_api

    def call(
        self,
        operation: str,
        method: Callable[..., Any],
        *args: Any,
        count: int = 1,
        **kwargs: Any,
    ) -> Any:
        """The data `method` (a `*_with_http_info` client method) returns.

        Args:
            operation: what the call does, for logs and error messages.
            method: the client method; `*_with_http_info` ones return the
                response headers alongside the data, on success too.
            *args: its positional arguments.
            count: how many records the call carries, for the log.
            **kwargs: its keyword arguments.

        Raises:
            CrmError: what the call's last failure translates to.
        """
        refreshed = False

        def attempt() -> Any:
            nonlocal refreshed
            self._ensure_token()
            try:
                return self._once(operation, method, args, kwargs, count)
            except CrmAuthError as exc:
                if self._tokens_api is None or refreshed or exc.status != 401:
                    raise
                # An OAuth token may die before `expires_in` says (revoked, or a
                # clock apart): refresh once and replay; a second 401 is final.
                refreshed = True
                self._refresh()
                self._budget.acquire()
                return self._once(operation, method, args, kwargs, count)

        return call_with_retries(
            operation, attempt, budget=self._budget, sleep=self._sleep
        )

    def close(self) -> None:
        """Closes every connection pool the client opened."""
        for api in [*self._apis, self._tokens_api]:
            if api is None:
                continue
            api.api_client.rest_client.pool_manager.clear()

    def _once(
        self,
        operation: str,
        method: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        count: int,
    ) -> Any:
        started = self._clock()
        timeout = self._credentials.timeout_seconds
        try:
            data, status, headers = method(*args, _request_timeout=timeout, **kwargs)
        except API_EXCEPTIONS as exc:
            self._budget.observe(_headers(exc.headers))
            self._log(operation, count, exc.status, started)
            raise translate(operation, exc) from exc
        except TRANSPORT_FAILURES as exc:
            self._log(operation, count, type(exc).__name__, started)
            host = self._credentials.api_host
            raise translate(operation, exc, host=host) from exc
        self._budget.observe(_headers(headers))
        self._log(operation, count, status, started)
        return data

    def _log(self, operation: str, count: int, status: object, started: float) -> None:
        logger.debug(
            "HubSpot %s: %d record(s), status %s, %.0f ms",
            operation,
            count,
            status,
            (self._clock() - started) * 1000,
        )

    def _ensure_token(self) -> None:
        if self._tokens_api is None:
            return
        with self._lock:
            expires_at = self._expires_at
        if expires_at is None or self._clock() >= expires_at - REFRESH_MARGIN_SECONDS:
            self._refresh()

    def _refresh(self) -> None:
        """Trades the refresh token for a new access token and hands it to every API.

        Raises:
            CrmAuthError: HubSpot refused the OAuth app's credentials.
            CrmUnavailable: the token endpoint could not be reached.
        """
        credentials = self._credentials
        assert self._tokens_api is not None
        assert credentials.client_secret is not None
        assert credentials.refresh_token is not None
        started = self._clock()
        try:
            answer = self._tokens_api.create(
                grant_type="refresh_token",
                client_id=credentials.client_id,
                client_secret=credentials.client_secret.get_secret_value(),
                refresh_token=credentials.refresh_token.get_secret_value(),
                _request_timeout=credentials.timeout_seconds,
            )
        except TRANSPORT_FAILURES as exc:
            self._log("token refresh", 0, type(exc).__name__, started)
            host = credentials.token_host
            raise translate("token refresh", exc, host=host) from exc
        except API_EXCEPTIONS as exc:
            self._log("token refresh", 0, exc.status, started)
            error = translate("token refresh", exc)
            if error.retryable:
                raise error from exc
            raise CrmAuthError(
                f"token refresh: HubSpot refused the OAuth app's refresh token "
                f"({error.code}); reconnect the app to get a new one.",
                status=exc.status,
            ) from exc
        self._log("token refresh", 0, 200, started)
        with self._lock:
            self._expires_at = started + float(answer.expires_in)
            for api in self._apis:
                api.api_client.configuration.access_token = answer.access_token


def _headers(headers: Mapping[str, str] | None) -> Mapping[str, str]:
    # urllib3's HTTPHeaderDict looks names up case-insensitively, which matters:
    # servers may send `x-hubspot-ratelimit-remaining` in lower case.
    return headers if headers is not None else {}
