"""The FastAPI application: routes, error handlers, limits and the store's lifetime."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from importlib import resources

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.engine import make_url

from api import problems
from api.access_log import AccessLog
from api.events import PendingSignal
from api.limits import BodySizeLimit
from api.routes import (
    crm,
    duplicates,
    email,
    health,
    imports,
    leads,
    unsubscribe,
    webhooks,
    workflows,
)
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
        emitter = asyncio.create_task(app.state.pending.run())
        try:
            yield
        finally:
            emitter.cancel()
            with suppress(asyncio.CancelledError):
                await emitter
            app.state.store.dispose()

    app = FastAPI(
        title="Automation Orchestrator",
        version=VERSION,
        summary="Lead intake, quality, CRM sync and e-mail automations on Prefect.",
        # Served below from packaged files: the default page loads them from a CDN.
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.pending = PendingSignal(f"{settings.prefect_url}/events")
    problems.install(app)
    app.include_router(health.router)
    app.include_router(leads.router)
    app.include_router(duplicates.router)
    app.include_router(imports.router)
    app.include_router(crm.router)
    app.include_router(workflows.router)
    app.include_router(email.router)
    app.include_router(webhooks.router)
    # At the root, not under /api: these links go out in e-mails, to people.
    app.include_router(unsubscribe.router)
    _serve_docs(app)
    app.add_middleware(AccessLog)
    app.add_middleware(
        BodySizeLimit,  # type: ignore[arg-type]
        limit_for=lambda path: (
            # An upload's multipart envelope adds a little to the file itself.
            settings.max_import_bytes + 64 * 1024
            if path == imports.UPLOAD_PATH
            else settings.max_body_bytes
        ),
    )
    return app


DOCS_ASSETS = "/api/docs/assets"


def _serve_docs(app: FastAPI) -> None:
    """Swagger UI at /api/docs from files installed with the package, no CDN."""
    assets = resources.files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/api/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/api/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url="data:,",
        )
