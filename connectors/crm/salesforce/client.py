"""One logged-in simple-salesforce client: its HTTP session, re-login and retries."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceError, SalesforceOperationError

from connectors.crm.budget import RateBudget
from connectors.crm.errors import CrmError
from connectors.crm.retries import MAX_ATTEMPTS, call_with_retries
from connectors.crm.salesforce.credentials import SalesforceCredentials, fetch_token
from connectors.crm.salesforce.errors import SessionExpired, translate
from connectors.crm.urls import is_loopback

logger = logging.getLogger(__name__)

T = TypeVar("T")


class SalesforceSession(requests.Session):
    """The `requests` session simple-salesforce runs on.

    simple-salesforce always builds `https://<instance>/…` URLs. When the org's
    instance is the plain-HTTP sandbox on loopback, this session sends those
    requests to it over HTTP; it never rewrites a request for any other host.
    It also gives every request a timeout and hands every response's headers
    to the rate budget.
    """

    def __init__(
        self, *, timeout: float, on_headers: Callable[[Mapping[str, str]], None]
    ) -> None:
        super().__init__()
        self.timeout = timeout
        self.loopback_instance: str | None = None
        self.hooks["response"].append(self._after_response)
        self._on_headers = on_headers

    def route_to(self, instance_url: str) -> None:
        """Sends `https://` requests for `instance_url`'s host to it as given.

        Only for a loopback `http://` instance; environment proxies and CA
        settings are then ignored, as they have no business with loopback.
        """
        if not is_loopback(instance_url):
            self.loopback_instance = None
            return
        self.loopback_instance = urlsplit(instance_url).netloc
        self.trust_env = False

    def request(  # type: ignore[override]
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        target = url.decode() if isinstance(url, bytes) else url
        if self.loopback_instance:
            prefix = f"https://{self.loopback_instance}/"
            if target.startswith(prefix):
                target = "http://" + target.removeprefix("https://")
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, target, *args, **kwargs)

    def _after_response(
        self, response: requests.Response, *args: Any, **kwargs: Any
    ) -> None:
        # Bulk API 2.0 result files are UTF-8, but a `text/csv` reply without a
        # charset would be decoded as ISO-8859-1 by requests (RFC 2616's
        # default for text/*), turning ™ or 山田 into mojibake (SF-07).
        content_type = response.headers.get("Content-Type", "")
        if content_type.startswith("text/csv") and "charset" not in content_type:
            response.encoding = "utf-8"
        self._on_headers(response.headers)
        logger.debug(
            "salesforce %s %s: %s in %.0f ms",
            response.request.method,
            urlsplit(response.url).path,
            response.status_code,
            response.elapsed.total_seconds() * 1000,
        )


class SalesforceClient:
    """A simple-salesforce client that logs in with the configured flow.

    Every call runs under the rate budget with `call_with_retries`; an expired
    session is re-authenticated once per call and the call replayed (SF-01).
    simple-salesforce's own re-login is never armed: the client is built from
    a session id, so it has no login to repeat, and cannot loop on a 401.
    """

    def __init__(
        self,
        credentials: SalesforceCredentials,
        *,
        budget: RateBudget,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.credentials = credentials
        self._budget = budget
        self._sleep = sleep
        self._session = SalesforceSession(
            timeout=credentials.timeout_seconds, on_headers=budget.observe
        )
        self._salesforce: Salesforce | None = None
        self._instance_url: str | None = None
        self._lock = threading.Lock()

    @property
    def instance_url(self) -> str | None:
        """The org's instance, as the last login returned it."""
        return self._instance_url

    def call(
        self,
        operation: str,
        request: Callable[[Salesforce], T],
        *,
        count: int = 0,
        repeatable: bool = True,
    ) -> T:
        """Runs `request` against the logged-in client.

        Args:
            operation: what the call does, for logs and error messages.
            request: the simple-salesforce call to make.
            count: records the call carries, for the log line.
            repeatable: whether the call may be retried after a timeout or 5xx.
                A create is not: Salesforce may have stored the records before
                failing to answer. Replaying after a 401 is always safe, as
                Salesforce stored nothing.

        Raises:
            CrmError: the call failed and retrying did not help.
        """
        reauthenticated = False

        def attempt() -> T:
            nonlocal reauthenticated
            client = self._client()
            try:
                return self._run(operation, request, client)
            except SessionExpired:
                if reauthenticated:
                    raise
            reauthenticated = True
            logger.info(
                "salesforce session expired; logging in again (%s flow)",
                self.credentials.flow,
            )
            client = self._login(stale=client)
            try:
                return self._run(operation, request, client)
            except SessionExpired as exc:
                raise SessionExpired(
                    f"Salesforce refused {operation} again right after a fresh "
                    f"{self.credentials.flow} login; check the integration user's "
                    "session settings and IP restrictions",
                    status=401,
                ) from exc

        started = time.monotonic()
        try:
            result = call_with_retries(
                operation,
                attempt,
                budget=self._budget,
                attempts=MAX_ATTEMPTS if repeatable else 1,
                sleep=self._sleep,
            )
        except CrmError as exc:
            logger.warning(
                "salesforce %s: %d records, failed %s, %.0f ms",
                operation,
                count,
                exc.code,
                (time.monotonic() - started) * 1000,
            )
            raise
        logger.info(
            "salesforce %s: %d records, ok, %.0f ms",
            operation,
            count,
            (time.monotonic() - started) * 1000,
        )
        return result

    def _run(
        self, operation: str, request: Callable[[Salesforce], T], client: Salesforce
    ) -> T:
        try:
            return request(client)
        except (
            SalesforceError,
            SalesforceOperationError,
            requests.RequestException,
        ) as exc:
            raise translate(exc, operation) from exc

    def _client(self) -> Salesforce:
        with self._lock:
            current = self._salesforce
        return current if current is not None else self._login(stale=None)

    def _login(self, *, stale: Salesforce | None) -> Salesforce:
        """A freshly logged-in client, unless another thread just made one."""
        with self._lock:
            if self._salesforce is not None and self._salesforce is not stale:
                return self._salesforce
            token = fetch_token(self.credentials, self._session)
            self._session.route_to(token.instance_url)
            # SF-01: use the instance the login returned (a *.my.salesforce.com
            # host); another host for the same org answers INVALID_SESSION_ID.
            self._salesforce = Salesforce(
                instance_url=token.instance_url,
                session_id=token.access_token,
                session=self._session,
                version=self.credentials.api_version,
            )
            self._instance_url = token.instance_url
            logger.info("salesforce login (%s flow) ok", self.credentials.flow)
            return self._salesforce

    def close(self) -> None:
        """Drops the session and its connections."""
        with self._lock:
            self._salesforce = None
        self._session.close()
