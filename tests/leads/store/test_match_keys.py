"""Blocking keys in the store: leads stored before the keys existed get theirs."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from leads.intake import submit
from leads.store.database import Store, create_store_engine
from leads.store.schema import MIGRATIONS


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
