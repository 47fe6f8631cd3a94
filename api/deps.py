"""Dependencies the routes share: settings, the store, the caller's context."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.auth import RequestContext, request_context
from leads.settings import Settings
from leads.store import Store


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ContextDep = Annotated[RequestContext, Depends(request_context)]
