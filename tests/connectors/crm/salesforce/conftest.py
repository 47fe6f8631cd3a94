"""The Salesforce connector driving simple-salesforce against the sandbox over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.crm.salesforce import SalesforceConnector, SalesforceCredentials
from connectors.sandbox.app import SandboxState
from connectors.sandbox.salesforce import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
)
from connectors.sandbox.server import running_sandbox

CASES = Path(__file__).parents[3] / "cases"


def case(name: str) -> dict[str, Any]:
    """An acceptance case from `tests/cases`."""
    return json.loads((CASES / f"{name}.json").read_text(encoding="utf-8"))


class RecordingBudget:
    """A budget without limits that remembers acquires and observed headers."""

    def __init__(self) -> None:
        self.acquired = 0
        self.observed: list[Mapping[str, str]] = []

    def acquire(self, calls: int = 1) -> None:
        self.acquired += calls

    def observe(self, headers: Mapping[str, str]) -> None:
        self.observed.append(headers)


class RecordingSleep:
    """Records each wait instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class Sandbox:
    """A running sandbox: its URL, its state, and its Salesforce control routes."""

    def __init__(self, base_url: str, state: SandboxState) -> None:
        self.base_url = base_url
        self.state = state
        self.http = httpx.Client(base_url=base_url, timeout=30)
        self.connectors: list[SalesforceConnector] = []

    def credentials(self, **overrides: Any) -> SalesforceCredentials:
        values: dict[str, Any] = {
            "flow": "client_credentials",
            "token_url": f"{self.base_url}/services/oauth2/token",
            "client_id": SANDBOX_CLIENT_ID,
            "client_secret": SANDBOX_CLIENT_SECRET,
            "bulk_poll_seconds": 0,
        }
        return SalesforceCredentials(**(values | overrides))

    def connector(
        self, *, budget: Any = None, sleep: Any = None, **overrides: Any
    ) -> SalesforceConnector:
        options: dict[str, Any] = {"sleep": sleep or RecordingSleep()}
        if budget is not None:
            options["budget"] = budget
        connector = SalesforceConnector(self.credentials(**overrides), **options)
        self.connectors.append(connector)
        return connector

    def settings(self, **change: Any) -> dict[str, Any]:
        response = self.http.patch("/_sandbox/salesforce/settings", json=change)
        response.raise_for_status()
        return response.json()

    def arm(self, **spec: Any) -> None:
        """Arms a fault on the Salesforce side (`POST /_sandbox/faults`)."""
        response = self.http.post(
            "/_sandbox/faults", json={"vendor": "salesforce"} | spec
        )
        response.raise_for_status()

    def faults(self) -> list[dict[str, Any]]:
        """The faults still armed, each with how many times it is `left`."""
        return self.http.get("/").json()["faults"]

    def seed(self, *records: dict[str, Any], sobject: str = "Lead") -> list[str]:
        response = self.http.post(
            f"/_sandbox/salesforce/records/{sobject}", json=list(records)
        )
        response.raise_for_status()
        return response.json()["ids"]

    def requests(self) -> dict[str, int]:
        return self.http.get("/_sandbox/salesforce/requests").json()

    def leads(self) -> list[dict[str, Any]]:
        return self.http.get("/_sandbox/salesforce/leads").json()

    def lead(self, **where: Any) -> dict[str, Any]:
        [found] = [
            lead
            for lead in self.leads()
            if all(lead.get(name) == value for name, value in where.items())
        ]
        return found


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[str, SandboxState]]:
    with running_sandbox() as (base_url, state):
        yield base_url, state


@pytest.fixture
def sandbox(running: tuple[str, SandboxState]) -> Iterator[Sandbox]:
    base_url, state = running
    state.reset()
    sandbox = Sandbox(base_url, state)
    yield sandbox
    for connector in sandbox.connectors:
        connector.close()
    sandbox.http.close()


@pytest.fixture
def budget() -> RecordingBudget:
    return RecordingBudget()


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def cases() -> Any:
    """Loads an acceptance case by name (`cases("SF-04")`)."""
    return case


@pytest.fixture(scope="session")
def rsa_key_pair() -> tuple[str, str]:
    """A throwaway RSA key pair (private PEM, public PEM) for the JWT bearer flow."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        .decode()
    )
    return private, public
