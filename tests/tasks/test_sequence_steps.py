"""Dispatching sequences on a real store into real `.eml` files, with time moved.

Almost every test runs on a `ManualClock`: delays and send windows are crossed
by moving it, never by sleeping (one runs a machine whose own clock is wrong).
The last ones run the task in a real flow run.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from prefect import flow, runtime
from sqlalchemy import select, text, update

from connectors.email.errors import (
    EmailDeliveryError,
    EmailRejectedError,
    EmailRenderError,
)
from connectors.email.file_outbox import FileOutbox
from connectors.email.templates import TemplateRenderer
from leads.clock import ManualClock, use_clock
from leads.edits import patch
from leads.email_events import EmailEventInput, apply_events
from leads.intake import submit
from leads.sequences import load_sequences
from leads.store.claims import claim
from leads.store.outbox import CRM_SYNC, SEQUENCE_ENROLMENT
from leads.store.sequence_plans import wake_changed
from leads.store.tables import Lead, OutboxItem, SequenceStep, TimelineEvent
from leads.suppression import blocked_reason, unsubscribe
from tasks.sequence_steps import (
    DispatchContext,
    DispatchSummary,
    dispatch_claims,
    send_sequence_steps,
)
from tests.skewed_clock import OffClock

CONFIG = Path(__file__).parents[2] / "config"
SENDER = "Automation Orchestrator <noreply@localhost>"
LEASE = timedelta(minutes=5)
# A Monday, 10:00 UTC: inside the test sequence's window (09:00-17:00 weekdays).
MONDAY = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)

THREE_STEPS = """
sequences:
  welcome_sequence:
    enrol: {channels: [api]}
    window: {hours: "09:00-17:00", days: weekdays}
    steps:
      - {id: welcome_1, template: welcome_1, subject: "Hi", window: anytime}
      - {id: welcome_2, template: welcome_2, subject: "Two", delay: 2d}
      - {id: welcome_3, template: welcome_3, subject: "Three", delay: 1w}
