"""The sandbox over real HTTP, and HubSpot's official client pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import hubspot
import pytest

from connectors.sandbox.app import SandboxState
from connectors.sandbox.hubspot import SANDBOX_TOKEN
from connectors.sandbox.server import running_sandbox


class Sandbox:
    """A running sandbox: its URL, its state, and its control routes."""

    def __init__(self, base_url: str, state: SandboxState) -> None:
        self.base_url = base_url
        self.state = state
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def client(self, token: str = SANDBOX_TOKEN) -> Any:
        return hubspot.Client.create(
            access_token=token, host=self.base_url, base_url=self.base_url, retry=False
        )

    def seed(self, **body: Any) -> dict[str, Any]:
        response = self.http.post("/_sandbox/hubspot/contacts/seed", json=body)
        response.raise_for_status()
        return response.json()

    def limits(self, **settings: Any) -> None:
        self.http.put("/_sandbox/hubspot/limits", json=settings).raise_for_status()

    def received(self) -> dict[str, Any]:
        return self.http.get("/_sandbox/hubspot/requests").json()

    def contacts(self) -> list[dict[str, Any]]:
        return self.http.get("/_sandbox/hubspot/contacts").json()


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
