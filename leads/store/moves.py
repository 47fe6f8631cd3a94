"""Moving a row from one state to the next only if it is still in a state it may leave.

Sequence steps and one-off e-mails both go `pending` → `sending` → `sent` (or
`unknown`, `failed`, …) by conditional UPDATEs: when two runs race for a row,
exactly one of them moves it.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from sqlalchemy import Row, bindparam, update

from leads.store.database import TenantScope
from leads.store.tables import Base, utcnow


def move_if_in(
    scope: TenantScope,
    model: type[Base],
    row_id: Any,
    sources: Iterable[str],
    values: dict[str, Any],
) -> Row[Any] | None:
    """Sets `values` on the tenant's row if its status is one of `sources`.

    Returns:
        The row as it is now (a plain row with the table's columns), or None
        when it was in another state (someone else moved it) or is gone.
    """
    values = {**values, "updated_at": utcnow()}
    statement = _statement(
        model, tuple(sorted(map(str, sources))), tuple(sorted(values))
    )
    parameters = {f"new_{name}": value for name, value in values.items()}
    return scope.session.execute(
        statement, {"row_id": row_id, "row_tenant": scope.tenant_id, **parameters}
    ).one_or_none()


@lru_cache(maxsize=128)
def _statement(
    model: type[Base], sources: tuple[str, ...], columns: tuple[str, ...]
) -> Any:
    """The conditional UPDATE, built once per shape.

    A dispatcher moves rows hundreds of times a second; building the statement
    anew each time would cost more than running it.
    """
    table = model.__table__
    return (
        update(table)
        .where(
            table.c.id == bindparam("row_id"),
            table.c.tenant_id == bindparam("row_tenant"),
            table.c.status.in_(sources),
        )
        .values({name: bindparam(f"new_{name}") for name in columns})
        .returning(*table.columns)
    )
