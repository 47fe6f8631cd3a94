"""`GET /api/leads/{id}/emails`: a lead's sequences, step by step, and its one-offs."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from connectors.email.file_outbox import FileOutbox
from connectors.email.templates import TemplateRenderer
from leads import rulebook
from leads.store.claims import claim
from leads.store.outbox import SEQUENCE_ENROLMENT, wake_enrolments
from leads.unsubscribe import lead_link_maker, unsubscribe_url
from tasks.sequence_steps import DispatchContext, dispatch_claims

CONFIG = Path(__file__).parents[2] / "config"
LEASE = timedelta(minutes=1)


def dispatch(store, tmp_path, settings) -> dict[str, int]:
    """One dispatcher pass over what is due, as the flow would run it."""
    context = DispatchContext(
        sequences=rulebook.sequences(),
        renderer=TemplateRenderer(CONFIG / "templates"),
        outbox=FileOutbox(tmp_path / "outbox"),
        sender_address="Automation Orchestrator <noreply@localhost>",
        unsubscribe_link=lead_link_maker(settings),
    )
    claims = claim(store, SEQUENCE_ENROLMENT, "test-run", limit=50, lease=LEASE)
    return dispatch_claims(store, claims, context).as_counts()


def welcome(client, lead_id: str) -> dict:
    emails = client.get(f"/api/leads/{lead_id}/emails")
    assert emails.status_code == 200, emails.text
    (found,) = [
        e for e in emails.json()["sequences"] if e["sequence"] == "welcome_sequence"
    ]
    return found


def test_shows_what_was_sent_and_what_is_planned(client, store, tmp_path, live_api):
    lead = client.post("/api/leads", json={"email": "ada@example.com"}).json()

    planned = welcome(client, lead["id"])
    assert planned["status"] == "active"
    assert [(s["id"], s["outcome"]) for s in planned["steps"]] == [
        ("welcome_1", "planned"),
        ("welcome_2", "planned"),
        ("welcome_3", "planned"),
    ]

    assert dispatch(store, tmp_path, live_api.settings)["sent"] == 1
    after = welcome(client, lead["id"])

    steps = {s["id"]: s for s in after["steps"]}
    assert steps["welcome_1"]["outcome"] == "sent"
    assert steps["welcome_1"]["message_id"]
    assert steps["welcome_2"]["outcome"] == "planned"
    assert steps["welcome_2"]["due_at"] == after["next_check_at"]
    assert steps["welcome_3"]["due_at"] is None


def test_a_change_that_wakes_the_enrolment_leaves_the_next_step_s_time(
    client, store, tmp_path, live_api
):
    lead = client.post("/api/leads", json={"email": "lin@example.com"}).json()
    dispatch(store, tmp_path, live_api.settings)
    planned = welcome(client, lead["id"])
    due = datetime.fromisoformat(planned["steps"][1]["due_at"])

    # As news that may stop a sequence does (a provider's event, an edited
    # sequences file): the dispatcher looks again at once.
    with store.write("default") as scope:
        assert wake_enrolments(scope, lead["id"]) == 1
    woken = welcome(client, lead["id"])

    # It would send the step only when it is due.
    assert datetime.fromisoformat(woken["next_check_at"]) < due - timedelta(days=1)
    assert datetime.fromisoformat(woken["steps"][1]["due_at"]) == due


def test_an_unsubscribe_stops_the_sequence_at_the_next_run(
    client, store, tmp_path, live_api
):
    lead = client.post("/api/leads", json={"email": "nia@example.com"}).json()
    dispatch(store, tmp_path, live_api.settings)
    link = unsubscribe_url(live_api.settings, "default", lead_id=lead["id"])

    assert client.post(urlsplit(link).path).status_code == 200
    # Woken by the unsubscribe: stopped now, not when step 2 would be due.
    assert dispatch(store, tmp_path, live_api.settings)["stopped"] == 1

    stopped = welcome(client, lead["id"])
    assert stopped["status"] == "stopped"
    assert [s["outcome"] for s in stopped["steps"]] == [
        "sent",
        "skipped_unsubscribed",
        "skipped_unsubscribed",
    ]
    assert stopped["next_check_at"] is None


def test_an_unknown_lead_is_404(client):
    missing = "00000000-0000-4000-8000-000000000000"

    assert client.get(f"/api/leads/{missing}/emails").status_code == 404
