"""Leads keep their address's digest, so an address unsubscribe link finds its lead.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# Leads filled in per statement: a store of millions is not held in memory.
BATCH = 5_000


def upgrade() -> None:
    op.add_column("leads", sa.Column("email_hash", sa.String(length=64), nullable=True))
    leads = sa.table(
        "leads",
        sa.column("id", sa.String),
        sa.column("email", sa.String),
        sa.column("email_hash", sa.String),
    )
    connection = op.get_bind()
    last = ""
    while True:
        rows = connection.execute(
            sa.select(leads.c.id, leads.c.email)
            .where(leads.c.id > last, leads.c.email.is_not(None))
            .order_by(leads.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        connection.execute(
            leads.update()
            .where(leads.c.id == sa.bindparam("lead_id"))
            .values(email_hash=sa.bindparam("digest")),
            [
                {"lead_id": id_, "digest": hashlib.sha256(email.encode()).hexdigest()}
                for id_, email in rows
            ],
        )
        last = rows[-1][0]
    op.create_index("ix_leads_email_hash", "leads", ["email_hash", "tenant_id"])


def downgrade() -> None:
    op.drop_index("ix_leads_email_hash", table_name="leads")
    op.drop_column("leads", "email_hash")
