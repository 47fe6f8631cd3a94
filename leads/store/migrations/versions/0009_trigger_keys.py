"""Idempotency keys of workflow triggers, held in the store for every replica.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

WHEN = sa.DateTime(timezone=True)

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trigger_keys",
        sa.Column("tenant_id", sa.String(length=64), primary_key=True),
        sa.Column("key", sa.String(length=255), primary_key=True),
        sa.Column("holder", sa.String(length=32), nullable=False),
        sa.Column("held_until", WHEN, nullable=False),
        sa.Column("lead_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("trigger_keys")
