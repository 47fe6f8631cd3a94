"""The HubSpot connector against the sandbox over real HTTP, and what it sent."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.crm.hubspot import HubSpotConnector, HubSpotCredentials
from connectors.sandbox.app import SandboxState
from connectors.sandbox.hubspot import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_REFRESH_TOKEN,
    SANDBOX_TOKEN,
)
from connectors.sandbox.server import running_sandbox

CASES = Path(__file__).parents[3] / "cases"


class RecordingBudget:
    """A budget without limits that remembers each acquire and observed headers."""

    def __init__(self) -> None:
        self.acquired = 0
        self.observed: list[Mapping[str, str]] = []

    def acquire(self, calls: int = 1) -> None:
        self.acquired += calls

    def observe(self, headers: Mapping[str, str]) -> None:
        self.observed.append(headers)


class RecordingSleep:
    """Records each wait; really sleeps only when `real` (for wall-clock checks)."""

    def __init__(self, real: bool = False) -> None:
        self.real = real
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.real:
            time.sleep(seconds)


class Sandbox:
    """A running sandbox: its URL, its state, and its control routes."""

    def __init__(self, base_url: str, state: SandboxState) -> None:
        self.base_url = base_url
        self.state = state
        self.http = httpx.Client(base_url=base_url, timeout=60)

    def connector(self, **options: Any) -> HubSpotConnector:
        credentials = HubSpotCredentials(access_token=SANDBOX_TOKEN, host=self.base_url)
        return HubSpotConnector(credentials, **options)

    def oauth_connector(self, **options: Any) -> HubSpotConnector:
        credentials = HubSpotCredentials(
            client_id=SANDBOX_CLIENT_ID,
            client_secret=SANDBOX_CLIENT_SECRET,
            refresh_token=SANDBOX_REFRESH_TOKEN,
            host=self.base_url,
        )
        return HubSpotConnector(credentials, **options)

    def arm(self, **spec: Any) -> None:
        """Arms a fault on the HubSpot side (`POST /_sandbox/faults`)."""
        response = self.http.post("/_sandbox/faults", json={"vendor": "hubspot"} | spec)
        response.raise_for_status()

    def seed(self, **body: Any) -> dict[str, Any]:
        response = self.http.post("/_sandbox/hubspot/contacts/seed", json=body)
        response.raise_for_status()
        return response.json()

    def limits(self, **settings: Any) -> None:
        self.http.put("/_sandbox/hubspot/limits", json=settings).raise_for_status()

    def received(self) -> dict[str, Any]:
        return self.http.get("/_sandbox/hubspot/requests").json()

    def count(self, route: str) -> int:
        return self.received()["counts"].get(route, 0)

    def bodies(self, route: str) -> list[Any]:
        method, _, path = route.partition(" ")
        return [
            json.loads(r["body"])
            for r in self.received()["latest"]
            if r["method"] == method and r["route"] == path
        ]

    def contacts(self) -> dict[str, dict[str, Any]]:
        """Every contact, by e-mail."""
        listed = self.http.get("/_sandbox/hubspot/contacts").json()
        return {c["properties"]["email"]: c for c in listed}


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[str, SandboxState]]:
    with running_sandbox() as served:
        yield served


@pytest.fixture
def sandbox(running: tuple[str, SandboxState]) -> Iterator[Sandbox]:
    base_url, state = running
    state.reset()
    box = Sandbox(base_url, state)
    yield box
    box.http.close()


@pytest.fixture
def case():
    """Reads a case file copied from the shared acceptance cases."""

    def load(name: str) -> dict[str, Any]:
        return json.loads((CASES / f"{name}.json").read_text(encoding="utf-8"))

    return load


@pytest.fixture
def budget() -> RecordingBudget:
    return RecordingBudget()


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()