"""


class ProcessKilled(BaseException):
    """Stands in for the worker being killed: nothing below it runs, no handler."""


class FakeOutbox:
    """What every outbox has besides `send`: no connection to open per batch."""

    def session(self):
        return nullcontext()

    def delivered(self, message_id):
        return None


class KilledWhileSending(FakeOutbox):
    """An outbox whose process dies as the message is handed over."""

    def send(self, message):
        raise ProcessKilled


class KilledAfterWriting(FakeOutbox):
    """An outbox that writes the message, then its process dies."""

    def __init__(self, folder):
        self.files = FileOutbox(folder)

    def send(self, message):
        self.files.send(message)
        raise ProcessKilled

    def delivered(self, message_id):
        return self.files.delivered(message_id)


class Blind(FakeOutbox):
    """An outbox that cannot say whether a message arrived (like SMTP)."""

    def __init__(self, folder):
        self.files = FileOutbox(folder)

    def send(self, message):
        return self.files.send(message)


class Refusing(FakeOutbox):
    """An outbox whose relay answers every message with the same error."""

    def __init__(self, error):
        self.error = error
        self.tries = 0

    def send(self, message):
        self.tries += 1
        raise self.error


@pytest.fixture
def clock():
    with use_clock(ManualClock(MONDAY)) as manual:
        yield manual


@pytest.fixture
def folder(tmp_path) -> Path:
    return tmp_path / "outbox"


@pytest.fixture
def configure(tmp_path):
    """Loads sequences from YAML text; the shipped file without any."""

    def load(text: str | None = None):
        if text is None:
            return load_sequences(CONFIG / "sequences.yaml")
        path = tmp_path / "sequences.yaml"
        path.write_text(text, encoding="utf-8")
        return load_sequences(path)

    return load


@pytest.fixture
def context(configure, folder):
    """A dispatch context on the three-step test sequence; `replace` to vary it."""
    return DispatchContext(
        sequences=configure(THREE_STEPS),
        renderer=TemplateRenderer(CONFIG / "templates"),
        outbox=FileOutbox(folder),
        sender_address=SENDER,
        flow_run_id="run-1",
        unsubscribe_link=lambda tenant, lead: f"http://127.0.0.1:8000/u/{lead}",
    )


def with_(context: DispatchContext, **changes) -> DispatchContext:
    return DispatchContext(**{**context.__dict__, **changes})


def take(store, data, tenant="default", channel="api"):
    return submit(store, tenant, data, channel=channel, region="US").lead


def enrol(store, lead, sequence="welcome_sequence", tenant="default"):
    from leads.store import outbox

    with store.write(tenant) as scope:
        outbox.enrol(scope, scope.get(Lead, lead.id), sequence)


def run(store, context, owner="run-1", **options) -> DispatchSummary:
    """One dispatcher pass over everything due now by the installed clock."""
    limit = options.pop("limit", 500)
    claims = claim(
        store, SEQUENCE_ENROLMENT, owner, limit=limit, lease=LEASE, **options
    )
    return dispatch_claims(store, claims, context)


def messages(folder: Path):
    files = sorted(folder.glob("*.eml")) if folder.exists() else []
    return [message_from_bytes(f.read_bytes(), policy=policy.default) for f in files]


def subjects(folder: Path) -> list[str]:
    return [str(m["Subject"]) for m in messages(folder)]


def steps(store, lead, tenant="default") -> dict[str, SequenceStep]:
    with store.read(tenant) as scope:
        rows = scope.session.scalars(
            scope.select(SequenceStep).where(SequenceStep.lead_id == lead.id)
        )
        return {row.step_key: row for row in rows}


def events(store, lead, prefix="", tenant="default") -> list[TimelineEvent]:
    with store.read(tenant) as scope:
        return list(
            scope.session.scalars(
                scope.select(TimelineEvent)
                .where(
                    TimelineEvent.lead_id == lead.id,
                    TimelineEvent.kind.startswith(prefix),
                )
                .order_by(TimelineEvent.id)
            )
        )


def enrolment(store, lead, sequence="welcome_sequence") -> OutboxItem:
    with store.engine.connect() as connection:
        return connection.execute(
            select(OutboxItem).where(
                OutboxItem.key == f"{lead.id}:{sequence}",
                OutboxItem.topic == SEQUENCE_ENROLMENT,
            )
        ).one()


def edit(store, lead, fields, tenant="default"):
    """Changes the lead as `PATCH /api/leads/{id}` does."""
    with store.write(tenant) as scope:
        patch(scope, lead.id, fields, channel="api", region="US")


def change(store, lead, tenant="default", **values):
    """Sets columns directly, as reconciliation or an e-mail event would."""
    with store.write(tenant) as scope:
        found = scope.get(Lead, lead.id)
        for name, value in values.items():
            setattr(found, name, value)


class TestSchedule:
    def test_step_one_goes_at_once_and_later_steps_wait_for_their_delay(
        self, store, clock, context, folder
    ):
        lead = take(store, {"email": "Ada@Example.com", "first_name": "Ada"})

        assert run(store, context) == DispatchSummary(sent=1)
        assert subjects(folder) == ["Hi"]
        assert enrolment(store, lead).available_at == MONDAY + timedelta(days=2)

        clock.advance(days=1, hours=23)
        assert run(store, context) == DispatchSummary()
        clock.advance(hours=1)
        assert run(store, context) == DispatchSummary(sent=1)
        clock.advance(days=7)
        assert run(store, context) == DispatchSummary(sent=1)
        assert subjects(folder) == ["Hi", "Two", "Three"]
        assert enrolment(store, lead).status == "done"
        assert [s.status for s in steps(store, lead).values()] == ["sent"] * 3
        kinds = [e.kind for e in events(store, lead, "sequence.")]
        assert kinds == ["sequence.finished"]

    def test_a_step_due_outside_its_window_waits_for_the_next_opening(
        self, store, clock, context, folder
    ):
        # Thursday 20:00 in Berlin: step 2 (2 days later) is due on Saturday,
        # so it goes at the window's Monday opening, 09:00 Berlin = 08:00 UTC.
        clock.set(datetime(2026, 12, 10, 19, 0, tzinfo=UTC))
        lead = take(store, {"email": "a@example.com", "timezone": "Europe/Berlin"})
        run(store, context)

        monday_opening = datetime(2026, 12, 14, 8, 0, tzinfo=UTC)
        assert enrolment(store, lead).available_at == monday_opening
        clock.set(datetime(2026, 12, 12, 19, 0, tzinfo=UTC))
        assert run(store, context) == DispatchSummary()

        clock.set(monday_opening)
        assert run(store, context) == DispatchSummary(sent=1)
        assert steps(store, lead)["welcome_2"].sent_at == monday_opening

    def test_the_window_is_the_leads_local_time_found_from_its_country(
        self, store, clock, context, folder
    ):
        # Japan has one zone. Step 1 goes on Monday 21:00 in Tokyo; step 2 is
        # due Wednesday 21:00 there, after hours: it waits for Thursday 09:00
        # Tokyo, 00:00 UTC.
        clock.set(datetime(2026, 12, 7, 12, 0, tzinfo=UTC))
        lead = take(store, {"email": "a@example.jp", "country": "JP"})
        run(store, context)

        thursday_opening = datetime(2026, 12, 10, 0, 0, tzinfo=UTC)
        assert enrolment(store, lead).available_at == thursday_opening
        clock.set(thursday_opening - timedelta(minutes=1))
        assert run(store, context) == DispatchSummary()
        clock.set(thursday_opening)
        assert run(store, context) == DispatchSummary(sent=1)

    @pytest.mark.postgres
    def test_a_dispatcher_whose_clock_runs_behind_sends_what_its_claim_found_due(
        self, postgres_store, context, folder
    ):
        # Workers on several machines share a PostgreSQL store, whose clock
        # judges what is due. Were the step judged again by this machine's
        # clock, it would be handed back and claimed again at once, in a loop.
        store = postgres_store
        lead = take(store, {"email": f"behind.{time.time_ns()}@example.com"})
        # Due a second ago: the row's time is this process's, and a database
        # clock a hair behind it must not make the step not yet due.
        with store.engine.begin() as connection:
            connection.execute(
                update(OutboxItem)
                .where(OutboxItem.lead_id == lead.id)
                .values(
                    available_at=OutboxItem.available_at - text("interval '1 second'")
                )
            )

        with use_clock(OffClock(-timedelta(hours=1))):
            claims = [
                held
                for held in claim(
                    store, SEQUENCE_ENROLMENT, "behind", limit=500, lease=LEASE
                )
                if held.lead_id == lead.id
            ]
            summary = dispatch_claims(store, claims, context)

        assert summary == DispatchSummary(sent=1)
        assert subjects(folder) == ["Hi"]
        assert steps(store, lead)["welcome_1"].status == "sent"

    def test_missed_schedules_catch_up_once_the_dispatcher_runs_again(
        self, store, clock, context, folder
    ):
        leads = [take(store, {"email": f"p{n}@example.com"}) for n in range(5)]
        run(store, context)

        # Nothing ran for three weeks: every lead gets step 2 and, a run
        # later, step 3 (its delay from step 2 ran out long ago) — once each.
        clock.advance(days=21)
        first, second, third = (run(store, context) for _ in range(3))

        assert (first.sent, second.sent, third.sent) == (5, 0, 0)
        clock.advance(days=7)
        assert run(store, context).sent == 5
        assert Counter(subjects(folder)) == {"Hi": 5, "Two": 5, "Three": 5}
        assert all(enrolment(store, lead).status == "done" for lead in leads)

    def test_the_shipped_sequences_greet_at_once_and_follow_up_a_week_later(
        self, store, clock, configure, context, folder
    ):
        shipped = with_(context, sequences=configure())
        lead = take(store, {"email": "a@example.com", "first_name": "Ada"})
        change(store, lead, score=80)
        enrol(store, lead, "follow_up")

        run(store, shipped)

        assert subjects(folder) == ["Welcome, Ada!"]
        assert enrolment(store, lead, "follow_up").available_at.date() == (
            (MONDAY + timedelta(days=7)).date()
        )


class TestStopConditions:
    def test_an_unsubscribe_skips_every_later_step_without_an_error(
        self, store, clock, context, folder
    ):
        lead = take(store, {"email": "nia.cole@example.com", "first_name": "Nia"})
        run(store, context)
        clock.advance(days=1)
        with store.write("default") as scope:
            unsubscribe(scope, scope.get(Lead, lead.id), source="test")

        clock.advance(days=2)
        summary = run(store, context)

        assert summary == DispatchSummary(stopped=1)
        assert subjects(folder) == ["Hi"]
        found = steps(store, lead)
        assert {k: (s.status, s.error) for k, s in found.items()} == {
            "welcome_1": ("sent", None),
            "welcome_2": ("skipped", "unsubscribed"),
            "welcome_3": ("skipped", "unsubscribed"),
        }
        assert [e.kind for e in events(store, lead, "email.")].count(
            "email.failed"
        ) == 0
        (stopped,) = events(store, lead, "sequence.")
        assert stopped.detail == {
            "sequence": "welcome_sequence",
            "reason": "unsubscribed",
        }
        assert enrolment(store, lead).status == "done"

    @pytest.mark.parametrize(
        ("state", "reason"),
        [
            ({"crm_state": {"converted": True}}, "converted"),
            ({"crm_state": {"opted_out": True}}, "unsubscribed"),
            ({"email_state": {"bounced_at": "2026-12-08T10:00:00+00:00"}}, "bounced"),
            ({"status": "converted"}, "converted"),
        ],
    )
    def test_a_condition_met_after_step_one_stops_the_rest(
        self, store, clock, context, folder, state, reason
    ):
        lead = take(store, {"email": "a@example.com"})
        run(store, context)
        change(store, lead, **state)

        clock.advance(days=2)
        assert run(store, context) == DispatchSummary(stopped=1)
        assert steps(store, lead)["welcome_2"].error == reason

    def test_a_reply_stops_the_sequence_but_one_from_before_enrolment_does_not(
        self, store, clock, context, folder
    ):
        replied_before = take(store, {"email": "early@example.com"})
        change(
            store,
            replied_before,
            email_state={"replied_at": "2026-01-01T00:00:00+00:00"},
        )
        replies_now = take(store, {"email": "later@example.com"})
        run(store, context)
        change(store, replies_now, email_state={"replied_at": clock.now().isoformat()})

        clock.advance(days=2)
        summary = run(store, context)

        assert (summary.sent, summary.stopped) == (1, 1)
        assert steps(store, replies_now)["welcome_2"].error == "replied"
        assert steps(store, replied_before)["welcome_2"].status == "sent"

    def test_a_lifecycle_stage_moving_in_the_crm_stops_the_sequence(
        self, store, clock, context, folder
    ):
        lead = take(store, {"email": "a@example.com"})
        run(store, context)
        # The sync created the contact as a `lead`: that is the stage to watch.
        change(store, lead, crm_state={"lifecycle_stage": "lead"})
        clock.advance(days=2)
        assert run(store, context).sent == 1

        change(store, lead, crm_state={"lifecycle_stage": "opportunity"})
        clock.advance(days=7)

        assert run(store, context) == DispatchSummary(stopped=1)
        assert steps(store, lead)["welcome_3"].error == "lifecycle_stage_changed"

    def test_a_stage_move_between_two_looks_still_stops_the_sequence(
        self, store, clock, context, folder
    ):
        # Enrolled before the CRM had it; by the next look the stage had been
        # read as `lead` and moved on, as reconciliation notes.
        lead = take(store, {"email": "a@example.com"})
        run(store, context)
        moved_at = (clock.now() + timedelta(days=1)).isoformat()
        change(
            store,
            lead,
            crm_state={
                "lifecycle_stage": "salesqualifiedlead",
                "lifecycle_stage_changed_at": moved_at,
            },
        )

        clock.advance(days=2)

        assert run(store, context) == DispatchSummary(stopped=1)
        assert steps(store, lead)["welcome_2"].error == "lifecycle_stage_changed"

    def test_a_lead_field_condition_stops_the_sequence_naming_it(
        self, store, clock, configure, context, folder
    ):
        fielded = with_(
            context,
            sequences=configure(
                THREE_STEPS.replace(
                    "    enrol: {channels: [api]}\n",
                    "    enrol: {channels: [api]}\n"
                    "    stop_when: [{field: status, in: [qualified]}]\n",
                )
            ),
        )
        lead = take(store, {"email": "a@example.com"})
        run(store, fielded)
        change(store, lead, status="qualified")

        clock.advance(days=2)
        assert run(store, fielded) == DispatchSummary(stopped=1)
        (stopped,) = events(store, lead, "sequence.")
        assert stopped.detail["reason"] == "lead_field"
        assert stopped.detail["condition"] == "status in ['qualified']"

    def test_a_lead_whose_email_was_removed_is_stopped(
        self, store, clock, context, folder
    ):
        lead = take(store, {"email": "a@example.com", "phone": "+1 212 555 0100"})
        run(store, context)
        edit(store, lead, {"email": None})

        # New York by its phone: 09:00 there is 14:00 UTC.
        clock.advance(days=2, hours=4)
        summary = run(store, context)
        assert summary == DispatchSummary(stopped=1), summary
        assert steps(store, lead)["welcome_2"].error == "missing_email"


class TestProviderEvents:
    def test_a_bounce_of_an_address_the_lead_has_left_spares_its_new_one(
        self, store, clock, context, folder
    ):
        lead = take(store, {"email": "old@example.com"})
        run(store, context)
        (sent,) = messages(folder)
        edit(store, lead, {"email": "new@example.com"})

        apply_events(
            store,
            "default",
            [
                EmailEventInput(
                    id="ev-1",
                    type="bounced",
                    bounce_type="hard",
                    occurred_at=clock.now(),
                    message_id=str(sent["Message-ID"]),
                )
            ],
        )

        with store.read("default") as scope:
            assert "bounced_at" not in scope.get(Lead, lead.id).email_state
            for address, blocked in (
                ("old@example.com", "bounced"),
                ("new@example.com", None),
            ):
                reason = blocked_reason(
                    scope, lead=None, address=address, category="transactional"
                )
                assert reason == blocked, address


class TestEditingASequence:
    def test_reordering_and_inserting_steps_never_resends_one(
        self, store, clock, configure, context, folder
    ):
        lead = take(store, {"email": "a@example.com"})
        run(store, context)
        clock.advance(days=2)
        run(store, context)
        assert subjects(folder) == ["Hi", "Two"]

        edited = with_(
            context,
            sequences=configure(
                """
