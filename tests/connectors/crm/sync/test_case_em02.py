"""Case EM-02: an unsubscribe mid-sequence, checked at send time, in both CRMs.

Welcome on day 0, an unsubscribe click on day 1, a transactional meeting
confirmation on day 2, follow-ups due on days 3 and 7: the follow-ups are
skipped (not errors), the confirmation is sent, and the CRM's opt-out is set
(HubSpot through its subscriptions API, Salesforce's `HasOptedOutOfEmail`).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from email.utils import make_msgid
from pathlib import Path

import pytest

from connectors.email.file_outbox import FileOutbox
from connectors.email.templates import TemplateRenderer
from leads.clock import ManualClock, use_clock
from leads.email_sends import EMAIL_SEND, SendRequest, accept
from leads.intake import submit
from leads.sequences import load_sequences
from leads.settings import Settings
from leads.store import outbox
from leads.store.claims import claim
from leads.store.outbox import CRM_SYNC, SEQUENCE_ENROLMENT, enqueue
from leads.store.tables import Lead, SequenceStep
from leads.suppression import unsubscribe
from leads.unsubscribe import lead_link_maker
from tasks.one_off_sends import dispatch_one_offs
from tasks.sequence_steps import DispatchContext, dispatch_claims

CASE = json.loads(
    (Path(__file__).parents[3] / "cases" / "EM-02.json").read_text(encoding="utf-8")
)
CONFIG = Path(__file__).parents[4] / "config"
SENDER = "Automation Orchestrator <noreply@localhost>"
LEASE = timedelta(minutes=5)
# The case's campaign: welcome at once, follow-ups on days 3 and 7.
CAMPAIGN = """
sequences:
  campaign:
    steps:
      - {id: welcome, template: welcome_1, subject: Welcome}
      - {id: followup_1, template: welcome_2, subject: Follow-up 1, delay: 3d,
         after: enrolment}
      - {id: followup_2, template: welcome_3, subject: Follow-up 2, delay: 7d,
         after: enrolment}
"""


def at(name: str) -> datetime:
    return datetime.fromisoformat(
        next(e["at"] for e in CASE["input"]["timeline"] if e["event"] == name)
    )


@pytest.fixture
def campaign(tmp_path):
    path = tmp_path / "sequences.yaml"
    path.write_text(CAMPAIGN, encoding="utf-8")
    return load_sequences(path)


def walk_the_case(store, tmp_path, campaign) -> tuple[Lead, Path]:
    """Plays the case's timeline on a moved clock; returns the lead and outbox."""
    folder = tmp_path / "outbox"
    settings = Settings(data_dir=tmp_path / "data")
    context = DispatchContext(
        sequences=campaign,
        renderer=TemplateRenderer(CONFIG / "templates"),
        outbox=FileOutbox(folder),
        sender_address=SENDER,
        unsubscribe_link=lead_link_maker(settings),
    )

    def dispatch() -> None:
        claims = claim(store, SEQUENCE_ENROLMENT, "run", limit=10, lease=LEASE)
        dispatch_claims(store, claims, context)

    with use_clock(ManualClock(at("lead_created"))) as clock:
        lead = submit(
            store, "default", CASE["input"]["lead"], channel="api", region="US"
        ).lead
        with store.write("default") as scope:
            outbox.enrol(scope, scope.get(Lead, lead.id), "campaign")
        clock.set(at("send"))
        dispatch()

        clock.set(at("unsubscribe_click"))
        with store.write("default") as scope:
            unsubscribe(scope, scope.get(Lead, lead.id), source="one_click")

        clock.set(datetime.fromisoformat("2024-06-05T15:00:00+00:00"))
        accept(
            store,
            "default",
            SendRequest(
                category="transactional",
                subject="Your meeting is confirmed",
                lead_id=lead.id,
                template="meeting_confirmation",
            ),
            message_id=make_msgid(domain="localhost"),
        )
        claims = claim(store, EMAIL_SEND, "run", limit=10, lease=LEASE)
        dispatch_one_offs(
            store,
            claims,
            renderer=context.renderer,
            outbox=context.outbox,
            sender_address=SENDER,
            flow_run_id=None,
            settings=settings,
        )

        for day in ("2024-06-06T09:00:00+00:00", "2024-06-10T09:00:00+00:00"):
            clock.set(datetime.fromisoformat(day))
            dispatch()
    return lead, folder


def test_follow_ups_are_skipped_and_the_confirmation_still_goes(
    store, tmp_path, campaign, caplog
):
    with caplog.at_level(logging.WARNING):
        lead, folder = walk_the_case(store, tmp_path, campaign)

    sent = [
        message_from_bytes(path.read_bytes(), policy=policy.default)
        for path in sorted(folder.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
    ]
    assert [str(m["Subject"]) for m in sent] == [
        "Welcome",
        "Your meeting is confirmed",
    ]
    assert "List-Unsubscribe" not in sent[1], "transactional mail has no opt-out link"
    with store.read("default") as scope:
        steps = {
            row.step_key: f"{row.status}_{row.error}" if row.error else row.status
            for row in scope.session.scalars(
                scope.select(SequenceStep).where(SequenceStep.lead_id == lead.id)
            )
        }
    assert steps == {"welcome": "sent"} | CASE["expected"]["skipped"]
    assert CASE["expected"]["errors_logged"] == 0
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_the_opt_out_reaches_hubspot_and_salesforce(
    store, tmp_path, campaign, settings, salesforce_settings, run_sync, sandbox_api
):
    lead, _ = walk_the_case(store, tmp_path, campaign)

    run_sync(settings)
    subscriptions = sandbox_api.get("/_sandbox/hubspot/subscriptions").json()
    assert [item["email"] for item in subscriptions] == [CASE["input"]["lead"]["email"]]

    with store.write("default") as scope:
        scope.get(Lead, lead.id).crm_sync_status = "pending"
        enqueue(scope, CRM_SYNC, scope.get(Lead, lead.id))
    run_sync(salesforce_settings)
    listed = sandbox_api.get("/_sandbox/salesforce/leads").json()
    (held,) = [row for row in listed if row["Email"] == CASE["input"]["lead"]["email"]]
    assert held["HasOptedOutOfEmail"] is True
