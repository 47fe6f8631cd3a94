"""Flows run in this process on the session's Prefect server, each on a new store."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)

from leads.settings import get_settings
from leads.store import Store
from leads.store.schema import upgrade

FlowStore = Callable[..., Store]


@pytest.fixture
def flow_store(
    new_store_url, on_prefect, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FlowStore]:
    """Makes a new store the flows find through ORCH_* (plus given settings).

    Of the session's default backend: SQLite, or PostgreSQL when scaled.

    `flow_store(ORCH_CRM="none")` returns the migrated store; Prefect points at
    the session's server until the test ends.
    """
    opened: list[Store] = []

    def make(**settings: str) -> Store:
        url = new_store_url()
        fresh = Store(url)
        upgrade(fresh.engine)
        for name in list(os.environ):
            if name.startswith("ORCH_"):
                monkeypatch.delenv(name)
        monkeypatch.setenv("ORCH_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("ORCH_DATABASE_URL", url)
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        opened.append(fresh)
        return fresh

    yield make
    get_settings.cache_clear()
    for store in opened:
        store.dispose()


@pytest.fixture
def run_artifact(prefect_server) -> Callable[[str, Any], tuple[Any, Any]]:
    """Reads the artifact `key` of one flow run, and its data.

    The session's server holds other runs' artifacts of the same key.
    """

    def read(key: str, flow_run_id: Any) -> tuple[Any, Any]:
        async def fetch() -> list[Any]:
            async with PrefectClient(api=prefect_server.api_url) as client:
                return await client.read_artifacts(
                    artifact_filter=ArtifactFilter(
                        key=ArtifactFilterKey(any_=[key]),
                        flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                    )
                )

        (artifact, *_) = asyncio.run(fetch())
        data = artifact.data
        return artifact, json.loads(data) if isinstance(data, str) else data

    return read
