"""Lead imports with their rejects, and the blocking keys fuzzy matching looks up.

Leads stored before this revision get their keys here, under the matching rules
in the configured `matching.yaml`, so fuzzy matching finds them too.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from leads.fuzzy import load_rules
from leads.settings import get_settings

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Leads read and given their keys at a time.
BACKFILL_CHUNK = 1000
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "imports",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("mapping", JSON, nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("chunk_size", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("encoding", sa.String(length=16), nullable=True),
        sa.Column("delimiter", sa.String(length=8), nullable=True),
        sa.Column("columns", JSON, nullable=False),
        sa.Column("records_done", sa.Integer(), nullable=False),
        sa.Column("bytes_done", sa.BigInteger(), nullable=False),
        sa.Column("counts", JSON, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("flow_run_id", sa.String(length=36), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("imports", schema=None) as batch_op:
        batch_op.create_index(
            "ix_imports_tenant_created", ["tenant_id", "created_at"], unique=False
        )

    op.create_table(
        "import_rejects",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("import_id", sa.String(length=36), nullable=False),
        sa.Column("record", sa.Integer(), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("errors", JSON, nullable=False),
        sa.Column("values", JSON, nullable=False),
        sa.ForeignKeyConstraint(["import_id"], ["imports.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("import_id", "record", name="uq_import_rejects_record"),
    )

    op.create_table(
        "lead_match_keys",
        sa.Column("lead_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("lead_id", "key"),
    )
    with op.batch_alter_table("lead_match_keys", schema=None) as batch_op:
        batch_op.create_index(
            "ix_lead_match_keys_key", ["key", "tenant_id"], unique=False
        )
    _backfill_match_keys()


def _backfill_match_keys() -> None:
    """Gives every stored lead its blocking keys, a chunk of ids at a time."""
    path = get_settings().config_dir / "matching.yaml"
    if not path.is_file():
        return
    rules = load_rules(path)
    names = sorted({field.partition(".")[0] for field in rules.fields})
    leads = sa.table(
        "leads",
        sa.column("id", sa.String),
        sa.column("tenant_id", sa.String),
        *(
            sa.column(name, sa.JSON if name == "custom" else sa.String)
            for name in names
        ),
    )
    keys = sa.table(
        "lead_match_keys",
        sa.column("lead_id", sa.String),
        sa.column("key", sa.String),
        sa.column("tenant_id", sa.String),
    )
    connection = op.get_bind()
    last_id = ""
    while True:
        rows = (
            connection.execute(
                sa.select(leads)
                .where(leads.c.id > last_id)
                .order_by(leads.c.id)
                .limit(BACKFILL_CHUNK)
            )
            .mappings()
            .all()
        )
        if not rows:
            return
        values = [
            {"lead_id": row["id"], "key": key, "tenant_id": row["tenant_id"]}
            for row in rows
            for key in rules.blocking_keys(rules.profile(row))
        ]
        if values:
            connection.execute(keys.insert(), values)
        last_id = rows[-1]["id"]


def downgrade() -> None:
    with op.batch_alter_table("lead_match_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_lead_match_keys_key")
    op.drop_table("lead_match_keys")
    op.drop_table("import_rejects")
    with op.batch_alter_table("imports", schema=None) as batch_op:
        batch_op.drop_index("ix_imports_tenant_created")
    op.drop_table("imports")
