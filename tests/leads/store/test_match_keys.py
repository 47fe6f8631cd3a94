"""Blocking keys in the store: leads stored before the keys existed get theirs."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import delete, insert, text

from leads.fuzzy import load_rules
from leads.intake import submit
from leads.store import match_keys
from leads.store.database import Store, create_store_engine
from leads.store.schema import MIGRATIONS
from leads.store.tables import MatchKey

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_the_migration_gives_stored_leads_their_keys_and_they_are_matched(
    new_store_url, backend
):
    url = new_store_url(backend)
    engine = create_store_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
        connection.execute(
            text(
                "INSERT INTO leads (id, tenant_id, email, first_name, last_name, phone,"
                " status, score_reasons, warnings, flags, crm_sync_status, custom,"
                " created_at, updated_at, version) VALUES (:id, 'default', :email,"
                " 'Robert', 'O''Neil', '+14155550100', 'new', '[]', '[]', '[]',"
                " 'pending', '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1)"
            ),
            {"id": "00000000-0000-4000-8000-000000000001", "email": "bob@acme.example"},
        )
        command.upgrade(config, "head")
        keys = set(
            connection.execute(text("SELECT key FROM lead_match_keys")).scalars()
        )
    engine.dispose()
    assert any(key.startswith("phone:") for key in keys)

    store = Store(url)
    try:
        again = submit(
            store,
            "default",
            {"first_name": "Rob", "last_name": "ONeil", "phone": "415 555 0100"},
            channel="api",
            region="US",
        )
    finally:
        store.dispose()

    assert (again.outcome, again.lead.email) == ("merged", "bob@acme.example")


def _leads_with_keys(
    store, tenant: str, keys_by_lead: list[frozenset[str]]
) -> list[str]:
    """New leads of `tenant` holding exactly these blocking keys, in order."""
    ids = []
    for number in range(len(keys_by_lead)):
        lead = submit(
            store,
            tenant,
            {"email": f"person{number}@{tenant}.example", "first_name": f"P{number}"},
            channel="api",
            region="US",
        ).lead
        ids.append(lead.id)
    with store.write(tenant) as scope:
        scope.session.execute(delete(MatchKey).where(MatchKey.lead_id.in_(ids)))
        match_keys.add(scope, list(zip(ids, keys_by_lead, strict=True)))
    return ids


def test_candidates_rank_by_keys_shared_and_leave_out_oversized_blocks(store):
    rules = load_rules(REPO_ROOT / "config" / "matching.yaml")
    rules.max_block_size = 2
    one, two, three, four = _leads_with_keys(
        store,
        "default",
        [
            frozenset({"a", "b"}),
            frozenset({"b"}),
            frozenset({"crowded"}),
            frozenset({"crowded", "a"}),
        ],
    )
    # Another tenant's leads share the keys and crowd no block of this one.
    _leads_with_keys(store, "other", [frozenset({"a"}), frozenset({"b"})] * 2)
    with store.write("default") as scope:
        scope.session.execute(
            insert(MatchKey).values(lead_id=two, key="crowded", tenant_id="default")
        )

        found = match_keys.candidates(
            scope,
            rules,
            [frozenset({"a", "b"}), frozenset({"crowded"}), frozenset({"none"})],
        )

    assert found[0] == [one, *sorted([two, four])]
    assert found[1:] == [[], []]


def test_compared_values_reads_the_rules_columns_of_this_tenants_leads(store):
    mine = [
        submit(
            store,
            "default",
            {"email": f"p{n}@acme.example", "first_name": f"Ann{n}", "city": "Leeds"},
            channel="api",
            region="US",
        ).lead.id
        for n in range(3)
    ]
    theirs = submit(
        store, "other", {"email": "q@acme.example"}, channel="api", region="US"
    ).lead.id

    with store.read("default") as scope:
        found = match_keys.compared_values(
            scope, {"first_name", "custom.badge"}, [*mine, theirs, "no-such-lead"]
        )

    assert sorted(found) == sorted(mine), "another tenant's lead is left out"
    assert found[mine[1]] == {
        "id": mine[1],
        "tenant_id": "default",
        "first_name": "Ann1",
        "custom": {},
    }