sequences:
  welcome_sequence:
    steps:
      - {id: welcome_0, template: welcome_3, subject: "Inserted first"}
      - {id: welcome_2, template: welcome_2, subject: "Two again"}
      - {id: welcome_1, template: welcome_1, subject: "Hi again"}
      - {id: welcome_3, template: welcome_3, subject: "Three", delay: 1d}
"""
            ),
        )
        wake_changed(store, context.sequences)
        assert wake_changed(store, edited.sequences) == {"welcome_sequence": 1}
        clock.advance(days=1)
        run(store, edited)
        clock.advance(days=1)
        run(store, edited)

        assert subjects(folder) == ["Hi", "Two", "Three"]
        found = {
            key: (row.status, row.error) for key, row in steps(store, lead).items()
        }
        assert found == {
            "welcome_0": ("skipped", "behind_the_lead"),
            "welcome_1": ("sent", None),
            "welcome_2": ("sent", None),
            "welcome_3": ("sent", None),
        }

    def test_a_step_moved_behind_the_lead_is_recorded_skipped_not_lost(
        self, store, clock, configure, context, folder
    ):
        lead = take(store, {"email": "a@example.com"})
        run(store, context)
        clock.advance(days=2)
        run(store, context)
        # welcome_3, not yet sent, is moved before welcome_2, already sent.
        moved = with_(
            context,
            sequences=configure(
                """
