"""Opaque keyset cursors: the position after the last row a page returned."""

from __future__ import annotations

import base64
import json
from typing import Any

from leads.errors import FieldError, LeadRejected


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
