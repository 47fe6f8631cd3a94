"""Migration 0007 on a store with data: CRM timeline kinds renamed, and back."""

from __future__ import annotations

import json

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from leads.store.database import create_store_engine
from leads.store.schema import MIGRATIONS

LEAD = (
    "INSERT INTO leads (id, tenant_id, email, status, score_reasons, warnings, flags,"
    " crm_sync_status, custom, created_at, updated_at, version, email_opt_out,"
    " email_state) VALUES ('l1', 'default', 'ada@example.com', 'new', '[]', '[]',"
    " '[]', 'pending', '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1, false, '{}')"
)
EVENTS = [
    ("crm_synced", {"outcome": "created", "crm_id": "1"}, "crm.created"),
    ("crm_synced", {"outcome": "updated", "crm_id": "1"}, "crm.updated"),
    ("crm_sync_skipped", {}, "crm.skipped"),
    ("crm_sync_failed", {"status": "retrying"}, "crm.retrying"),
    ("crm_sync_failed", {"status": "parked"}, "crm.parked"),
    ("crm_status_changed", {}, "crm.status_changed"),
    ("lead.created", {}, "lead.created"),
]


def kinds(connection) -> list[str]:
    query = text("SELECT kind FROM lead_events ORDER BY id")
    return connection.execute(query).scalars().all()


def test_the_crm_kinds_are_renamed_by_what_each_event_says(new_store_url, backend):
    engine = create_store_engine(new_store_url(backend))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0006")
        connection.execute(text(LEAD))
        for kind, detail, _ in EVENTS:
            connection.execute(
                text(
                    "INSERT INTO lead_events (tenant_id, lead_id, occurred_at, kind,"
                    " detail) VALUES ('default', 'l1', CURRENT_TIMESTAMP, :kind,"
                    " :detail)"
                ),
                {"kind": kind, "detail": json.dumps(detail)},
            )

        command.upgrade(config, "0007")
        upgraded = kinds(connection)
        command.downgrade(config, "0006")
        downgraded = kinds(connection)

    assert upgraded == [new for _, _, new in EVENTS]
    assert downgraded == [old for old, _, _ in EVENTS]
    engine.dispose()
