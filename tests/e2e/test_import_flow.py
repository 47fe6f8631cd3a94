"""The lead-import flow run in this process against the session's Prefect server."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

from flows.lead_import import import_leads
from leads import importer
from leads.settings import get_settings
from leads.store import Store
from leads.store import imports as stored
from leads.store.schema import upgrade
from leads.store.tables import LeadImport

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parents[1] / "fixtures" / "csv"
SALESFORCE_LEADS = FIXTURES / "salesforce_trailhead" / "Lead_Data.csv"
OUTCOMES = ("created", "updated", "unchanged", "merged", "possible_duplicate")


def outcomes(**given: int) -> dict[str, int]:
    return {name: given.get(name, 0) for name in (*OUTCOMES, "rejected")}


@pytest.fixture
def store(
    backend: str,
    new_store_url,
    prefect_server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Store]:
    """A new store the flow finds through ORCH_*, and Prefect on the test server."""
    url = new_store_url(backend)
    fresh = Store(url)
    upgrade(fresh.engine)
    for name in list(os.environ):
        if name.startswith("ORCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ORCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ORCH_DATABASE_URL", url)
    get_settings.cache_clear()
    with temporary_settings(
        updates={
            PREFECT_API_URL: prefect_server.api_url,
            PREFECT_HOME: str(tmp_path / "prefect"),
        }
    ):
        yield fresh
    get_settings.cache_clear()
    fresh.dispose()


def queue(store: Store, path: Path, **options: Any) -> LeadImport:
    with path.open("rb") as source:
        return importer.accept(
            store,
            "default",
            source,
            filename=path.name,
            folder=get_settings().import_dir,
            max_bytes=get_settings().max_import_bytes,
            **options,
        )


def pending_signals(url: str, run_id: Any) -> int:
    """How many `leads.pending` events the flow run emitted (the drains' trigger)."""
    deadline = time.monotonic() + 20
    while True:
        found = httpx.post(
            f"{url}/events/filter",
            json={"filter": {"event": {"name": ["leads.pending"]}}, "limit": 50},
            timeout=10,
        ).json()["events"]
        mine = [
            event
            for event in found
            if event["resource"]["prefect.resource.id"] == "orchestrator.leads"
            and any(
                str(run_id) in related["prefect.resource.id"]
                for related in event.get("related", [])
            )
        ]
        # Events reach the server a moment after the run ends.
        if len(mine) >= 3 or time.monotonic() > deadline:
            return len(mine)
        time.sleep(0.5)


def the_import(store: Store, import_id: str) -> LeadImport:
    with store.read("default") as scope:
        return stored.get(scope, import_id)


def prefect(url: str, call: Callable[[PrefectClient], Any]) -> Any:
    async def run() -> Any:
        async with PrefectClient(api=url) as client:
            return await call(client)

    return asyncio.run(run())


def artifact_table(url: str, key: str) -> tuple[Any, list[dict[str, Any]]]:
    """The newest artifact with this key, and its table's rows."""
    found = prefect(
        url,
        lambda client: client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        ),
    )
    assert found, f"no artifact with key {key}"
    artifact = found[0]
    data = artifact.data
    return artifact, json.loads(data) if isinstance(data, str) else data


def personal_data(path: Path) -> set[str]:
    """Every e-mail address and name in a lead file."""
    with path.open(newline="") as file:
        return {
            row[column]
            for row in csv.DictReader(file)
            for column in ("Email", "FirstName", "LastName")
        }


class TestOneImport:
    def test_counts_a_task_run_per_chunk_and_a_counts_only_artifact(
        self, store, prefect_server
    ):
        row = queue(store, SALESFORCE_LEADS, chunk_size=4)

        state = import_leads(row.id, return_state=True)

        assert state.is_completed(), state
        assert state.result() == outcomes(created=11)
        done = the_import(store, row.id)
        assert (done.status, done.counts) == ("finished", outcomes(created=11))
        run_id = state.state_details.flow_run_id
        flow_run = prefect(
            prefect_server.api_url, lambda client: client.read_flow_run(run_id)
        )
        assert flow_run.parameters == {"import_id": row.id}
        task_runs = prefect(
            prefect_server.api_url,
            lambda client: client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            ),
        )
        assert len(task_runs) == 3, "11 records in chunks of 4"
        assert {run.name.rsplit("-", 1)[0] for run in task_runs} == {"import chunk"}
        assert {run.state_type for run in task_runs} == {StateType.COMPLETED}

        artifact, table = artifact_table(
            prefect_server.api_url, f"lead-import-{row.id}"
        )
        assert artifact.type == "table"
        assert UUID(str(artifact.flow_run_id)) == run_id
        values = {line["what"]: line["value"] for line in table}
        assert values["records"] == 11
        assert values["created"] == 11
        assert values["rejected"] == 0
        assert values["encoding"] == "utf-8"
        text = json.dumps(table) + (artifact.description or "")
        assert "@" not in text
        leaked = {value for value in personal_data(SALESFORCE_LEADS) if value in text}
        assert leaked == set(), "the artifact carries counts, never lead data"
        assert pending_signals(prefect_server.api_url, run_id) == 3, "one a chunk"

    def test_a_dry_run_says_so_on_its_artifact(self, store, prefect_server):
        row = queue(store, FIXTURES / "CSV-01.csv", dry_run=True)

        counts = import_leads(row.id)

        assert counts == outcomes(created=2)
        artifact, table = artifact_table(
            prefect_server.api_url, f"lead-import-{row.id}"
        )
        assert "dry run" in (artifact.description or "")
        assert {"what": "would be created", "value": 2} in table


class TestSweep:
    def test_without_an_id_it_takes_every_queued_import(self, store):
        first = queue(store, SALESFORCE_LEADS)
        second = queue(store, FIXTURES / "CSV-01.csv")

        counts = import_leads()

        assert counts == outcomes(created=13)
        assert the_import(store, first.id).status == "finished"
        assert the_import(store, second.id).status == "finished"
        assert stored.resumable(store) == []

    def test_a_second_run_for_a_finished_import_changes_nothing(self, store):
        row = queue(store, FIXTURES / "CSV-01.csv")
        import_leads(row.id)

        again = import_leads(row.id)

        assert again == {}
        assert the_import(store, row.id).counts == outcomes(created=2)


class TestPersonalData:
    def test_no_lead_data_reaches_the_task_runs(self, store, prefect_server):
        row = queue(store, FIXTURES / "CSV-02.csv", chunk_size=1)

        state = import_leads(row.id, return_state=True)

        run_id = state.state_details.flow_run_id
        task_runs = prefect(
            prefect_server.api_url,
            lambda client: client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            ),
        )
        assert len(task_runs) == 2
        recorded = json.dumps([run.model_dump(mode="json") for run in task_runs])
        assert "example.com" not in recorded
        assert "Müller" not in recorded and "M\\u00fcller" not in recorded
