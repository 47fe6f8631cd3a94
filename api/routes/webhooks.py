"""Webhooks: signed deliveries kept once, answered at once, processed behind."""

from __future__ import annotations

import hashlib
import logging
import os
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.deps import ContextDep, PendingDep, SettingsDep, StoreDep
from api.events import PendingSignal
from api.problems import problem
from connectors.crm.hubspot.webhooks import handlers_for
from leads import clock
from leads.encryption import secret_key
from leads.errors import FieldError
from leads.settings import Settings
from leads.store import Store
from leads.store import webhooks as deliveries
from leads.tracebacks import valueless
from leads.webhooks.events import Event, split
from leads.webhooks.processing import process
from leads.webhooks.signatures import SignatureRejected, verify
from leads.webhooks.sources import (
    SignatureFormat,
    WebhookConfigError,
    WebhookSource,
    configured_sources,
)

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])

SourceName = Annotated[
    str, Path(max_length=64, description="A source named in config/webhooks.yaml.")
]
Status = Literal["pending", "applied", "stale", "ignored", "rejected", "failed"]


class DeliveryReceipt(BaseModel):
    delivery_id: str
    id: int = Field(description="Our id: `GET /api/webhooks/deliveries/{id}`.")
    status: str = Field(
        description="`accepted` (new, processed next) or `duplicate` (already "
        "received; not applied again), with the earlier one's status after it."
    )


class Receipt(BaseModel):
    source: str
    received: int = Field(description="Events in this delivery.")
    new: int
    duplicates: int
    deliveries: list[DeliveryReceipt]


class DeliveryView(BaseModel):
    id: int
    source: str
    delivery_id: str
    event_type: str | None
    status: Status
    reasons: list[dict[str, str]]
    lead_id: str | None
    occurred_at: datetime
    received_at: datetime
    last_received_at: datetime
    receipts: int = Field(description="How many times the sender delivered it.")
    attempts: int
    last_error: str | None
    processed_at: datetime | None
    flow_run_id: str | None

    model_config = {"from_attributes": True}


class DeliveryDetail(DeliveryView):
    body: str = Field(description="The body as received (UTF-8; bad bytes as U+FFFD).")


class DeliveryPage(BaseModel):
    data: list[DeliveryView]
    next_cursor: str | None


class SourceView(BaseModel):
    name: str
    url: str
    payload: str
    signature: str
    signature_header: str | None
    timestamp_header: str | None
    secret_env: str
    secret: Literal["environment", "development", "missing"] = Field(
        description="Where the secret comes from (it is never shown): its "
        "environment variable, derived from the project's key in development, "
        "or missing (deliveries get 503)."
    )


def sources_of(settings: Settings) -> dict[str, WebhookSource]:
    """The configured sources; a broken file is a 503 naming the problem."""
    return configured_sources(settings.config_dir)


def development_key(settings: Settings) -> str | None:
    """The key sources without a secret derive one from (development only)."""
    return secret_key(settings) if settings.env == "development" else None


@router.post(
    "/{source}",
    response_model=Receipt,
    responses={
        200: {"description": "Kept (or a redelivery, acknowledged and ignored)."},
        401: {"description": "The signature or token is missing, stale or wrong."},
        404: {"description": "No such source in config/webhooks.yaml."},
        503: {"description": "The source has no secret, or the config is broken."},
    },
)
async def receive(
    source: SourceName,
    request: Request,
    background: BackgroundTasks,
    store: StoreDep,
    settings: SettingsDep,
    pending: PendingDep,
) -> Any:
    """Verifies a delivery on its raw bytes, keeps it once, and processes it behind."""
    try:
        sources = sources_of(settings)
    except WebhookConfigError as exc:
        return problem(503, str(exc), slug="webhook-config")
    config = sources.get(source)
    if config is None:
        # Callers are not known yet: the sources configured are not theirs to
        # list (GET /api/webhooks/sources does, for the project's users).
        return problem(404, f"no webhook source {source!r}", slug="unknown-source")
    secret = config.secret(development_key(settings))
    if secret is None:
        logger.warning(
            "webhook source %s has no secret: set %s", source, config.secret_env
        )
        return problem(
            503,
            f"webhook source {source!r} is not ready to receive deliveries",
            slug="webhook-secret-missing",
        )

    body = await request.body()
    now = clock.now()
    try:
        verify(
            config,
            secret,
            body,
            request.headers,
            token=request.query_params.get("token"),
            method=request.method,
            url=public_url(settings, request),
            now=now,
        )
    except SignatureRejected as exc:
        # Nothing is stored for a delivery that does not prove its sender.
        logger.warning("webhook %s refused: %s", source, exc.reason)
        where = exc.field or (
            "token"
            if config.signature is SignatureFormat.TOKEN
            else config.signature_header or "signature"
        )
        return problem(
            401,
            str(exc),
            slug="bad-signature",
            errors=[FieldError(where, exc.reason, str(exc))],
        )

    events = split(config, body, request.headers, now)
    kept = await run_in_threadpool(
        _keep, store, config, events, signature_digest(config, request.headers)
    )
    fresh = [item.id for item in kept if item.new]
    if fresh:
        background.add_task(process_new, store, settings, config.tenant, fresh, pending)
    return Receipt(
        source=source,
        received=len(kept),
        new=len(fresh),
        duplicates=len(kept) - len(fresh),
        deliveries=[
            DeliveryReceipt(
                delivery_id=item.delivery_id,
                id=item.id,
                status="accepted" if item.new else f"duplicate ({item.status})",
            )
            for item in kept
        ],
    )


