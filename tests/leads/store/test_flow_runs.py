"""Which flow runs touched a lead, read from a real store on each backend."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from leads import importer
from leads.errors import LeadRejected
from leads.intake import submit
from leads.store import imports as stored_imports
from leads.store.flow_runs import runs_of_lead
from leads.store.steps import begin_sending, ensure_step, mark_sent
from leads.store.tables import EmailSend, TimelineEvent

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def new_lead(store, email="ada@example.com", tenant="default"):
    return submit(store, tenant, {"email": email}, channel="api", region="US").lead


def event(store, lead_id, kind, run_id, minutes, tenant="default"):
    """A timeline row of `run_id`, `minutes` after START."""
    with store.write(tenant) as scope:
        scope.add(
            TimelineEvent(
                lead_id=lead_id,
                kind=kind,
                source="flow",
                detail={},
                flow_run_id=run_id,
                occurred_at=START + timedelta(minutes=minutes),
            )
        )


def runs(store, lead_id, limit=50, cursor=None, tenant="default"):
    with store.read(tenant) as scope:
        return runs_of_lead(scope, lead_id, limit, cursor)


def run_id() -> str:
    return str(uuid.uuid4())


class TestTimelineRuns:
    def test_lists_each_run_once_newest_first_with_the_kinds_it_recorded(self, store):
        lead = new_lead(store)
        early, late = run_id(), run_id()
        event(store, lead.id, "crm.synced", early, 1)
        event(store, lead.id, "crm.sync_failed", early, 0)
        event(store, lead.id, "email.sent", late, 5)
        event(store, lead.id, "email.sent", late, 6)

        found, next_cursor = runs(store, lead.id)

        assert [(r.flow_run_id, r.event_kinds) for r in found] == [
            (late, ["email.sent"]),
            (early, ["crm.sync_failed", "crm.synced"]),
        ]
        assert found[1].first_touched_at == START
        assert found[1].last_touched_at == START + timedelta(minutes=1)
        assert next_cursor is None

    def test_events_without_a_run_are_not_runs(self, store):
        lead = new_lead(store)

        assert runs(store, lead.id) == ([], None)

    def test_another_leads_runs_are_not_listed(self, store):
        lead, other = new_lead(store), new_lead(store, "zoe@example.com")
        event(store, other.id, "crm.synced", run_id(), 0)

        assert runs(store, lead.id) == ([], None)

    def test_another_tenants_rows_are_invisible(self, store):
        theirs = new_lead(store, tenant="acme")
        event(store, theirs.id, "crm.synced", run_id(), 0, tenant="acme")

        assert runs(store, theirs.id) == ([], None)
        assert len(runs(store, theirs.id, tenant="acme")[0]) == 1


class TestPaging:
    def test_pages_follow_each_other_without_gaps_or_repeats(self, store):
        lead = new_lead(store)
        made = [run_id() for _ in range(5)]
        for minutes, made_id in enumerate(made):
            event(store, lead.id, "crm.synced", made_id, minutes)

        seen, cursor = [], None
        while True:
            page, cursor = runs(store, lead.id, limit=2, cursor=cursor)
            seen.extend(r.flow_run_id for r in page)
            if cursor is None:
                break

        assert seen == made[::-1]

    def test_runs_that_started_at_the_same_moment_are_split_by_id(self, store):
        lead = new_lead(store)
        made = sorted(run_id() for _ in range(3))
        for made_id in made:
            event(store, lead.id, "crm.synced", made_id, 0)

        first, cursor = runs(store, lead.id, limit=2)
        second, last = runs(store, lead.id, limit=2, cursor=cursor)

        assert [r.flow_run_id for r in first + second] == made[::-1]
        assert last is None

    @pytest.mark.parametrize("cursor", ["nonsense", "WyJ4Il0", "WzEsMl0"])
    def test_a_cursor_this_list_did_not_hand_out_is_refused(self, store, cursor):
        lead = new_lead(store)

        with pytest.raises(LeadRejected) as refused:
            runs(store, lead.id, cursor=cursor)

        assert refused.value.errors[0].field == "cursor"


class TestSendingRuns:
    def test_a_run_that_sent_a_step_is_listed_by_the_steps_run_id(self, store):
        lead = new_lead(store)
        sender = run_id()
        with store.write("default") as scope:
            step = ensure_step(
                scope,
                lead.id,
                "welcome_sequence",
                "welcome_1",
                position=1,
                template="welcome_1",
                due_at=START,
            )
        with store.write("default") as scope:
            begin_sending(scope, step.id, flow_run_id=sender)
        with store.write("default") as scope:
            mark_sent(scope, step.id, message_id="<m1@localhost>", flow_run_id=sender)

        [found], _ = runs(store, lead.id)

        assert found.flow_run_id == sender
        assert "email.sent" in found.event_kinds

    def test_a_one_off_whose_run_recorded_no_event_is_still_listed(self, store):
        lead = new_lead(store)
        sender = run_id()
        with store.write("default") as scope:
            scope.add(
                EmailSend(
                    lead_id=lead.id,
                    category="marketing",
                    status="sending",
                    flow_run_id=sender,
                )
            )

        [found], _ = runs(store, lead.id)

        assert (found.flow_run_id, found.event_kinds) == (sender, [])


class TestImportRuns:
    def test_the_run_that_imported_the_lead_is_listed_with_what_it_did(
        self, store, tmp_path
    ):
        upload = importer.accept(
            store,
            "default",
            io.BytesIO(b"email,first_name\nada@example.com,Ada\n"),
            filename="leads.csv",
            folder=tmp_path,
            max_bytes=1 << 20,
        )
        importer.run(store, upload.id, owner="test", region="US")
        importing = run_id()
        with store.write("default") as scope:
            stored_imports.get(scope, upload.id).flow_run_id = importing
        with store.read("default") as scope:
            [created] = scope.session.scalars(scope.select(TimelineEvent)).all()

        [found], _ = runs(store, created.lead_id)

        assert (found.flow_run_id, found.event_kinds) == (importing, ["lead.created"])

    def test_an_import_whose_run_is_unknown_adds_nothing(self, store, tmp_path):
        upload = importer.accept(
            store,
            "default",
            io.BytesIO(b"email\nada@example.com\n"),
            filename="leads.csv",
            folder=tmp_path,
            max_bytes=1 << 20,
        )
        importer.run(store, upload.id, owner="test", region="US")
        with store.read("default") as scope:
            [created] = scope.session.scalars(scope.select(TimelineEvent)).all()

        assert runs(store, created.lead_id) == ([], None)
