"""Opaque keyset cursors: the position after the last row a page returned."""

from __future__ import annotations

import base64
import json
from typing import Any, TypeVar

from sqlalchemy import Select

from leads.errors import FieldError, LeadRejected
from leads.store.database import TenantScope


def encode_cursor(position: list[Any]) -> str:
    """An opaque cursor for a position (JSON-ready values)."""
    raw = json.dumps(position, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[Any]:
    """The position a cursor stands for.

    Raises:
        LeadRejected: the cursor was not made by `encode_cursor` for this list.
    """
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        position = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeError) as exc:
        raise invalid_cursor() from exc
    if not isinstance(position, list) or len(position) != size:
        raise invalid_cursor()
    return position


def invalid_cursor() -> LeadRejected:
    """The error for a cursor this list did not hand out."""
    return LeadRejected(
        [
            FieldError(
                "cursor",
                "invalid_cursor",
                "not a cursor this list returned; start again without one",
            )
        ]
    )


Row = TypeVar("Row")


def page_by_id(
    scope: TenantScope,
    query: Select[tuple[Row]],
    id_column: Any,
    limit: int,
    cursor: str | None,
) -> tuple[list[Row], str | None]:
    """One page of `query`'s rows in id order, and the cursor of the next page.

    For tables whose integer id grows with time (timeline events, review items).
    """
    if cursor is not None:
        (after_id,) = decode_cursor(cursor, 1)
        # bool is an int to Python; ids are 64-bit on PostgreSQL.
        if type(after_id) is not int or not 0 <= after_id < 2**63:
            raise invalid_cursor()
        query = query.where(id_column > after_id)
    rows = list(scope.session.scalars(query.order_by(id_column).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], encode_cursor([rows[limit - 1].id])