sequences:
  welcome_sequence:
    steps:
      - {id: welcome_1, template: welcome_1, subject: Hi}
      - {id: welcome_3, template: welcome_3, subject: Three}
      - {id: welcome_2, template: welcome_2, subject: Two}
"""
            ),
        )
        wake_changed(store, context.sequences)
        wake_changed(store, moved.sequences)

        run(store, moved)

        assert subjects(folder) == ["Hi", "Two"]
        assert steps(store, lead)["welcome_3"].error == "behind_the_lead"
        assert enrolment(store, lead).status == "done"

    def test_a_changed_delay_applies_to_steps_not_yet_sent(
        self, store, clock, configure, context, folder
    ):
        lead = take(store, {"email": "a@example.com"})
        run(store, context)
        quicker = with_(
            context,
            sequences=configure(THREE_STEPS.replace("delay: 2d", "delay: 1h")),
        )

        wake_changed(store, context.sequences)

        clock.advance(hours=1, minutes=1)
        assert run(store, quicker) == DispatchSummary()  # asleep until day 2
        assert wake_changed(store, quicker.sequences) == {"welcome_sequence": 1}
        assert wake_changed(store, quicker.sequences) == {}
        assert run(store, quicker) == DispatchSummary(sent=1)
        assert enrolment(store, lead).available_at == clock.now() + timedelta(weeks=1)


class TestAtMostOnce:
    def test_two_dispatchers_at_once_with_a_catch_up_send_each_step_once(
        self, store, clock, context, folder
    ):
        for n in range(40):
            take(store, {"email": f"p{n}@example.com"})
        start = threading.Barrier(2)

        def dispatcher(owner: str) -> Counter[str]:
            start.wait()
            totals: Counter[str] = Counter()
            for _ in range(3):
                totals.update(run(store, context, owner=owner, limit=7).as_counts())
            return totals

        def both() -> None:
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(dispatcher, ["run-a", "run-b"]))

        both()
        clock.advance(hours=1)  # an outage; then both catch up at once
        clock.advance(days=2)
        both()

        sent = Counter(str(m["To"]) + "|" + str(m["Subject"]) for m in messages(folder))
        assert len(sent) == 80
        assert set(sent.values()) == {1}

    def test_a_worker_killed_mid_send_leaves_the_step_unknown_and_goes_on(
        self, store, clock, context, folder
    ):
        lead = take(store, {"email": "a@example.com"})
        with pytest.raises(ProcessKilled):
            run(store, with_(context, outbox=KilledWhileSending()))

        clock.advance(minutes=6)  # the dead run's lease runs out
        blind = with_(context, outbox=Blind(folder))
        assert run(store, blind) == DispatchSummary(unknown=1)
        assert steps(store, lead)["welcome_1"].status == "unknown"
        assert messages(folder) == []

        clock.advance(days=2)
        assert run(store, blind) == DispatchSummary(sent=1)
        assert subjects(folder) == ["Two"]

    def test_a_crash_after_the_file_was_written_is_recorded_sent_not_resent(
        self, store, clock, context, folder
    ):
        lead = take(store, {"email": "a@example.com"})
        with pytest.raises(ProcessKilled):
            run(store, with_(context, outbox=KilledAfterWriting(folder)))

        clock.advance(minutes=6)
        assert run(store, context) == DispatchSummary(sent=1)
        assert subjects(folder) == ["Hi"]
        assert steps(store, lead)["welcome_1"].status == "sent"

    def test_a_step_whose_message_never_arrived_is_unknown_not_sent_again(
        self, store, clock, context, folder
    ):
        # Its sender may be dead or only slow: a missing file proves nothing.
        lead = take(store, {"email": "a@example.com"})
        with pytest.raises(ProcessKilled):
            run(store, with_(context, outbox=KilledWhileSending()))

        clock.advance(minutes=6)
        assert run(store, context) == DispatchSummary(unknown=1)
        assert messages(folder) == []
        assert steps(store, lead)["welcome_1"].status == "unknown"

    def test_a_slow_sender_whose_lease_is_taken_over_sends_once(
        self, store, clock, context, folder
    ):
        lead = take(store, {"email": "a@example.com"})
        files = FileOutbox(folder)
        taken_over: list[DispatchSummary] = []

        class Slow(FakeOutbox):
            """Stalls past its lease; another dispatcher runs meanwhile."""

            def send(self, message):
                clock.advance(minutes=6)
                taken_over.append(run(store, context, owner="run-2"))
                return files.send(message)

            def delivered(self, message_id):
                return files.delivered(message_id)

        first = run(store, with_(context, outbox=Slow()))

        assert taken_over == [DispatchSummary(unknown=1)]
        assert first == DispatchSummary(sent=1)
        assert subjects(folder) == ["Hi"]
        # The slow sender finished: the step it sent is recorded sent.
        assert steps(store, lead)["welcome_1"].status == "sent"


class TestFailures:
    def test_a_relay_that_is_down_requeues_for_a_minute_later(
        self, store, clock, context, folder
    ):
        lead = take(store, {"email": "a@example.com"})
        down = Refusing(EmailDeliveryError("connection refused"))

        assert run(store, with_(context, outbox=down)) == DispatchSummary(requeued=1)
        row = enrolment(store, lead)
        assert (row.status, row.available_at) == (
            "pending",
            MONDAY + timedelta(minutes=1),
        )
        assert steps(store, lead)["welcome_1"].status == "pending"

        clock.advance(minutes=1)
        assert run(store, context) == DispatchSummary(sent=1)

    def test_a_mailbox_that_does_not_exist_fails_the_step_and_suppresses_it(
        self, store, clock, context, folder
    ):
        lead = take(store, {"email": "gone@example.com"})
        refused = Refusing(
            EmailRejectedError("550 no such user", code=550, bounce=True)
        )

        assert run(store, with_(context, outbox=refused)) == DispatchSummary(bounced=1)
        assert steps(store, lead)["welcome_1"].status == "failed"
        assert enrolment(store, lead).status == "parked"
        other = take(store, {"email": "someone@example.com"})
        enrol(store, other)
        with store.read("default") as scope:
            from leads.suppression import blocked_reason

            reason = blocked_reason(
                scope, lead=None, address="gone@example.com", category="transactional"
            )
        assert reason == "bounced"

    def test_a_template_failing_for_one_lead_parks_only_that_lead(
        self, store, clock, configure, context, folder, tmp_path
    ):
        templates = tmp_path / "templates"
        templates.mkdir()
        for stem in ("welcome_1",):
            (templates / f"{stem}.txt.j2").write_text("{{ 100 // lead.custom.n }}")
            (templates / f"{stem}.html.j2").write_text("<p>hi</p>")
        broken = with_(
            context,
            renderer=TemplateRenderer(templates),
            sequences=configure(
                """
