"""Dispatching enrolments on a real store into real `.eml` files, at most once each."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import select

from connectors.email.errors import EmailRenderError
from connectors.email.file_outbox import FileOutbox
from connectors.email.templates import TemplateRenderer
from leads.edits import patch
from leads.intake import submit
from leads.sequences import Sequence, Step, load_sequences
from leads.store.claims import claim
from leads.store.outbox import CRM_SYNC, SEQUENCE_ENROLMENT
from leads.store.tables import OutboxItem, SequenceStep, TimelineEvent
from tasks.sequence_steps import DispatchSummary, dispatch_claims

CONFIG = Path(__file__).parents[2] / "config"
SENDER = "Automation Orchestrator <noreply@localhost>"
LEASE = timedelta(minutes=5)


class ProcessKilled(BaseException):
    """Stands in for the worker being killed: nothing below it runs, no handler."""


class KilledWhileSending:
    """An outbox whose process dies as the message is handed over."""

    def send(self, message):
        raise ProcessKilled


class KilledAfterWriting:
    """An outbox that writes the message, then its process dies."""

    def __init__(self, folder):
        self.files = FileOutbox(folder)

    def send(self, message):
        self.files.send(message)
        raise ProcessKilled


class Blind:
    """An outbox that cannot say whether a message arrived (like SMTP)."""

    def __init__(self, folder):
        self.files = FileOutbox(folder)

    def send(self, message):
        return self.files.send(message)


@pytest.fixture
def sequences():
    return load_sequences(CONFIG / "sequences.yaml")


@pytest.fixture
def renderer():
    return TemplateRenderer(CONFIG / "templates")


@pytest.fixture
def folder(tmp_path) -> Path:
    return tmp_path / "outbox"


def take(store, data, tenant="default"):
    return submit(store, tenant, data, channel="api", region="US").lead


def later(seconds: float = 0) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=1 + seconds)


def claim_enrolments(store, owner="run-1", now=None, **options):
    return claim(
        store,
        SEQUENCE_ENROLMENT,
        owner,
        limit=options.pop("limit", 100),
        lease=options.pop("lease", LEASE),
        now=now or later(),
        **options,
    )


def eml_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.eml")) if folder.exists() else []


def enrolment_row(store, lead) -> OutboxItem:
    with store.engine.connect() as connection:
        return connection.execute(
            select(OutboxItem).where(
                OutboxItem.lead_id == lead.id,
                OutboxItem.topic == SEQUENCE_ENROLMENT,
            )
        ).one()


def steps_of(store, lead) -> list[SequenceStep]:
    with store.read("default") as scope:
        return list(
            scope.session.scalars(
                scope.select(SequenceStep).where(SequenceStep.lead_id == lead.id)
            )
        )


def email_events(store, lead) -> list[TimelineEvent]:
    with store.read("default") as scope:
        return list(
            scope.session.scalars(
                scope.select(TimelineEvent)
                .where(
                    TimelineEvent.lead_id == lead.id,
                    TimelineEvent.kind.startswith("email."),
                )
                .order_by(TimelineEvent.id)
            )
        )


class TestSending:
    def test_a_new_lead_gets_exactly_one_welcome_email(
        self, store, sequences, renderer, folder
    ):
        lead = take(store, {"email": "Ada@Example.com", "first_name": "Ada"})
        run = str(uuid.uuid4())

        summary = dispatch_claims(
            store,
            claim_enrolments(store),
            sequences=sequences,
            renderer=renderer,
            outbox=FileOutbox(folder),
            sender_address=SENDER,
            flow_run_id=run,
        )

        assert summary == DispatchSummary(sent=1)
        (written,) = eml_files(folder)
        message = message_from_bytes(written.read_bytes(), policy=policy.default)
        assert message["To"] == "Ada@example.com"
        assert message["Subject"] == "Welcome, Ada!"
        assert "Hello Ada," in message.get_body(("plain",)).get_content()
        (event,) = email_events(store, lead)
        assert (event.kind, event.flow_run_id) == ("email.sent", run)
        assert event.detail == {
            "sequence": "welcome_sequence",
            "step": 1,
            "template": "welcome_1",
            "message_id": message["Message-ID"],
        }
        (step,) = steps_of(store, lead)
        assert (step.status, step.message_id, step.flow_run_id) == (
            "sent",
            message["Message-ID"],
            run,
        )
        assert enrolment_row(store, lead).status == "done"

    def test_a_second_run_finds_nothing_left_to_send(
        self, store, sequences, renderer, folder
    ):
        take(store, {"email": "a@example.com"})
        options = dict(
            sequences=sequences,
            renderer=renderer,
            outbox=FileOutbox(folder),
            sender_address=SENDER,
            flow_run_id=None,
        )
        dispatch_claims(store, claim_enrolments(store), **options)

        again = dispatch_claims(store, claim_enrolments(store, "run-2"), **options)

        assert again == DispatchSummary()
        assert len(eml_files(folder)) == 1

    def test_a_requeued_enrolment_whose_step_was_sent_is_not_sent_again(
        self, store, sequences, renderer, folder
    ):
        lead = take(store, {"email": "a@example.com"})
        options = dict(
            sequences=sequences,
            renderer=renderer,
            outbox=FileOutbox(folder),
            sender_address=SENDER,
            flow_run_id=None,
        )
        dispatch_claims(store, claim_enrolments(store), **options)
        with store.write("default") as scope:
            row = scope.session.scalars(
                scope.select(OutboxItem).where(OutboxItem.topic == SEQUENCE_ENROLMENT)
            ).one()
            row.status = "pending"

        again = dispatch_claims(store, claim_enrolments(store, "run-2"), **options)

        assert again == DispatchSummary(settled=1)
        assert len(eml_files(folder)) == 1
        assert enrolment_row(store, lead).status == "done"

    def test_leads_of_several_tenants_each_get_their_email(
        self, store, sequences, renderer, folder
    ):
        take(store, {"email": "a@example.com"}, tenant="acme")
        take(store, {"email": "b@example.com"}, tenant="globex")

        summary = dispatch_claims(
            store,
            claim_enrolments(store),
            sequences=sequences,
            renderer=renderer,
            outbox=FileOutbox(folder),
            sender_address=SENDER,
            flow_run_id=None,
        )

        assert summary.sent == 2
        recipients = {
            message_from_bytes(f.read_bytes(), policy=policy.default)["To"]
            for f in eml_files(folder)
        }
        assert recipients == {"a@example.com", "b@example.com"}


class TestSkipping:
    def test_a_lead_that_lost_its_email_is_skipped(
        self, store, sequences, renderer, folder
    ):
        lead = take(store, {"email": "a@example.com", "phone": "+14155550100"})
        with store.write("default") as scope:
            patch(scope, lead.id, {"email": None}, channel="api", region="US")

        summary = dispatch_claims(
            store,
            claim_enrolments(store),
            sequences=sequences,
            renderer=renderer,
            outbox=FileOutbox(folder),
            sender_address=SENDER,
            flow_run_id="run-1",
        )

        assert summary == DispatchSummary(skipped=1)
        assert eml_files(folder) == []
        (step,) = steps_of(store, lead)
        assert (step.status, step.error) == ("skipped", "missing_email")
        (event,) = email_events(store, lead)
        assert (event.kind, event.detail["reason"]) == (
            "email.skipped",
            "missing_email",
        )
        assert enrolment_row(store, lead).status == "done"

    def test_an_unsubscribed_lead_is_skipped(self, store, sequences, renderer, folder):
        lead = take(store, {"email": "a@example.com", "status": "unsubscribed"})

        summary = dispatch_claims(
            store,
            claim_enrolments(store),
            sequences=sequences,
            renderer=renderer,
            outbox=FileOutbox(folder),
            sender_address=SENDER,
            flow_run_id=None,
        )

        assert summary == DispatchSummary(skipped=1)
        assert eml_files(folder) == []
        assert steps_of(store, lead)[0].error == "unsubscribed"


class TestFailures:
    def crash_then_rerun(self, store, sequences, renderer, dying, next_outbox):
        now = later()
        with pytest.raises(ProcessKilled):
            dispatch_claims(
                store,
                claim_enrolments(store, "dead-run", now=now),
                sequences=sequences,
                renderer=renderer,
                outbox=dying,
                sender_address=SENDER,
                flow_run_id="dead-run",
                now=now,
            )
        after_expiry = now + LEASE + timedelta(seconds=1)
        held = claim_enrolments(store, "run-2", now=after_expiry)
        assert [c.attempts for c in held] == [2]
        return dispatch_claims(
            store,
            held,
            sequences=sequences,
            renderer=renderer,
            outbox=next_outbox,
            sender_address=SENDER,
            flow_run_id="run-2",
            now=after_expiry,
        )

    def test_a_crash_before_the_message_was_written_is_sent_by_the_next_run(
        self, store, sequences, renderer, folder
    ):
        lead = take(store, {"email": "a@example.com"})

        summary = self.crash_then_rerun(
            store, sequences, renderer, KilledWhileSending(), FileOutbox(folder)
        )

        assert summary == DispatchSummary(sent=1)
        assert len(eml_files(folder)) == 1
        (step,) = steps_of(store, lead)
        assert (step.status, step.flow_run_id) == ("sent", "run-2")
        assert [e.kind for e in email_events(store, lead)] == ["email.sent"]
        assert enrolment_row(store, lead).status == "done"

    def test_a_crash_after_the_message_was_written_is_recorded_not_resent(
        self, store, sequences, renderer, folder
    ):
        lead = take(store, {"email": "a@example.com"})

        summary = self.crash_then_rerun(
            store, sequences, renderer, KilledAfterWriting(folder), FileOutbox(folder)
        )

        assert summary == DispatchSummary(sent=1)
        assert len(eml_files(folder)) == 1
        (step,) = steps_of(store, lead)
        assert step.status == "sent"
        (event,) = email_events(store, lead)
        assert (event.kind, event.flow_run_id) == ("email.sent", "run-2")

    def test_where_the_outbox_cannot_tell_the_step_is_parked_unknown(
        self, store, sequences, renderer, folder
    ):
        lead = take(store, {"email": "a@example.com"})

        summary = self.crash_then_rerun(
            store, sequences, renderer, KilledWhileSending(), Blind(folder)
        )

        assert summary == DispatchSummary(unknown=1)
        assert eml_files(folder) == []
        (step,) = steps_of(store, lead)
        assert (step.status, step.flow_run_id) == ("unknown", "dead-run")
        (event,) = email_events(store, lead)
        assert (event.kind, event.flow_run_id) == ("email.unknown", "run-2")
        assert enrolment_row(store, lead).status == "done"

    def test_an_outbox_that_cannot_write_requeues_the_claim_for_a_minute_later(
        self, store, sequences, renderer, tmp_path
    ):
        lead = take(store, {"email": "a@example.com"})
        blocked = tmp_path / "outbox"
        blocked.write_text("a file where the folder should be")
        now = later()

        summary = dispatch_claims(
            store,
            claim_enrolments(store, now=now),
            sequences=sequences,
            renderer=renderer,
            outbox=FileOutbox(blocked),
            sender_address=SENDER,
            flow_run_id=None,
            now=now,
        )

        assert summary == DispatchSummary(requeued=1)
        (step,) = steps_of(store, lead)
        assert step.status == "pending"
        assert "could not write" in step.error
        row = enrolment_row(store, lead)
        assert (row.status, row.available_at) == ("pending", now + timedelta(minutes=1))
        assert "could not write" in row.last_error

        retry_at = now + timedelta(minutes=1)
        folder = tmp_path / "fixed"
        retried = dispatch_claims(
            store,
            claim_enrolments(store, "run-2", now=retry_at),
            sequences=sequences,
            renderer=renderer,
            outbox=FileOutbox(folder),
            sender_address=SENDER,
            flow_run_id=None,
            now=retry_at,
        )
        assert retried == DispatchSummary(sent=1)
        assert len(eml_files(folder)) == 1

    def test_a_template_failing_for_a_lead_fails_the_step_and_parks_the_claim(
        self, store, tmp_path, folder
    ):
        templates = tmp_path / "templates"
        templates.mkdir()
        (templates / "plan.txt.j2").write_text("Plan: {{ lead.custom.plan }}\n")
        (templates / "plan.html.j2").write_text("<p>{{ lead.custom.plan }}</p>\n")
        with_plan = take(store, {"email": "a@example.com", "plan": "Pro"})
        without = take(store, {"email": "b@example.com"})
        sequences = {
            "welcome_sequence": Sequence(steps=(Step(template="plan", subject="Hi"),))
        }

        summary = dispatch_claims(
            store,
            claim_enrolments(store),
            sequences=sequences,
            renderer=TemplateRenderer(templates),
            outbox=FileOutbox(folder),
            sender_address=SENDER,
            flow_run_id=None,
        )

        assert summary == DispatchSummary(sent=1, failed=1)
        assert len(eml_files(folder)) == 1
        assert steps_of(store, with_plan)[0].status == "sent"
        (step,) = steps_of(store, without)
        assert step.status == "failed"
        assert "plan" in step.error
        row = enrolment_row(store, without)
        assert (row.status, row.last_error) == ("parked", step.error)
        assert email_events(store, without)[0].kind == "email.failed"

    def test_an_unknown_sequence_parks_the_claim(self, store, renderer, folder):
        lead = take(store, {"email": "a@example.com"})

        summary = dispatch_claims(
            store,
            claim_enrolments(store),
            sequences={},
            renderer=renderer,
            outbox=FileOutbox(folder),
            sender_address=SENDER,
            flow_run_id=None,
        )

        assert summary == DispatchSummary(failed=1)
        row = enrolment_row(store, lead)
        assert row.status == "parked"
        assert "welcome_sequence" in row.last_error


class TestBrokenConfiguration:
    def test_a_bad_sender_address_raises_before_any_claim_is_touched(
        self, store, sequences, renderer, folder
    ):
        lead = take(store, {"email": "a@example.com"})

        with pytest.raises(EmailRenderError, match="ORCH_EMAIL_FROM"):
            dispatch_claims(
                store,
                claim_enrolments(store),
                sequences=sequences,
                renderer=renderer,
                outbox=FileOutbox(folder),
                sender_address="nobody",
                flow_run_id=None,
            )

        assert enrolment_row(store, lead).status == "claimed"
        assert steps_of(store, lead) == []

    def test_a_missing_template_raises_before_any_claim_is_touched(
        self, store, sequences, tmp_path, folder
    ):
        lead = take(store, {"email": "a@example.com"})

        with pytest.raises(EmailRenderError, match="welcome_1.txt.j2"):
            dispatch_claims(
                store,
                claim_enrolments(store),
                sequences=sequences,
                renderer=TemplateRenderer(tmp_path / "empty"),
                outbox=FileOutbox(folder),
                sender_address=SENDER,
                flow_run_id=None,
            )

        assert enrolment_row(store, lead).status == "claimed"
        assert steps_of(store, lead) == []

    def test_claims_of_another_topic_are_refused(
        self, store, sequences, renderer, folder
    ):
        take(store, {"email": "a@example.com"})
        crm = claim(store, CRM_SYNC, "run-1", limit=1, lease=LEASE, now=later())

        with pytest.raises(ValueError, match="crm_sync"):
            dispatch_claims(
                store,
                crm,
                sequences=sequences,
                renderer=renderer,
                outbox=FileOutbox(folder),
                sender_address=SENDER,
                flow_run_id=None,
            )


class TestOverlappingRuns:
    def test_two_dispatchers_claiming_at_once_send_each_lead_one_email(
        self, store, sequences, renderer, folder
    ):
        leads = [take(store, {"email": f"lead{n}@example.com"}) for n in range(30)]
        now = later()
        start = threading.Barrier(2)

        def run(owner: str) -> Counter[str]:
            totals: Counter[str] = Counter()
            start.wait()
            while held := claim_enrolments(store, owner, now=now, limit=5):
                summary = dispatch_claims(
                    store,
                    held,
                    sequences=sequences,
                    renderer=renderer,
                    outbox=FileOutbox(folder),
                    sender_address=SENDER,
                    flow_run_id=owner,
                    now=now,
                )
                totals.update(summary.as_counts())
            return totals

        with ThreadPoolExecutor(2) as pool:
            totals = sum(pool.map(run, ["run-a", "run-b"]), Counter())

        assert totals == Counter(sent=30)
        assert len(eml_files(folder)) == 30
        for lead in leads:
            assert [e.kind for e in email_events(store, lead)] == ["email.sent"]

    def test_runs_holding_the_same_rows_after_a_lease_expiry_send_once(
        self, store, sequences, renderer, folder
    ):
        leads = [take(store, {"email": f"lead{n}@example.com"}) for n in range(30)]
        now = later()
        slow = claim_enrolments(store, "slow-run", now=now, lease=timedelta(seconds=1))
        taken_over = claim_enrolments(store, "next-run", now=now + timedelta(seconds=2))
        assert [c.id for c in slow] == [c.id for c in taken_over]
        start = threading.Barrier(2)

        def run(held) -> DispatchSummary:
            start.wait()
            return dispatch_claims(
                store,
                held,
                sequences=sequences,
                renderer=renderer,
                outbox=FileOutbox(folder),
                sender_address=SENDER,
                flow_run_id=held[0].lease_owner,
                now=now + timedelta(seconds=3),
            )

        with ThreadPoolExecutor(2) as pool:
            summaries = list(pool.map(run, [slow, taken_over]))

        # The run whose lease was taken over starts no send at all.
        assert (summaries[0].sent, summaries[0].contended) == (0, 30)
        assert summaries[1].sent == 30
        assert len(eml_files(folder)) == 30
        for lead in leads:
            kinds = [e.kind for e in email_events(store, lead)]
            assert "email.unknown" not in kinds
        message_ids = set()
        for lead in leads:
            (step,) = steps_of(store, lead)
            assert step.status == "sent"
            sent = [e for e in email_events(store, lead) if e.kind == "email.sent"]
            assert len(sent) == 1
            message_ids.add(sent[0].detail["message_id"])
        assert len(message_ids) == 30

        sweep_at = now + timedelta(hours=1)
        swept = dispatch_claims(
            store,
            claim_enrolments(store, "sweep", now=sweep_at),
            sequences=sequences,
            renderer=renderer,
            outbox=FileOutbox(folder),
            sender_address=SENDER,
            flow_run_id="sweep",
            now=sweep_at,
        )
        assert swept.sent == 0
        assert len(eml_files(folder)) == 30
        assert {enrolment_row(store, lead).status for lead in leads} == {"done"}
