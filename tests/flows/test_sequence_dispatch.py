"""The e-mail dispatcher flow, run in this process on the session's Prefect server."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from email.utils import make_msgid
from pathlib import Path

import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

from flows.sequence_dispatch import dispatch_sequence
from leads.email_sends import SendRequest, accept
from leads.intake import submit
from leads.settings import get_settings
from leads.store import Store
from leads.store.schema import upgrade
from leads.store.tables import EmailSend

pytestmark = pytest.mark.slow


@pytest.fixture
def store(
    new_store_url, prefect_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    """A new SQLite store the flow finds through ORCH_*, and Prefect on the test one."""
    url = new_store_url("sqlite")
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
        # Sent while the server is still up: the run's logs ship in the
        # background, and the session's server stops before they would.
        APILogWorker.drain_all(timeout=5)
    get_settings.cache_clear()
    fresh.dispose()


def run_artifact(url: str, key: str, flow_run_id):
    """The artifact `key` of one flow run (the session's server holds others')."""

    async def read():
        async with PrefectClient(api=url) as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=[key]),
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                )
            )

    (artifact, *_) = asyncio.run(read())
    data = artifact.data
    return artifact, json.loads(data) if isinstance(data, str) else data


def test_sends_one_offs_and_due_steps_in_one_run_reporting_counts_only(
    store, prefect_server
):
    lead = submit(
        store,
        "default",
        {"email": "ada@example.com", "first_name": "Ada"},
        channel="api",
        region="US",
    ).lead
    queued = [
        accept(
            store,
            "default",
            SendRequest(category=category, subject="Hi", text="Hello", **target),
            message_id=make_msgid(domain="localhost"),
        ).send
        for category, target in (
            ("marketing", {"lead_id": lead.id}),
            ("transactional", {"recipient": "zoe@example.com"}),
        )
    ]

    state = dispatch_sequence(idle_grace_seconds=0, return_state=True)
    totals = state.result()

    # Two one-offs and the welcome sequence's first step.
    assert (totals["one_off_sent"], totals["sent"]) == (2, 1)
    outbox = get_settings().email_outbox_dir
    assert len(list(outbox.glob("*.eml"))) == 3
    with store.read("default") as scope:
        assert {scope.get(EmailSend, s.id).status for s in queued} == {"sent"}
    artifact, table = run_artifact(
        prefect_server.api_url,
        "sequence-dispatch-summary",
        state.state_details.flow_run_id,
    )
    counts = {row["outcome"]: row["count"] for row in table}
    assert (counts["one_off_sent"], counts["sent"]) == (2, 1)
    text = json.dumps(table) + (artifact.description or "")
    assert "example.com" not in text and "Ada" not in text


def test_a_sequence_not_in_the_file_is_refused_by_name(store, prefect_server):
    with pytest.raises(ValueError, match="no sequence 'nope'"):
        dispatch_sequence(sequence="nope", idle_grace_seconds=0)
