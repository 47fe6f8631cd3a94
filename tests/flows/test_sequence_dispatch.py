"""The e-mail dispatcher flow, run in this process on the session's Prefect server."""

from __future__ import annotations

import json
from email.utils import make_msgid

import pytest

from flows.sequence_dispatch import dispatch_sequence
from leads.email_sends import SendRequest, accept
from leads.intake import submit
from leads.settings import get_settings
from leads.store import Store
from leads.store.tables import EmailSend

pytestmark = pytest.mark.slow


@pytest.fixture
def store(flow_store) -> Store:
    return flow_store()


def test_sends_one_offs_and_due_steps_in_one_run_reporting_counts_only(
    store, run_artifact
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
        "sequence-dispatch-summary", state.state_details.flow_run_id
    )
    counts = {row["outcome"]: row["count"] for row in table}
    assert (counts["one_off_sent"], counts["sent"]) == (2, 1)
    text = json.dumps(table) + (artifact.description or "")
    assert "example.com" not in text and "Ada" not in text


def test_a_sequence_not_in_the_file_is_refused_by_name(store, prefect_server):
    with pytest.raises(ValueError, match="no sequence 'nope'"):
        dispatch_sequence(sequence="nope", idle_grace_seconds=0)