sequences:
  welcome_sequence:
    enrol: {channels: [api]}
    steps: [{id: welcome_1, template: welcome_1, subject: Hi}]
"""
            ),
        )
        good = take(store, {"email": "a@example.com", "custom": {"n": 4}})
        bad = take(store, {"email": "b@example.com", "custom": {"n": 0}})

        assert run(store, broken) == DispatchSummary(sent=1, failed=1)
        assert steps(store, good)["welcome_1"].status == "sent"
        assert steps(store, bad)["welcome_1"].status == "failed"
        assert "ZeroDivisionError" in steps(store, bad)["welcome_1"].error
        assert enrolment(store, bad).status == "parked"

    def test_a_sequence_with_a_broken_template_holds_only_its_own_leads(
        self, store, clock, configure, context, folder
    ):
        mixed = with_(
            context,
            sequences=configure(
                THREE_STEPS
                + """
  follow_up:
    steps: [{id: f1, template: folow_up_1, subject: Typo}]
"""
            ),
        )
        typo = take(store, {"email": "a@example.com"})
        enrol(store, typo, "follow_up")
        take(store, {"email": "b@example.com"})

        summary = run(store, mixed)

        assert (summary.sent, summary.held) == (2, 1)
        row = enrolment(store, typo, "follow_up")
        assert (row.status, row.available_at) == (
            "pending",
            MONDAY + timedelta(minutes=10),
        )
        assert "folow_up_1" in row.last_error

    def test_a_sequence_gone_from_the_file_waits_and_goes_on_when_back(
        self, store, clock, configure, context, folder
    ):
        lead = take(store, {"email": "a@example.com"})
        run(store, context)
        clock.advance(days=2)
        without = with_(context, sequences={})

        assert run(store, without) == DispatchSummary(held=1)
        row = enrolment(store, lead)
        assert row.status == "pending"
        assert "not in the sequences file" in row.last_error

        clock.advance(minutes=10)
        assert run(store, context) == DispatchSummary(sent=1)
        assert subjects(folder) == ["Hi", "Two"]

    def test_an_unusable_unsubscribe_link_raises_before_any_claim_is_touched(
        self, store, clock, context
    ):
        lead = take(store, {"email": "a@example.com"})
        broken = with_(context, unsubscribe_link=lambda tenant, lead: "mail.example")

        with pytest.raises(EmailRenderError, match="ORCH_PUBLIC_BASE_URL"):
            run(store, broken)

        assert steps(store, lead) == {}


class TestEnrolmentRules:
    RULES = """
