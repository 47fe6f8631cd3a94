"""Every flow run leaves one summary artifact: counts and reasons, no personal data."""

from __future__ import annotations

import asyncio
import inspect
import json
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from deployments.definitions import load_definitions
from flows.summaries import publish_summary, summary_rows
from leads import importer
from leads.intake import submit
from leads.settings import get_settings
from leads.store import Store

DEFINITIONS = load_definitions()
LEAD = {
    "email": "marie.curie@example.com",
    "first_name": "Marie",
    "last_name": "Sklodowska",
    "phone": "+1 415 555 0142",
}
IMPORTED = Path(__file__).parents[1] / "fixtures" / "csv" / "CSV-01.csv"


class TestSummaryRows:
    def test_one_row_per_outcome_in_name_order(self):
        rows = summary_rows({"sent": 2, "failed_tenants:CrmAuthError": 1, "bounced": 0})

        assert rows == [
            {"outcome": "bounced", "count": 0},
            {"outcome": "failed_tenants:CrmAuthError", "count": 1},
            {"outcome": "sent", "count": 2},
        ]

    @pytest.mark.parametrize(
        "outcome", ["marie.curie@example.com", "+1 415 555 0142", "Marie Curie", ""]
    )
    def test_an_outcome_that_is_not_a_code_is_refused(self, outcome):
        with pytest.raises(ValueError, match="outcomes are codes"):
            summary_rows({outcome: 1})

    @pytest.mark.parametrize("count", [True, 1.5, "3"])
    def test_a_count_that_is_not_a_whole_number_is_refused(self, count):
        with pytest.raises(ValueError, match="not a whole number"):
            summary_rows({"sent": count})

    @pytest.mark.parametrize("key", ["CRM-summary", "crm_sync_summary", "crm sync"])
    def test_a_key_prefect_would_refuse_is_refused_first(self, key):
        with pytest.raises(ValueError, match="lowercase letters, digits and dashes"):
            publish_summary(key, {"sent": 1}, "a run")


@pytest.fixture
def store(flow_store) -> Store:
    """A new store holding a lead and a queued import, found through ORCH_*."""
    # Queued CRM rows end as `no_crm` rather than reach for a sandbox.
    fresh = flow_store(ORCH_CRM="none")
    settings = get_settings()
    submit(fresh, "default", dict(LEAD), channel="api", region="US")
    with IMPORTED.open("rb") as source:
        importer.accept(
            fresh,
            "default",
            source,
            filename=IMPORTED.name,
            folder=settings.import_dir,
            max_bytes=settings.max_import_bytes,
        )
    return fresh


def artifacts_of(url: str, flow_run_id: Any) -> list[Any]:
    async def read() -> list[Any]:
        async with PrefectClient(api=url) as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
                )
            )

    return asyncio.run(read())


def personal_data() -> set[str]:
    """The lead's and the imported file's e-mails, names and phone digits."""
    imported = IMPORTED.read_text(encoding="utf-8-sig").splitlines()[1:]
    values = {value for line in imported for value in line.split(",") if value}
    return values | set(LEAD.values()) | {"4155550142"}


@pytest.mark.slow
@pytest.mark.parametrize("definition", DEFINITIONS, ids=lambda d: d.name)
def test_a_run_of_each_deployment_leaves_one_counts_only_summary(
    definition, store, prefect_server
):
    flow = definition.load_flow()
    accepted = inspect.signature(flow.fn).parameters
    fast = {"idle_grace_seconds": 0} if "idle_grace_seconds" in accepted else {}

    state = flow(**definition.parameters, **fast, return_state=True)

    assert state.is_completed(), state
    found = artifacts_of(prefect_server.api_url, state.state_details.flow_run_id)
    [summary] = [a for a in found if a.key and a.key.endswith("-summary")]
    rows = json.loads(summary.data) if isinstance(summary.data, str) else summary.data
    assert summary.type == "table"
    assert all(set(row) == {"outcome", "count"} for row in rows)
    text = json.dumps(rows) + (summary.description or "")
    assert "@" not in text
    assert {value for value in personal_data() if value in text} == set()
