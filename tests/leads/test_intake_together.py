"""Single leads sent at about the same time, taken in in one transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from leads.intake import IntakeResult, StoreConflict, prepare, submit_together
from leads.store import Store
from leads.store.tables import Lead, OutboxItem, TimelineEvent

ADA = {"email": "ada@example.com", "first_name": "Ada", "company": "Analytical"}
GRACE = {"email": "grace@example.org", "first_name": "Grace", "company": "Cobol"}
REFUSED = {"email": "refused@example.net", "first_name": "Nobody", "company": "X"}


def stored(store: Store) -> dict[str, Lead]:
    with store.read("default") as scope:
        leads = scope.session.scalars(scope.select(Lead)).all()
    return {lead.email: lead for lead in leads}


@contextmanager
def refusing(store: Store, email: str) -> Iterator[None]:
    """A database trigger that refuses a lead with `email`, as a key race would."""
    with store.engine.begin() as connection:
        if store.backend == "postgresql":
            connection.exec_driver_sql(
                "CREATE FUNCTION refuse_lead() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.email = '{email}' THEN RAISE unique_violation; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse_lead BEFORE INSERT ON leads "
                "FOR EACH ROW EXECUTE FUNCTION refuse_lead()"
            )
        else:
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse_lead BEFORE INSERT ON leads "
                f"WHEN NEW.email = '{email}' BEGIN SELECT RAISE(ABORT, 'taken'); END"
            )
    try:
        yield
    finally:
        with store.engine.begin() as connection:
            if store.backend == "postgresql":
                connection.exec_driver_sql("DROP TRIGGER refuse_lead ON leads")
                connection.exec_driver_sql("DROP FUNCTION refuse_lead()")
            else:
                connection.exec_driver_sql("DROP TRIGGER refuse_lead")


def test_new_leads_sent_together_are_each_created_with_their_trail(store):
    results = submit_together(
        store, "default", [prepare(ADA, "US"), prepare(GRACE, "US")], channel="api"
    )

    assert [(r.outcome, r.lead.email) for r in results] == [
        ("created", "ada@example.com"),
        ("created", "grace@example.org"),
    ]
    # The answer is built from the lead as returned: it must read as stored.
    ada = results[0].lead
    assert (ada.email_opt_out, ada.email_state, ada.crm_sync_status) == (
        False,
        {},
        "pending",
    )
    assert ada.created_at is not None and ada.score is not None
    with store.read("default") as scope:
        events = scope.session.scalars(scope.select(TimelineEvent)).all()
        owed = scope.session.scalars(scope.select(OutboxItem)).all()
    assert sorted((e.kind, e.source) for e in events) == [("lead.created", "api")] * 2
    assert {item.lead_id for item in owed} == {r.lead.id for r in results}


def test_the_same_person_twice_in_one_group_is_one_lead_updated_once(store):
    later = ADA | {"job_title": "Countess"}

    first, second = submit_together(
        store, "default", [prepare(ADA, "US"), prepare(later, "US")], channel="api"
    )

    assert (first.outcome, second.outcome) == ("created", "updated")
    assert first.lead.id == second.lead.id
    assert stored(store)["ada@example.com"].job_title == "Countess"


def test_a_lead_the_store_keeps_refusing_fails_alone_and_the_rest_are_taken(store):
    with refusing(store, REFUSED["email"]):
        results = submit_together(
            store,
            "default",
            [prepare(ADA, "US"), prepare(REFUSED, "US"), prepare(GRACE, "US")],
            channel="api",
        )

    ada, refused, grace = results
    assert isinstance(ada, IntakeResult) and isinstance(grace, IntakeResult)
    assert (ada.outcome, grace.outcome) == ("created", "created")
    # Seen as a key race that would not settle: its sender is told to retry.
    assert isinstance(refused, StoreConflict)
    assert str(refused).endswith("send it again")
    assert sorted(stored(store)) == ["ada@example.com", "grace@example.org"]
