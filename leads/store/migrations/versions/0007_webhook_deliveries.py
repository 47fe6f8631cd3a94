"""Webhook deliveries: each event kept, once, before it is processed.

Also renames the CRM timeline kinds to their `crm.*` names.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
WHEN = sa.DateTime(timezone=True)

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", BIGID, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("delivery_id", sa.String(length=255), nullable=False),
        sa.Column("signature_digest", sa.String(length=64), nullable=True),
        sa.Column("event_type", sa.String(length=128), nullable=True),
        sa.Column("subject", sa.String(length=128), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("occurred_at", WHEN, nullable=False),
        sa.Column("received_at", WHEN, nullable=False),
        sa.Column("last_received_at", WHEN, nullable=False),
        sa.Column("receipts", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reasons", JSON, nullable=False),
        sa.Column("lead_id", sa.String(length=36), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", WHEN, nullable=False),
        sa.Column("claimed_until", WHEN, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("processed_at", WHEN, nullable=True),
        sa.Column("flow_run_id", sa.String(length=36), nullable=True),
        sa.UniqueConstraint(
            "source", "delivery_id", "tenant_id", name="uq_webhook_deliveries"
        ),
        sa.UniqueConstraint(
            "source",
            "signature_digest",
            "tenant_id",
            name="uq_webhook_deliveries_signature",
        ),
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["status", "next_attempt_at"],
    )
    op.create_index(
        "ix_webhook_deliveries_lead",
        "webhook_deliveries",
        ["lead_id", "subject", "occurred_at"],
    )
    op.create_index(
        "ix_webhook_deliveries_listing",
        "webhook_deliveries",
        ["tenant_id", "status", "id"],
    )
    _rename_kinds(op.get_bind())


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    events = sa.table("lead_events", sa.column("kind", sa.String))
    for new, old in _BACK.items():
        op.execute(events.update().where(events.c.kind == new).values(kind=old))


# Timeline kinds before this revision, and what they are called now. A synced
# lead's event named the CRM's outcome in its detail; a failure its status.
_RENAMED = {
    "crm_sync_skipped": "crm.skipped",
    "crm_status_changed": "crm.status_changed",
}


def _rename_kinds(connection: sa.Connection) -> None:
    events = sa.table(
        "lead_events",
        sa.column("id", BIGID),
        sa.column("kind", sa.String),
        sa.column("detail", JSON),
    )
    for old, new in _RENAMED.items():
        connection.execute(events.update().where(events.c.kind == old).values(kind=new))
    # The rest depend on each row's detail: read and rename in chunks.
    last = 0
    while True:
        rows = connection.execute(
            sa.select(events.c.id, events.c.kind, events.c.detail)
            .where(
                events.c.kind.in_(("crm_synced", "crm_sync_failed")),
                events.c.id > last,
            )
            .order_by(events.c.id)
            .limit(1000)
        ).all()
        if not rows:
            return
        for row in rows:
            detail = row.detail or {}
            if row.kind == "crm_synced":
                new = (
                    "crm.created"
                    if detail.get("outcome") == "created"
                    else "crm.updated"
                )
            else:
                new = (
                    "crm.parked" if detail.get("status") == "parked" else "crm.retrying"
                )
            connection.execute(
                events.update().where(events.c.id == row.id).values(kind=new)
            )
        last = rows[-1].id


_BACK = {
    "crm.created": "crm_synced",
    "crm.updated": "crm_synced",
    "crm.skipped": "crm_sync_skipped",
    "crm.retrying": "crm_sync_failed",
    "crm.parked": "crm_sync_failed",
    "crm.status_changed": "crm_status_changed",
}
