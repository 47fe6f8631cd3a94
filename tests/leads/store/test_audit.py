"""The audit log in the store: appended only, newest first, one INSERT a batch."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete, event, update
from sqlalchemy.exc import DBAPIError

from leads.errors import LeadRejected
from leads.flow_run import within_flow_run
from leads.store import audit
from leads.store.tables import AuditEvent, utcnow

RUN = "5d0c7a52-0000-4000-8000-00000000a0d1"


def decide(store, action: str = "lead.merged", tenant: str = "default", **kw) -> None:
    with store.write(tenant) as scope:
        audit.append_decision(
            scope.session, tenant, action, "lead", kw.pop("target", "l-1"), **kw
        )


def records(store, tenant: str = "default") -> list[AuditEvent]:
    with store.read(tenant) as scope:
        return list(
            scope.session.scalars(scope.select(AuditEvent).order_by(AuditEvent.id))
        )


class TestAppendOnly:
    def test_the_database_refuses_to_update_a_record(self, store):
        decide(store)

        refused = pytest.raises(DBAPIError, match="append-only")
        with refused, store.write_across_tenants() as session:
            session.execute(update(AuditEvent).values(action="lead.erased"))

        assert [r.action for r in records(store)] == ["lead.merged"]

    def test_the_database_refuses_to_delete_a_record(self, store):
        decide(store)

        refused = pytest.raises(DBAPIError, match="append-only")
        with refused, store.write_across_tenants() as session:
            session.execute(delete(AuditEvent))

        assert len(records(store)) == 1

    def test_a_record_is_written_with_the_change_or_not_at_all(self, store):
        with pytest.raises(RuntimeError), store.write("default") as scope:
            audit.append_decision(
                scope.session, "default", "lead.merged", "lead", "l-1"
            )
            raise RuntimeError("the change failed")

        assert records(store) == []


class TestActors:
    def test_a_decision_outside_any_call_is_the_systems_with_its_flow_run(self, store):
        with within_flow_run(RUN):
            decide(store)

        [record] = records(store)
        assert (record.actor, record.kind, record.flow_run_id) == (
            "system",
            "decision",
            RUN,
        )

    def test_a_decision_inside_a_call_names_the_key_once_it_is_known(self, store):
        known: dict[str, str] = {}
        with audit.acting_for(lambda: known.get("key_id")):
            decide(store, "lead.possible_duplicate")
            known["key_id"] = "0123456789ab"
            decide(store, "lead.merged")
            decide(store, "lead.erased", actor="ba9876543210")

        assert [(r.action, r.actor) for r in records(store)] == [
            ("lead.possible_duplicate", "system"),
            ("lead.merged", "0123456789ab"),
            ("lead.erased", "ba9876543210"),
        ]
        assert audit.current_actor() == "system"


class TestBatches:
    def test_many_decisions_are_one_insert_statement(self, store):
        statements: list[str] = []

        def seen(conn, cursor, statement, parameters, context, executemany):
            if statement.lstrip().upper().startswith("INSERT INTO AUDIT_EVENTS"):
                statements.append(statement)

        targets = {f"lead-{n}": {"reason": "auth", "attempt": n} for n in range(250)}
        event.listen(store.engine, "before_cursor_execute", seen)
        try:
            with store.write("default") as scope:
                audit.append_decisions(
                    scope.session,
                    "default",
                    "crm.parked",
                    "lead",
                    targets,
                    flow_run_id=RUN,
                )
                audit.append_decisions(
                    scope.session, "default", "crm.parked", "lead", {}
                )
        finally:
            event.remove(store.engine, "before_cursor_execute", seen)

        assert len(statements) == 1
        written = records(store)
        assert {r.target_id: r.detail for r in written} == targets
        assert {(r.action, r.actor, r.flow_run_id) for r in written} == {
            ("crm.parked", "system", RUN)
        }


class TestPaging:
    def test_pages_run_newest_first_without_gaps_or_repeats(self, store):
        for n in range(7):
            decide(store, target=f"l-{n}")

        seen, cursor = [], None
        while True:
            with store.read("default") as scope:
                rows, cursor = audit.page(scope, audit.AuditFilter(), 3, cursor)
            seen += [r.target_id for r in rows]
            if cursor is None:
                break

        assert seen == [f"l-{n}" for n in reversed(range(7))]

    def test_filters_combine(self, store):
        decide(store, "lead.merged", target="a")
        decide(store, "email.suppressed", target="a")
        decide(store, "lead.merged", target="b")
        with store.write("default") as scope:
            audit.append_requests(
                scope.session,
                [audit.CallRecord("default", "0123456789ab", "POST /api/leads", 201)],
            )

        def listed(**given) -> list[tuple[str, str | None]]:
            with store.read("default") as scope:
                rows, _ = audit.page(scope, audit.AuditFilter(**given), 50, None)
            return [(r.action, r.target_id) for r in rows]

        assert listed(action="lead.merged", target_id="a") == [("lead.merged", "a")]
        assert listed(kind="request") == [("POST /api/leads", None)]
        assert listed(actor="0123456789ab", kind="decision") == []
        assert len(listed(target_type="lead")) == 3
        assert listed(since=utcnow() + timedelta(minutes=1)) == []
        assert len(listed(until=utcnow() + timedelta(minutes=1))) == 4

    def test_another_tenants_records_are_not_listed(self, store):
        decide(store, tenant="acme")

        with store.read("default") as scope:
            rows, cursor = audit.page(scope, audit.AuditFilter(), 50, None)

        assert (rows, cursor) == ([], None)
        assert len(records(store, "acme")) == 1

    @pytest.mark.parametrize("cursor", ["nonsense", "WzBd", "WyJ4Il0", "W3RydWVd"])
    def test_a_cursor_this_list_did_not_hand_out_is_refused(self, store, cursor):
        with store.read("default") as scope, pytest.raises(LeadRejected) as refused:
            audit.page(scope, audit.AuditFilter(), 50, cursor)

        assert refused.value.errors[0].field == "cursor"
