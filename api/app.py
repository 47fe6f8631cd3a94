"""The FastAPI application: routes, error handlers, limits and the store's lifetime."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.engine import make_url

from api import problems
from api.limits import BodySizeLimit
from api.routes import health, leads
from api.routes.health import VERSION
from leads.settings import Settings, get_settings
from leads.store import Store
from leads.store.schema import schema_state

logger = logging.getLogger(__name__)


class StoreNotReady(RuntimeError):
    """The store is unreachable or its schema is behind the code."""


def open_store(settings: Settings) -> Store:
    """Opens the configured store and checks it is migrated to this code's head.

    Raises:
        StoreNotReady: with the remedy (`orchestrator db upgrade`) in the message.
    """
    store = Store(settings.store_url)
    state = schema_state(store.engine)
    where = make_url(store.url).render_as_string(hide_password=True)
    if not state.reachable:
        store.dispose()
        raise StoreNotReady(
            f"the lead store at {where} cannot be reached ({state.error})"
        )
    if not state.current:
        store.dispose()
        raise StoreNotReady(
            f"the lead store at {where} is at revision {state.revision or 'none'}, "
            f"this code needs {state.head}: run `orchestrator db upgrade`"
        )
    return store


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API app for these settings (the environment's when not given)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.store = open_store(settings)
        logger.info("lead store ready (%s)", app.state.store.backend)
        try:
            yield
        finally:
            app.state.store.dispose()

    app = FastAPI(
        title="Automation Orchestrator",
        version=VERSION,
        summary="Lead intake, quality, CRM sync and e-mail automations on Prefect.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.settings = settings
    problems.install(app)
    app.include_router(health.router)
    app.include_router(leads.router)
    app.add_middleware(
        BodySizeLimit,  # type: ignore[arg-type]
        limit_for=lambda _path: settings.max_body_bytes,
    )
    return app
