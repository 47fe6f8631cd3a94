"""Dependencies the routes share: settings, the store, the caller's context."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from api.auth import AdminDep, ContextDep
from api.events import PendingSignal
from leads.errors import FieldError, LeadRejected
from leads.settings import Settings
from leads.store import Store

__all__ = [
    "AdminDep",
    "as_utc",
    "ContextDep",
    "JsonBody",
    "PendingDep",
    "SettingsDep",
    "StoreDep",
]


async def get_store(request: Request) -> Store:
    return request.app.state.store


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_pending(request: Request) -> PendingSignal:
    return request.app.state.pending


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PendingDep = Annotated[PendingSignal, Depends(get_pending)]


async def require_json(request: Request) -> None:
    """Refuses a body that is not declared as JSON, saying what to send."""
    declared = request.headers.get("content-type", "")
    media = declared.split(";", 1)[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return
    raise HTTPException(
        415,
        f"the body must be JSON sent with Content-Type: application/json "
        f"(got {declared or 'no Content-Type'})",
    )


JsonBody = Depends(require_json)


def as_utc(name: str, moment: datetime | None) -> datetime | None:
    """A query's datetime in UTC (naive counts as UTC); 422 naming `name` if it
    cannot be one."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise LeadRejected(
            [FieldError(name, "invalid_datetime", "out of range once in UTC")]
        ) from exc
