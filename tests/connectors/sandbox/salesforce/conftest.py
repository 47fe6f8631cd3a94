"""The sandbox's Salesforce half, driven by simple-salesforce over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from simple_salesforce import Salesforce

from connectors.crm.salesforce.client import SalesforceSession
from connectors.sandbox.app import SandboxState
from connectors.sandbox.salesforce import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET
from connectors.sandbox.server import running_sandbox


class Org:
    """The running sandbox, an HTTP client for it, and simple-salesforce logged in."""

    def __init__(self, base_url: str, state: SandboxState) -> None:
        self.base_url = base_url
        self.state = state
        self.http = httpx.Client(base_url=base_url, timeout=30)
        self.session = SalesforceSession(timeout=30, on_headers=lambda headers: None)
        self.session.route_to(base_url)

    def token(self) -> dict[str, Any]:
        response = self.http.post(
            "/services/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET),
        )
        response.raise_for_status()
        return response.json()

    def salesforce(self, session_id: str | None = None) -> Salesforce:
        token = self.token()
        return Salesforce(
            instance_url=token["instance_url"],
            session_id=session_id or token["access_token"],
            session=self.session,
        )

    def settings(self, **change: Any) -> None:
        self.http.patch("/_sandbox/salesforce/settings", json=change).raise_for_status()

    def seed(self, *records: dict[str, Any], sobject: str = "Lead") -> list[str]:
        response = self.http.post(
            f"/_sandbox/salesforce/records/{sobject}", json=list(records)
        )
        response.raise_for_status()
        return response.json()["ids"]


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[str, SandboxState]]:
    with running_sandbox() as (base_url, state):
        yield base_url, state


@pytest.fixture
def org(running: tuple[str, SandboxState]) -> Iterator[Org]:
    base_url, state = running
    state.reset()
    org = Org(base_url, state)
    yield org
    org.session.close()
    org.http.close()


@pytest.fixture
def sf(org: Org) -> Salesforce:
    return org.salesforce()
