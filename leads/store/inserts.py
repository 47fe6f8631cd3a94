"""Inserting a row unless one with the same unique key exists, on either database."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite

from leads.store.database import TenantScope
from leads.store.tables import Base


def insert_if_absent(
    scope: TenantScope, model: type[Base], values: dict[str, Any]
) -> Any | None:
    """Inserts one row of the tenant unless a row with its unique key exists.

    `INSERT … ON CONFLICT DO NOTHING`: concurrent callers on PostgreSQL wait
    for each other's transaction and exactly one inserts; SQLite serialises
    writers anyway. Nothing is raised and no savepoint is needed.

    Returns:
        The new row's primary key when this call inserted it; None when a row
        with its unique key was there already.
    """
    statement = _insert(model, scope.session.get_bind().dialect.name)
    inserted = scope.session.execute(
        statement, {"tenant_id": scope.tenant_id, **values}
    ).first()
    return inserted[0] if inserted is not None else None


@lru_cache(maxsize=32)
def _insert(model: type[Base], dialect: str) -> Any:
    """The statement for `model`, built once; its columns come with each call."""
    build = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        build(model.__table__)
        .on_conflict_do_nothing()
        # The row comes back only when inserted.
        .returning(*model.__table__.primary_key.columns)
    )