sequences:
  welcome_sequence:
    enrol: {channels: [api, webhook]}
    steps: [{id: welcome_1, template: welcome_1, subject: Hi}]
  vip:
    enrol: {min_score: 60, sources: [website]}
    steps: [{id: welcome_2, template: welcome_2, subject: VIP}]
"""

    @pytest.fixture
    def rules(self, configure, monkeypatch):
        from leads import rulebook

        sequences = configure(self.RULES)
        monkeypatch.setattr(rulebook, "sequences", lambda: sequences)

    def enrolled(self, store, lead) -> set[str]:
        with store.engine.connect() as connection:
            keys = connection.scalars(
                select(OutboxItem.key).where(
                    OutboxItem.lead_id == lead.id,
                    OutboxItem.topic == SEQUENCE_ENROLMENT,
                )
            )
            return {key.split(":", 1)[1] for key in keys}

    def test_rules_choose_by_channel_score_and_source(self, store, clock, rules):
        plain = take(store, {"email": "a@example.com"})
        imported = take(store, {"email": "b@example.com"}, channel="import")
        phone_only = take(store, {"phone": "+1 212 555 0100"})

        assert self.enrolled(store, plain) == {"welcome_sequence"}
        assert self.enrolled(store, imported) == set()
        assert self.enrolled(store, phone_only) == set()

    def test_a_lead_that_later_qualifies_is_enrolled_then(self, store, clock, rules):
        lead = take(store, {"phone": "+1 212 555 0100", "source": "website"})
        edit(store, lead, {"email": "a@example.com"})

        assert self.enrolled(store, lead) == {"welcome_sequence"}
        with store.read("default") as scope:
            crm_rows = scope.session.scalars(
                scope.select(OutboxItem).where(OutboxItem.topic == CRM_SYNC)
            ).all()
        assert len(crm_rows) == 1


@pytest.mark.slow
class TestInAFlowRun:
    def test_a_bounce_found_while_sending_is_recorded_with_the_flow_run(
        self, store, clock, context, on_prefect
    ):
        lead = take(store, {"email": "gone@example.com"})
        refused = Refusing(
            EmailRejectedError("550 no such user", code=550, bounce=True)
        )

        @flow(name="send-steps-in-a-test")
        def send_once() -> dict[str, int]:
            run_id = str(runtime.flow_run.id)
            claims = claim(store, SEQUENCE_ENROLMENT, run_id, limit=10, lease=LEASE)
            return send_sequence_steps(
                claims,
                store=store,
                context=with_(context, outbox=refused, flow_run_id=run_id),
            )

        state = send_once(return_state=True)

        assert state.result()["bounced"] == 1
        run_id = str(state.state_details.flow_run_id)
        # `email.bounced` comes from the suppression list, which is told no
        # run: the task's own is what it records.
        assert [(e.kind, e.flow_run_id) for e in events(store, lead, "email.")] == [
            ("email.failed", run_id),
            ("email.bounced", run_id),
        ]