def public_url(settings: Settings, request: Request) -> str:
    """The URL the sender called, as it knows it (behind a proxy, the public one)."""
    query = request.url.query
    url = settings.public_base_url.rstrip("/") + request.url.path
    return f"{url}?{query}" if query else url


def signature_digest(source: WebhookSource, headers: Any) -> str | None:
    """What makes a signed single-event delivery unique, whatever its id says.

    The delivery id may come from a header the signature does not cover; a
    captured request sent again under a new id must still count as a
    redelivery. HubSpot signs a batch of events (each with its id in the
    signed body) and a token signs nothing, so neither has one.
    """
    if source.signature not in (SignatureFormat.ORCHESTRATOR, SignatureFormat.SHA256):
        return None
    signed = f"{headers.get(source.timestamp_header or '', '')}|"
    signed += headers.get(source.signature_header or "", "")
    return hashlib.sha256(signed.encode()).hexdigest()


def _keep(
    store: Store,
    source: WebhookSource,
    events: list[Event],
    digest: str | None,
) -> list[deliveries.Stored]:
    with store.write(source.tenant) as scope:
        return [
            deliveries.keep(
                scope,
                source.name,
                event.delivery_id,
                body=event.body,
                occurred_at=event.occurred_at,
                event_type=event.event_type,
                subject=event.subject,
                signature_digest=digest if len(events) == 1 else None,
            )
            for event in events
        ]


def process_new(
    store: Store,
    settings: Settings,
    tenant_id: str,
    delivery_ids: list[int],
    pending: PendingSignal,
) -> None:
    """Processes just-kept deliveries after the answer went out.

    Whatever fails here leaves the delivery pending; the `webhook_drain`
    deployment takes it up.
    """
    sources = sources_of(settings)
    handlers = handlers_for(store, settings, tenant_id)
    for delivery_id in delivery_ids:
        try:
            verdict = process(store, tenant_id, delivery_id, sources, handlers)
        except Exception as exc:  # noqa: BLE001 - the delivery is kept; the drain retries
            logger.error(
                "webhook delivery %s left for the drain\n%s",
                delivery_id,
                valueless(exc),
            )
            continue
        if verdict is not None and verdict.leaves_work:
            pending.notify()


@router.get("/sources", response_model=list[SourceView], responses={503: {}})
def list_sources(settings: SettingsDep, context: ContextDep) -> Any:
    """Lists the caller's tenant's webhook sources, URLs and signature formats."""
    try:
        sources = sources_of(settings)
    except WebhookConfigError as exc:
        return problem(503, str(exc), slug="webhook-config")
    base = settings.public_base_url.rstrip("/")
    key = development_key(settings)
    return [
        SourceView(
            name=name,
            url=f"{base}/api/webhooks/{name}",
            payload=source.payload.value,
            signature=source.signature.value,
            signature_header=source.signature_header,
            timestamp_header=source.timestamp_header,
            secret_env=source.secret_env,
            secret=(
                "environment"
                if os.environ.get(source.secret_env)
                else "development"
                if source.secret(key) is not None
                else "missing"
            ),
        )
        for name, source in sorted(sources.items())
        if source.tenant == context.tenant_id
    ]


@router.get("/deliveries", response_model=DeliveryPage)
def list_deliveries(
    store: StoreDep,
    context: ContextDep,
    status: Annotated[
        list[Status] | None, Query(description="Only these statuses (repeatable).")
    ] = None,
    source: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> DeliveryPage:
    """Lists deliveries, newest first; `?status=rejected` shows what was refused."""
    with store.read(context.tenant_id) as scope:
        rows, next_cursor = deliveries.page(
            scope, statuses=status or (), source=source, limit=limit, cursor=cursor
        )
        data = [DeliveryView.model_validate(row) for row in rows]
    return DeliveryPage(data=data, next_cursor=next_cursor)


DeliveryPk = Annotated[int, Path(ge=1, lt=2**63, description="Our delivery id.")]


@router.get(
    "/deliveries/{delivery_id}", response_model=DeliveryDetail, responses={404: {}}
)
def get_delivery(delivery_id: DeliveryPk, store: StoreDep, context: ContextDep) -> Any:
    """Shows one delivery with its body as received."""
    with store.read(context.tenant_id) as scope:
        row = deliveries.get(scope, delivery_id)
        if row is None:
            return _no_delivery(delivery_id)
        return DeliveryDetail(
            **DeliveryView.model_validate(row).model_dump(),
            body=row.body.decode("utf-8", errors="replace"),
        )


@router.post(
    "/deliveries/{delivery_id}/retry",
    status_code=202,
    response_model=DeliveryView,
    responses={404: {}, 409: {}},
)
def retry_delivery(
    delivery_id: DeliveryPk,
    background: BackgroundTasks,
    store: StoreDep,
    settings: SettingsDep,
    context: ContextDep,
    pending: PendingDep,
) -> Any:
    """Processes a rejected, ignored or failed delivery again, after a fix."""
    tenant_id = context.tenant_id
    with store.write(tenant_id) as scope:
        row = deliveries.get(scope, delivery_id)
        if row is None:
            return _no_delivery(delivery_id)
        if not deliveries.reopen(scope, delivery_id):
            return problem(
                409,
                f"delivery {delivery_id} is {row.status}; only rejected, ignored "
                "or failed deliveries are processed again",
                slug="delivery-not-retryable",
            )
    background.add_task(process_new, store, settings, tenant_id, [delivery_id], pending)
    with store.read(tenant_id) as scope:
        return DeliveryView.model_validate(deliveries.get(scope, delivery_id))


def _no_delivery(delivery_id: int) -> JSONResponse:
    return problem(
        404, f"no webhook delivery with id {delivery_id}", slug="delivery-not-found"
    )
