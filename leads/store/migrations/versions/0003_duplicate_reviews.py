"""Possible duplicates: a mailbox key on leads and the review items that pair them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from alembic import op
import sqlalchemy as sa

from leads.matching import mailbox_key

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Rows read and rewritten at a time while the keys of existing leads are filled in.
BACKFILL_CHUNK = 1000

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("mailbox_key", sa.String(length=320), nullable=True)
        )
        batch_op.create_index(
            "ix_leads_mailbox", ["mailbox_key", "tenant_id"], unique=False
        )
    _backfill_mailbox_keys()

    op.create_table(
        "duplicate_reviews",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("lead_id", sa.String(length=36), nullable=False),
        sa.Column("duplicate_of_id", sa.String(length=36), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["duplicate_of_id"], ["leads.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "lead_id", "duplicate_of_id", "tenant_id", name="uq_duplicate_reviews_pair"
        ),
    )
    with op.batch_alter_table("duplicate_reviews", schema=None) as batch_op:
        batch_op.create_index(
            "ix_duplicate_reviews_earlier", ["duplicate_of_id"], unique=False
        )
        batch_op.create_index(
            "ix_duplicate_reviews_status", ["status", "tenant_id", "id"], unique=False
        )


def _backfill_mailbox_keys() -> None:
    """Gives every stored lead with an e-mail its key, a chunk of ids at a time."""
    leads = sa.table(
        "leads",
        sa.column("id", sa.String),
        sa.column("email", sa.String),
        sa.column("mailbox_key", sa.String),
    )
    connection = op.get_bind()
    last_id = ""
    while True:
        rows = connection.execute(
            sa.select(leads.c.id, leads.c.email)
            .where(leads.c.email.is_not(None), leads.c.id > last_id)
            .order_by(leads.c.id)
            .limit(BACKFILL_CHUNK)
        ).all()
        if not rows:
            return
        connection.execute(
            leads.update()
            .where(leads.c.id == sa.bindparam("row_id"))
            .values(mailbox_key=sa.bindparam("key")),
            [{"row_id": row.id, "key": mailbox_key(row.email)} for row in rows],
        )
        last_id = rows[-1].id


def downgrade() -> None:
    with op.batch_alter_table("duplicate_reviews", schema=None) as batch_op:
        batch_op.drop_index("ix_duplicate_reviews_status")
        batch_op.drop_index("ix_duplicate_reviews_earlier")

    op.drop_table("duplicate_reviews")
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_index("ix_leads_mailbox")
        batch_op.drop_column("mailbox_key")
