"""E-mail automations: step keys, opt-outs, suppressions, events, sends, plans.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs: SQLite must not rebuild `leads`, since dropping the
    # old table would cascade to every row that refers to a lead.
    with op.batch_alter_table("leads", schema=None, recreate="never") as batch_op:
        batch_op.add_column(
            sa.Column(
                "email_opt_out",
                sa.Boolean(),
                nullable=False,
                server_default=sa.text("false"),
            )
        )
        batch_op.add_column(
            sa.Column("email_state", JSON, nullable=False, server_default="{}")
        )

    with op.batch_alter_table("sequence_steps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("step_key", sa.String(length=64)))
        batch_op.add_column(sa.Column("template", sa.String(length=128)))
        batch_op.add_column(sa.Column("recipient_hash", sa.String(length=64)))
    # Before this revision only step 1 of `welcome_sequence` was ever sent, and
    # its template (now also its id) was `welcome_1`.
    op.execute(
        "UPDATE sequence_steps SET step_key = 'welcome_1', template = 'welcome_1' "
        "WHERE sequence = 'welcome_sequence' AND step = 1"
    )
    op.execute(
        "UPDATE sequence_steps SET step_key = 'step_' || CAST(step AS VARCHAR) "
        "WHERE step_key IS NULL"
    )
    with op.batch_alter_table("sequence_steps", schema=None) as batch_op:
        batch_op.alter_column(
            "step_key", existing_type=sa.String(length=64), nullable=False
        )
        batch_op.drop_constraint("uq_sequence_steps_step", type_="unique")
        batch_op.create_unique_constraint(
            "uq_sequence_steps_key", ["lead_id", "sequence", "step_key", "tenant_id"]
        )
        # Provider events (`POST /api/email/events`) name the message.
        batch_op.create_index("ix_sequence_steps_message_id", ["message_id"])

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.alter_column(
            "lead_id", existing_type=sa.String(length=36), nullable=True
        )

    op.create_table(
        "email_sends",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("lead_id", sa.String(length=36), nullable=True),
        sa.Column("recipient", sa.String(length=320), nullable=True),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("template", sa.String(length=128), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("body_text", sa.Text(), nullable=True),
        sa.Column("body_html", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("flow_run_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "idempotency_key", "tenant_id", name="uq_email_sends_idempotency"
        ),
    )
    op.create_index("ix_email_sends_lead", "email_sends", ["lead_id"])
    op.create_index("ix_email_sends_message_id", "email_sends", ["message_id"])
    op.create_index(
        "ix_email_sends_tenant_created", "email_sends", ["tenant_id", "created_at"]
    )

    op.create_table(
        "email_suppressions",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("address_hash", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("lead_id", sa.String(length=36), nullable=True),
        sa.Column("source", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "address_hash", "tenant_id", "reason", name="uq_email_suppressions"
        ),
    )

    op.create_table(
        "email_events",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("lead_id", sa.String(length=36), nullable=True),
        sa.Column("address_hash", sa.String(length=64), nullable=True),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("detail", JSON, nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id", "tenant_id", name="uq_email_events_event"),
    )
    op.create_index("ix_email_events_lead", "email_events", ["lead_id"])

    op.create_table(
        "sequence_plans",
        sa.Column("sequence", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sequence"),
    )


def downgrade() -> None:
    op.drop_table("sequence_plans")
    op.drop_index("ix_email_events_lead", table_name="email_events")
    op.drop_table("email_events")
    op.drop_table("email_suppressions")
    op.drop_index("ix_email_sends_tenant_created", table_name="email_sends")
    op.drop_index("ix_email_sends_message_id", table_name="email_sends")
    op.drop_index("ix_email_sends_lead", table_name="email_sends")
    op.drop_table("email_sends")
    op.execute("DELETE FROM outbox WHERE lead_id IS NULL")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.alter_column(
            "lead_id", existing_type=sa.String(length=36), nullable=False
        )
    # The old key is (lead, sequence, position): after an edit of a sequence
    # two steps of a lead can share a position. The earliest row of each is
    # kept (the code of 0005 sends step 1 of the welcome sequence only).
    op.execute(
        "DELETE FROM sequence_steps WHERE id NOT IN ("
        "SELECT MIN(id) FROM sequence_steps "
        "GROUP BY lead_id, sequence, step, tenant_id)"
    )
    with op.batch_alter_table("sequence_steps", schema=None) as batch_op:
        batch_op.drop_index("ix_sequence_steps_message_id")
        batch_op.drop_constraint("uq_sequence_steps_key", type_="unique")
        batch_op.create_unique_constraint(
            "uq_sequence_steps_step", ["lead_id", "sequence", "step", "tenant_id"]
        )
        batch_op.drop_column("recipient_hash")
        batch_op.drop_column("template")
        batch_op.drop_column("step_key")
    with op.batch_alter_table("leads", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("email_state")
        batch_op.drop_column("email_opt_out")
