"""Timeline writes name the flow run: the one given, else the current one, else none."""

from __future__ import annotations

from sqlalchemy import event, select

from leads.flow_run import within_flow_run
from leads.intake import submit
from leads.store import timeline
from leads.store.tables import TimelineEvent

RUN = "5d0c7a52-0000-4000-8000-000000000001"
GIVEN = "5d0c7a52-0000-4000-8000-000000000002"


def take(store, email: str = "ada@example.com") -> str:
    return submit(
        store, "default", {"email": email}, channel="api", region="US"
    ).lead.id


def written(store, lead_id: str, *kinds: str) -> list[TimelineEvent]:
    with store.read("default") as scope:
        query = (
            scope.select(TimelineEvent)
            .where(TimelineEvent.lead_id == lead_id, TimelineEvent.kind.in_(kinds))
            .order_by(TimelineEvent.id)
        )
        return list(scope.session.scalars(query))


def write_each_way(store, lead_id: str, **run: str) -> None:
    with store.write("default") as scope:
        timeline.record(scope, lead_id, "test.recorded", source="test", **run)
        timeline.append(scope, lead_id, "test.appended", source="test", **run)
        timeline.append_all(
            scope,
            [
                timeline.event_row(scope, lead_id, "test.batched", source="test", **run)
                for _ in range(2)
            ],
        )


KINDS = ("test.recorded", "test.appended", "test.batched")


class TestFlowRun:
    def test_outside_a_flow_run_events_name_none(self, store):
        lead_id = take(store)

        write_each_way(store, lead_id)

        events = written(store, lead_id, *KINDS)
        assert len(events) == 4
        assert {e.flow_run_id for e in events} == {None}

    def test_inside_a_flow_run_every_way_of_writing_names_it(self, store):
        lead_id = take(store)

        with within_flow_run(RUN):
            write_each_way(store, lead_id)

        events = written(store, lead_id, *KINDS)
        assert [e.kind for e in events] == [
            "test.recorded",
            "test.appended",
            "test.batched",
            "test.batched",
        ]
        assert {e.flow_run_id for e in events} == {RUN}

    def test_a_run_given_outright_wins_over_the_current_one(self, store):
        lead_id = take(store)

        with within_flow_run(RUN):
            write_each_way(store, lead_id, flow_run_id=GIVEN)

        assert {e.flow_run_id for e in written(store, lead_id, *KINDS)} == {GIVEN}

    def test_a_run_is_read_when_the_event_is_made_not_when_it_is_flushed(self, store):
        lead_id = take(store)

        # The run's block ends first; the transaction commits (and flushes
        # the event) after it.
        with store.write("default") as scope, within_flow_run(RUN):
            timeline.record(scope, lead_id, "test.recorded")

        [event] = written(store, lead_id, "test.recorded")
        assert event.flow_run_id == RUN

    def test_intake_inside_a_flow_run_names_it_on_the_lead_created_event(self, store):
        with within_flow_run(RUN):
            lead_id = take(store)

        [created] = written(store, lead_id, "lead.created")
        assert created.flow_run_id == RUN


class TestAppendAll:
    def test_a_batch_of_events_is_one_statement_in_the_lists_order(self, store):
        leads = [take(store, f"p{n}@example.com") for n in range(3)]
        inserts: list[str] = []

        def note(_conn, _cursor, statement, *_args):
            if statement.startswith("INSERT INTO lead_events"):
                inserts.append(statement)

        event.listen(store.engine, "before_cursor_execute", note)
        try:
            with store.write("default") as scope:
                timeline.append_all(
                    scope,
                    [
                        timeline.event_row(
                            scope, lead_id, "test.batched", detail={"n": n}
                        )
                        for n, lead_id in enumerate(leads)
                    ],
                )
        finally:
            event.remove(store.engine, "before_cursor_execute", note)

        assert len(inserts) == 1
        with store.read("default") as scope:
            rows = scope.session.execute(
                select(TimelineEvent.lead_id, TimelineEvent.detail)
                .where(TimelineEvent.kind == "test.batched")
                .order_by(TimelineEvent.id)
            ).all()
        assert [(row.lead_id, row.detail) for row in rows] == [
            (lead_id, {"n": n}) for n, lead_id in enumerate(leads)
        ]

    def test_nothing_to_append_writes_nothing(self, store):
        with store.write("default") as scope:
            timeline.append_all(scope, [])
        with store.read("default") as scope:
            assert scope.session.scalars(select(TimelineEvent)).all() == []
