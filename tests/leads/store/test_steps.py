"""Sequence steps on a real store: created once, moved by conditional updates only."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, select

from leads.intake import submit
from leads.store.database import create_store_engine
from leads.store.schema import MIGRATIONS, upgrade
from leads.store.steps import (
    StepStatus,
    begin_sending,
    ensure_step,
    mark_failed,
    mark_sent,
    mark_skipped,
    park_unknown,
    revert_to_pending,
)
from leads.store.tables import SequenceStep, TimelineEvent

DUE = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
RUN = "6f1c1a52-3c1e-4f0e-9a51-3b1d2c9e7a10"


def new_lead(store, email="a@example.com", tenant="default"):
    return submit(store, tenant, {"email": email}, channel="api", region="US").lead


def new_step(store, lead, tenant="default") -> int:
    with store.write(tenant) as scope:
        return ensure_step(
            scope,
            lead.id,
            "welcome_sequence",
            "welcome_1",
            position=1,
            template="welcome_1",
            due_at=DUE,
        ).id


def moved(store, tenant, move, *args, **options):
    """Runs one step move in its own write transaction, as a dispatcher would."""
    with store.write(tenant) as scope:
        return move(scope, *args, **options)


def step(store, step_id) -> SequenceStep:
    with store.read("default") as scope:
        found = scope.get(SequenceStep, step_id)
        assert found is not None
        return found


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


class TestEnsureStep:
    def test_creates_a_pending_step_once(self, store):
        lead = new_lead(store)

        first = new_step(store, lead)
        again = new_step(store, lead)

        assert first == again
        created = step(store, first)
        assert (created.status, created.step, created.due_at) == ("pending", 1, DUE)
        assert created.sequence == "welcome_sequence"

    def test_concurrent_callers_share_one_row(self, store):
        lead = new_lead(store)
        start = threading.Barrier(6)

        def ensure(_: int) -> int:
            start.wait()
            return new_step(store, lead)

        with ThreadPoolExecutor(6) as pool:
            ids = set(pool.map(ensure, range(6)))

        assert len(ids) == 1
        with store.engine.connect() as connection:
            rows = connection.scalars(select(SequenceStep.id)).all()
        assert rows == list(ids)

    def test_each_tenant_has_its_own_steps(self, store):
        ours = new_step(store, new_lead(store))
        theirs = new_step(store, new_lead(store, tenant="acme"), tenant="acme")

        assert ours != theirs
        assert moved(store, "acme", begin_sending, ours) is False
        assert step(store, ours).status == "pending"


class TestBeginSending:
    def test_only_one_of_many_concurrent_callers_wins(self, store):
        step_id = new_step(store, new_lead(store))
        start = threading.Barrier(8)

        def race(n: int) -> bool:
            start.wait()
            return moved(
                store, "default", begin_sending, step_id, flow_run_id=f"run-{n}"
            )

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(race, range(8)))

        assert outcomes.count(True) == 1
        winner = f"run-{outcomes.index(True)}"
        sending = step(store, step_id)
        assert (sending.status, sending.flow_run_id) == ("sending", winner)

    def test_a_failed_step_may_be_sent_again(self, store):
        step_id = new_step(store, new_lead(store))
        moved(store, "default", mark_failed, step_id, reason="template broken")

        assert moved(store, "default", begin_sending, step_id) is True
        assert step(store, step_id).status == "sending"

    def test_settled_steps_are_never_sent_again(self, store):
        lead = new_lead(store)
        step_id = new_step(store, lead)
        moved(store, "default", begin_sending, step_id)
        moved(
            store,
            "default",
            mark_sent,
            step_id,
            message_id="<1@localhost>",
            flow_run_id=RUN,
        )

        assert moved(store, "default", begin_sending, step_id) is False
        assert moved(store, "default", mark_skipped, step_id, reason="x") is False
        assert moved(store, "default", mark_failed, step_id, reason="x") is False
        assert moved(store, "default", revert_to_pending, step_id, error="x") is False
        assert step(store, step_id).status == "sent"


class TestOutcomes:
    def test_mark_sent_records_the_message_and_an_email_sent_event(self, store):
        lead = new_lead(store)
        step_id = new_step(store, lead)
        moved(store, "default", begin_sending, step_id, flow_run_id=RUN)

        assert moved(
            store,
            "default",
            mark_sent,
            step_id,
            message_id="<1@localhost>",
            flow_run_id=RUN,
            now=DUE,
        )

        sent = step(store, step_id)
        assert (sent.status, sent.message_id, sent.sent_at) == (
            "sent",
            "<1@localhost>",
            DUE,
        )
        (event,) = email_events(store, lead)
        assert (event.kind, event.flow_run_id, event.source) == (
            "email.sent",
            RUN,
            "sequence:welcome_sequence",
        )
        assert event.detail == {
            "sequence": "welcome_sequence",
            "step": 1,
            "step_id": "welcome_1",
            "template": "welcome_1",
            "message_id": "<1@localhost>",
        }

    def test_mark_sent_needs_the_step_to_be_sending(self, store):
        step_id = new_step(store, new_lead(store))

        sent = moved(
            store,
            "default",
            mark_sent,
            step_id,
            message_id="<1@localhost>",
            flow_run_id=RUN,
        )

        assert sent is False
        assert step(store, step_id).status == "pending"

    def test_a_step_found_sending_becomes_unknown_and_stays_unsent(self, store):
        lead = new_lead(store)
        step_id = new_step(store, lead)
        moved(store, "default", begin_sending, step_id, flow_run_id="dead-run")

        assert moved(store, "default", park_unknown, step_id, flow_run_id=RUN) is True

        parked = step(store, step_id)
        assert (parked.status, parked.flow_run_id) == ("unknown", "dead-run")
        assert parked.error
        assert moved(store, "default", begin_sending, step_id) is False
        assert moved(store, "default", park_unknown, step_id) is False
        (event,) = email_events(store, lead)
        assert (event.kind, event.flow_run_id) == ("email.unknown", RUN)
        assert event.detail == {
            "sequence": "welcome_sequence",
            "step": 1,
            "step_id": "welcome_1",
            "sending_flow_run_id": "dead-run",
        }

    def test_a_late_sender_turns_unknown_into_sent(self, store):
        lead = new_lead(store)
        step_id = new_step(store, lead)
        moved(store, "default", begin_sending, step_id, flow_run_id="slow-run")
        moved(store, "default", park_unknown, step_id, flow_run_id=RUN)

        assert moved(
            store,
            "default",
            mark_sent,
            step_id,
            message_id="<1@localhost>",
            flow_run_id="slow-run",
        )

        assert step(store, step_id).status == "sent"
        kinds = [event.kind for event in email_events(store, lead)]
        assert kinds == ["email.unknown", "email.sent"]

    def test_mark_skipped_records_the_reason(self, store):
        lead = new_lead(store)
        step_id = new_step(store, lead)

        assert moved(
            store,
            "default",
            mark_skipped,
            step_id,
            reason="missing_email",
            flow_run_id=RUN,
        )

        skipped = step(store, step_id)
        assert (skipped.status, skipped.error) == ("skipped", "missing_email")
        (event,) = email_events(store, lead)
        assert event.kind == "email.skipped"
        assert event.detail["reason"] == "missing_email"

    def test_mark_failed_records_the_reason(self, store):
        lead = new_lead(store)
        step_id = new_step(store, lead)

        assert moved(store, "default", mark_failed, step_id, reason="no template")

        assert step(store, step_id).status == StepStatus.FAILED
        (event,) = email_events(store, lead)
        assert (event.kind, event.detail["reason"]) == ("email.failed", "no template")

    def test_revert_to_pending_only_undoes_sending(self, store):
        step_id = new_step(store, new_lead(store))

        assert moved(store, "default", revert_to_pending, step_id, error="x") is False
        moved(store, "default", begin_sending, step_id)
        assert (
            moved(store, "default", revert_to_pending, step_id, error="disk full")
            is True
        )

        reverted = step(store, step_id)
        assert (reverted.status, reverted.error) == ("pending", "disk full")
        assert moved(store, "default", begin_sending, step_id) is True

    def test_deleting_a_lead_deletes_its_steps(self, store):
        lead = new_lead(store)
        new_step(store, lead)

        with store.write("default") as scope:
            scope.session.delete(scope.get(type(lead), lead.id))

        with store.engine.connect() as connection:
            assert connection.scalars(select(SequenceStep.id)).all() == []


def test_the_sequence_steps_migration_goes_down_and_up_again(new_store_url, backend):
    engine = create_store_engine(new_store_url(backend))
    upgrade(engine)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))

    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0001")
    tables_after_downgrade = set(inspect(engine).get_table_names())
    upgrade(engine)

    assert "sequence_steps" not in tables_after_downgrade
    assert "leads" in tables_after_downgrade
    assert "sequence_steps" in inspect(engine).get_table_names()
    engine.dispose()
