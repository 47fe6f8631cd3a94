"""The FastAPI application: routes, error handlers, limits and the store's lifetime."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import partial

import anyio
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from api import problems
from api.access_log import AccessLog
from api.audit_log import WAIT_SECONDS, AuditLog, audit_writes, replay_spool
from api.audit_spool import AuditSpool
from api.auth import KeyCache
from api.cors import CrossOrigin, allowed_origins
from api.events import PendingSignal
from api.limits import BodySizeLimit
from api.load_shedding import LoadShedding
from api.rate_limits import RateLimit, rate_buckets
from api.routes import (
    audit,
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
from api.security_headers import SecurityHeaders
from connectors.sandbox.docs import serve_docs
from leads import rulebook
from leads.collector import collect_less_often
from leads.settings import Settings, get_settings
from leads.store import Store
from leads.store.presence import pending_drains_polling
from leads.store.schema import schema_state

logger = logging.getLogger(__name__)

# Swagger UI's script and style sheet, which browsers may cache.
DOCS_ASSETS = "/api/docs/assets"


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

    buckets = rate_buckets(
        settings.rate_limit_per_minute,
        settings.rate_limit_redis_url.get_secret_value()
        if settings.rate_limit_redis_url
        else None,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.store = open_store(settings)
        logger.info("lead store ready (%s)", app.state.store.backend)
        app.state.audit_spool = AuditSpool(settings.data_dir)
        # Records a store that was away refused before the last stop.
        await anyio.to_thread.run_sync(
            replay_spool, app.state.store, app.state.audit_spool
        )
        app.state.audit_writes = audit_writes(app.state.store, app.state.audit_spool)
        await anyio.to_thread.run_sync(rulebook.warm)
        collect_less_often()
        app.state.intake = leads.lead_intake(
            app.state.store, settings.intake_linger_ms / 1000
        )
        app.state.pending.drains_polling = partial(
            pending_drains_polling, app.state.store
        )
        emitter = asyncio.create_task(app.state.pending.run())
        try:
            yield
        finally:
            emitter.cancel()
            with suppress(asyncio.CancelledError):
                await emitter
            # Requests are answered by now; audit records whose callers stopped
            # waiting may still be on their way to the store.
            await app.state.audit_writes.aclose(timeout=WAIT_SECONDS)
            await app.state.intake.aclose(timeout=WAIT_SECONDS)
            app.state.store.dispose()
            buckets.close()

    app = FastAPI(
        title="Automation Orchestrator",
        version=VERSION,
        summary="Lead intake, quality, CRM sync and e-mail automations on Prefect.",
        # Served by serve_docs from packaged files: FastAPI's own pages use a CDN.
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.pending = PendingSignal(f"{settings.prefect_url}/events")
    problems.install(app)
    app.state.keys = KeyCache()
    app.include_router(health.router)
    # Every route of these needs a key (each router says so itself); the
    # webhook routes say it per route, as a delivery proves itself by its
    # signature instead.
    for router in (
        leads.router,
        duplicates.router,
        imports.router,
        crm.router,
        workflows.router,
        email.router,
        audit.router,
    ):
        app.include_router(router)
    app.include_router(webhooks.router)
    # At the root, not under /api: these links go out in e-mails, to people.
    app.include_router(unsubscribe.router)
    serve_docs(app, page="/api/docs", assets=DOCS_ASSETS)
    app.add_middleware(AuditLog)
    # Outside the audit (a refusal writes nothing), inside the access log.
    app.add_middleware(
        RateLimit,  # type: ignore[arg-type]
        buckets=buckets,
    )
    # Inside the access log (a refusal is logged), before any other work.
    app.add_middleware(
        LoadShedding,  # type: ignore[arg-type]
        most=settings.max_requests_in_flight,
    )
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
    # Outermost but for CORS, so 413s, 429s and unhandled errors carry them.
    app.add_middleware(
        SecurityHeaders,  # type: ignore[arg-type]
        https=settings.public_base_url.startswith("https:"),
        cacheable_prefix=f"{DOCS_ASSETS}/",
    )
    app.add_middleware(
        CrossOrigin,  # type: ignore[arg-type]
        # Checked now: a bad entry must stop the app from starting.
        origins=allowed_origins(settings.cors_origins),
    )
    return app
