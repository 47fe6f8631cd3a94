"""Migration 0011 on a store with leads: each gets its address's digest, both ways."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text

from leads.store.database import create_store_engine
from leads.store.schema import MIGRATIONS
from leads.suppression import address_hash

LEAD = (
    "INSERT INTO leads (id, tenant_id, email, status, score_reasons, warnings, flags,"
    " crm_sync_status, custom, created_at, updated_at, version) VALUES (:id,"
    " 'default', :email, 'new', '[]', '[]', '[]', 'pending', '{}',"
    " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1)"
)


def test_fills_each_lead_s_digest_and_drops_it_going_down(new_store_url, backend):
    engine = create_store_engine(new_store_url(backend))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0010")
        connection.execute(
            text(LEAD),
            [
                {"id": "l1", "email": "ada@example.com"},
                {"id": "l2", "email": None},
                {"id": "l3", "email": "grace.hopper@example.org"},
            ],
        )
        # More than one batch of the backfill.
        connection.execute(
            text(LEAD),
            [{"id": f"m{n:05d}", "email": f"m{n}@example.net"} for n in range(5_001)],
        )

        command.upgrade(config, "0011")

        digests = dict(
            connection.execute(text("SELECT id, email_hash FROM leads")).all()
        )
        assert {key: digests[key] for key in ("l1", "l2", "l3")} == {
            "l1": address_hash("ada@example.com"),
            "l2": None,
            "l3": address_hash("Grace.Hopper@example.org"),
        }
        assert digests["m05000"] == address_hash("m5000@example.net")
        assert sum(digest is not None for digest in digests.values()) == 5_003

        command.downgrade(config, "0010")

        columns = {
            column["name"] for column in inspect(connection).get_columns("leads")
        }
        assert "email_hash" not in columns
        assert connection.execute(text("SELECT count(*) FROM leads")).scalar() == 5_004
    engine.dispose()
