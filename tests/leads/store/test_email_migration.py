"""Migration 0006 on a store with data: kept going up, and down again after edits."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from leads.store.database import create_store_engine
from leads.store.schema import MIGRATIONS

LEAD = (
    "INSERT INTO leads (id, tenant_id, email, status, score_reasons, warnings, flags,"
    " crm_sync_status, custom, created_at, updated_at, version) VALUES ('l1',"
    " 'default', 'ada@example.com', 'new', '[]', '[]', '[]', 'pending', '{}',"
    " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1)"
)
STEP = (
    "INSERT INTO sequence_steps (tenant_id, lead_id, sequence, step, {key}status,"
    " due_at, created_at, updated_at) VALUES ('default', 'l1', 'welcome_sequence',"
    " 1, {value}'sent', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
)


def count(connection, table: str) -> int:
    return connection.execute(text(f"SELECT count(*) FROM {table}")).scalar()


def test_keeps_leads_their_keys_and_sent_steps_both_ways(new_store_url, backend):
    engine = create_store_engine(new_store_url(backend))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0005")
        connection.execute(text(LEAD))
        connection.execute(text(STEP.format(key="", value="")))
        connection.execute(
            text(
                "INSERT INTO lead_match_keys (lead_id, key, tenant_id)"
                " VALUES ('l1', 'phone:4155550100', 'default')"
            )
        )

        command.upgrade(config, "0006")

        # SQLite must not rebuild `leads`: that would cascade to its children.
        assert count(connection, "lead_match_keys") == 1
        assert count(connection, "leads") == 1
        step_keys = connection.execute(text("SELECT step_key FROM sequence_steps"))
        assert step_keys.scalars().all() == ["welcome_1"]

        # An edited sequence gave a second step the same position.
        connection.execute(text(STEP.format(key="step_key, ", value="'welcome_0', ")))
        command.downgrade(config, "0005")

        assert count(connection, "sequence_steps") == 1
        assert count(connection, "leads") == 1
    engine.dispose()
