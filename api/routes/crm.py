"""The CRM: its configuration, sync status and failures, retries, previews, syncs."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import httpx
from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from api.auth import KEYED
from api.deps import AdminDep, ContextDep, JsonBody, SettingsDep, StoreDep
from api.problems import problem
from api.routes.workflows import (
    PREFECT_CALL_SECONDS,
    prefect_client,
    prefect_down,
    run_ui_url,
    tenant_tags,
)
from connectors.crm import saved_accounts
from connectors.crm.accounts import (
    CrmAccount,
    Mode,
    Provider,
    parse_credentials,
)
from connectors.crm.errors import CrmConfigError, CrmError
from connectors.crm.preview import preview_waiting
from connectors.crm.saved_accounts import resolve, split_secrets
from connectors.crm.store_budget import StoreBudget
from connectors.crm.sync import retry_parked
from leads.encryption import secret_box
from leads.errors import FieldError
from leads.store import outbox
from leads.store.leads import is_lead_id
from leads.store.paging import decode_cursor, encode_cursor, invalid_cursor
from leads.store.tables import CrmAccount as CrmAccountRow
from leads.store.tables import Lead, OutboxItem

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/crm", tags=["crm"], dependencies=KEYED)

SYNC_DEPLOYMENT = "crm-sync/crm_sync"


class CrmConfigRequest(BaseModel):
    """A CRM account to sync to; tested live before it is saved."""

    model_config = ConfigDict(extra="forbid")

    provider: Provider
    credentials: dict[str, Any] = Field(
        description=(
            "HubSpot: `access_token`, or `client_id`, `client_secret`, "
            "`refresh_token`; `host`. Salesforce: `flow`, `token_url`, `client_id`, "
            "`client_secret`, `username`, `password`, `private_key`, "
            "`refresh_token`, `external_id_field`. Secrets are stored encrypted "
            "and never returned."
        )
    )
    mapping: dict[str, Any] | None = Field(
        None,
        description="A mapping document as in config/crm/<provider>.yaml; "
        "the shipped file when absent.",
    )
    mode: Mode = "upsert"
    tier: Literal["starter", "professional", "enterprise"] = "professional"


class CrmConfigView(BaseModel):
    provider: str
    origin: str = Field(description="`stored`, `environment` or `sandbox`.")
    mode: str
    credentials: dict[str, Any] = Field(
        description="The plain settings; each secret is shown as `***`."
    )
    mapping_fields: list[str]


class BudgetView(BaseModel):
    """The account's shared rate budget, a token bucket every worker draws on."""

    calls_per_window: float | None = Field(
        None,
        description="Calls the account may make in a window: HubSpot's published "
        "limit for its tier, or the calls a second kept to for Salesforce.",
    )
    window_seconds: float | None = Field(
        None, description="The window that limit is counted over."
    )
    calls_available: int | None = Field(
        None,
        description="Calls that may go out at once now. The bucket holds a tenth "
        "of the window's calls and refills the rest evenly across it, so a "
        "burst never spends a window's allowance in its first second.",
    )
    daily_limit: int | None = Field(None, description="Calls a day, where one applies.")
    daily_remaining: int | None = Field(None, description="Of those, left today.")
    blocked_until: datetime | None = Field(
        None, description="No call before this: the CRM said its limit is spent."
    )
    calls_made: int | None = Field(None, description="Calls counted so far.")


class CrmStatus(BaseModel):
    provider: str | None
    origin: str | None
    connected: bool
    detail: str | None = Field(None, description="Why not connected, or who we are.")
    last_sync_at: datetime | None
    pending: int = Field(description="Leads queued for sync, due now or later.")
    synced: int
    retrying: int
    parked: int
    skipped: int = Field(
        description="Leads the CRM was not written for (no e-mail, or the mode)."
    )
    budget: BudgetView


class SyncStarted(BaseModel):
    run_id: UUID
    status_url: str
    ui_url: str
    requeued: int = 0


class FailureView(BaseModel):
    lead_id: str
    status: str
    reason: str | None
    error: str | None = Field(description="The vendor's code and message.")
    attempts: int
    next_attempt_at: datetime | None


class FailurePage(BaseModel):
    data: list[FailureView]
    next_cursor: str | None


class RetryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lead_ids: list[str] | None = Field(
        None, max_length=10_000, description="These parked leads; all when absent."
    )


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lead_ids: list[str] | None = Field(
        None,
        max_length=500,
        description="These leads; when absent, those waiting for sync, oldest first.",
    )
    limit: int = Field(50, ge=1, le=500)


class FieldChangeView(BaseModel):
    field: str
    current: Any
    new: Any


class PreviewItemView(BaseModel):
    lead_id: str
    action: str = Field(description="`create`, `update`, `no_change` or `skip`.")
    crm_id: str | None
    reason: str | None
    changes: list[FieldChangeView]
    unchanged: list[str]
    warnings: list[str]


class PreviewResult(BaseModel):
    provider: str
    data: list[PreviewItemView]


def _config_view(account: CrmAccount) -> CrmConfigView:
    plain, secret = split_secrets(account.credentials)
    return CrmConfigView(
        provider=account.provider,
        origin=account.origin,
        mode=account.mode,
        credentials=plain | {name: "***" for name in secret},
        mapping_fields=sorted(account.mapping.fields),
    )


def _lead_shaped(lead_ids: list[str] | None) -> list[str] | None:
    """The ids that could be a lead's: others match none (PostgreSQL refuses a NUL)."""
    return None if lead_ids is None else [i for i in lead_ids if is_lead_id(i)]


def _no_crm() -> JSONResponse:
    return problem(
        409,
        "no CRM is configured for this tenant: POST /api/crm/config, or set ORCH_CRM",
        slug="no-crm",
    )


def _broken_config(exc: CrmError) -> JSONResponse:
    return problem(
        409,
        f"the tenant's CRM configuration cannot be used: {exc}",
        slug="bad-crm-config",
    )


def _crm_unreachable(exc: CrmError) -> JSONResponse:
    return problem(
        502,
        f"the CRM did not answer as expected: {exc.code}: {exc}",
        slug="crm-error",
    )


@router.post(
    "/config",
    dependencies=[JsonBody],
    response_model=CrmConfigView,
    responses={
        422: {"description": "Bad credentials, mapping, or a failed test."},
        502: {"description": "The CRM could not be reached to test the account."},
    },
)
def save_config(
    body: CrmConfigRequest, store: StoreDep, settings: SettingsDep, context: AdminDep
) -> Any:
    """Tests the CRM account live, checks the mapping against it, and saves it."""
    from connectors.crm.mapping import (
        CrmMapping,
        MappingFileError,
        check_mapping,
        load_mapping_document,
    )

    try:
        credentials = parse_credentials(body.provider, body.credentials)
        if body.mapping is not None:
            mapping: CrmMapping = load_mapping_document(
                body.mapping, origin="the posted mapping"
            )
        else:
            from connectors.crm.accounts import mapping_file
            from connectors.crm.mapping import load_mapping

            mapping = load_mapping(mapping_file(settings, body.provider))
    except MappingFileError as exc:
        return problem(
            422,
            str(exc),
            slug="bad-crm-config",
            errors=[FieldError("mapping", "invalid", str(exc))],
        )
    except CrmConfigError as exc:
        errors = [
            FieldError(
                f"credentials.{name}" if name else "credentials", "invalid", message
            )
            for name, message in exc.problems
        ] or [FieldError("credentials", "invalid", str(exc))]
        return problem(422, str(exc), slug="bad-crm-config", errors=errors)
    if mapping.provider != body.provider:
        return problem(
            422,
            f"the mapping is for {mapping.provider}, the account is {body.provider}",
            slug="bad-crm-config",
            errors=[FieldError("mapping.provider", "mismatch", "must equal provider")],
        )
    account = CrmAccount(
        provider=body.provider,
        credentials=credentials,
        mapping=mapping,
        mode=body.mode,
        tier=body.tier,
        origin="stored",
    )
    connector = account.connect(StoreBudget.for_account(store, account))
    try:
        info = connector.test_connection()
        problems = check_mapping(
            mapping, connector.list_fields(), key_field=connector.key_field
        )
    except CrmError as exc:
        if exc.retryable:
            # Not the credentials' fault: the CRM could not be reached or
            # answered 5xx; nothing was saved, and the same call may pass later.
            return problem(
                502,
                f"the CRM could not be reached to test the account: {exc}",
                slug="crm-unreachable",
            )
        return problem(
            422,
            f"the connection test failed: {exc.code}: {exc}",
            slug="crm-test-failed",
            errors=[FieldError("credentials", exc.code, str(exc))],
        )
    finally:
        connector.close()
    if problems:
        return problem(
            422,
            f"the mapping does not fit this {body.provider} account "
            f"({len(problems)} problems)",
            slug="mapping-does-not-fit",
            errors=[
                FieldError(f"mapping.fields.{p.field}", p.code, p.message)
                for p in problems
            ],
        )
    with store.write(context.tenant_id) as scope:
        saved_accounts.save(
            scope, account, mapping_document=body.mapping, box=secret_box(settings)
        )
    # Leads parked because the old account refused us may pass now.
    retry_parked(store, context.tenant_id)
    logger.info("CRM account saved for tenant %s: %s", context.tenant_id, info.account)
    return _config_view(account)


@router.delete(
    "/config",
    status_code=204,
    response_class=Response,
    responses={404: {"description": "No CRM account was saved for this tenant."}},
)
def forget_config(store: StoreDep, context: AdminDep) -> Response:
    """Forgets the saved CRM account: the environment's (`ORCH_CRM`) applies again."""
    with store.write(context.tenant_id) as scope:
        row = scope.get(CrmAccountRow, context.tenant_id, lock=True)
        if row is None:
            return problem(
                404,
                "no CRM account is saved for this tenant; ORCH_CRM applies",
                slug="no-saved-crm",
            )
        scope.session.delete(row)
    return Response(status_code=204)


@router.get("/config", response_model=CrmConfigView, responses={409: {}})
def read_config(store: StoreDep, settings: SettingsDep, context: ContextDep) -> Any:
    """The tenant's CRM account, secrets masked."""
    try:
        account = resolve(store, context.tenant_id, settings)
    except CrmError as exc:
        return _broken_config(exc)
    if account is None:
        return _no_crm()
    return _config_view(account)


@router.get("/status", response_model=CrmStatus)
def status(store: StoreDep, settings: SettingsDep, context: ContextDep) -> CrmStatus:
    """Whether the CRM answers, when leads were last synced, what waits, the budget."""
    with store.read(context.tenant_id) as scope:
        by_status = dict(
            scope.session.execute(
                select(Lead.crm_sync_status, func.count())
                .where(Lead.tenant_id == context.tenant_id)
                .group_by(Lead.crm_sync_status)
            ).all()
        )
        last_sync = scope.session.scalar(
            select(func.max(Lead.crm_synced_at)).where(
                Lead.tenant_id == context.tenant_id
            )
        )
        pending = scope.session.scalar(
            select(func.count())
            .select_from(OutboxItem)
            .where(
                OutboxItem.tenant_id == context.tenant_id,
                OutboxItem.topic == outbox.CRM_SYNC,
                OutboxItem.status.in_(("pending", "claimed")),
            )
        )
    try:
        account = resolve(store, context.tenant_id, settings)
    except CrmError as exc:
        account, detail = None, f"{exc.code}: {exc}"
    else:
        detail = None
    connected = False
    budget = BudgetView()
    if account is not None:
        shared = StoreBudget.for_account(store, account)
        budget = BudgetView(**shared.state())
        connector = account.connect(shared)
        try:
            detail = connector.test_connection().account
            connected = True
        except CrmError as exc:
            detail = f"{exc.code}: {exc}"
        finally:
            connector.close()
    return CrmStatus(
        provider=account.provider if account else None,
        origin=account.origin if account else None,
        connected=connected,
        detail=detail,
        last_sync_at=last_sync,
        pending=pending or 0,
        synced=by_status.get("synced", 0),
        retrying=by_status.get("retrying", 0),
        parked=by_status.get("parked", 0),
        skipped=by_status.get("skipped", 0),
        budget=budget,
    )


@router.get("/failures", response_model=FailurePage)
def failures(
    store: StoreDep,
    context: ContextDep,
    status: Literal["parked", "retrying"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the last page.")
    ] = None,
) -> FailurePage:
    """Leads the CRM has not taken yet, with the vendor's reason, most recent first."""
    statuses = (status,) if status else ("parked", "retrying")
    query = (
        select(Lead, OutboxItem)
        .join(
            OutboxItem,
            (OutboxItem.lead_id == Lead.id) & (OutboxItem.topic == outbox.CRM_SYNC),
            isouter=True,
        )
        .where(
            Lead.tenant_id == context.tenant_id,
            Lead.crm_sync_status.in_(statuses),
        )
    )
    if cursor is not None:
        moment, after_id = decode_cursor(cursor, 2)
        try:
            when = datetime.fromisoformat(moment)
        except (TypeError, ValueError):
            raise invalid_cursor() from None
        if not isinstance(after_id, str):
            raise invalid_cursor()
        query = query.where(
            (Lead.updated_at < when)
            | ((Lead.updated_at == when) & (Lead.id < after_id))
        )
    with store.read(context.tenant_id) as scope:
        rows = scope.session.execute(
            query.order_by(Lead.updated_at.desc(), Lead.id.desc()).limit(limit + 1)
        ).all()
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1][0]
            next_cursor = encode_cursor([last.updated_at.isoformat(), last.id])
        return FailurePage(
            data=[
                FailureView(
                    lead_id=lead.id,
                    status=lead.crm_sync_status,
                    reason=lead.crm_sync_reason,
                    error=row.last_error if row else None,
                    attempts=row.attempts if row else 0,
                    next_attempt_at=row.available_at
                    if row is not None and row.status == "pending"
                    else None,
                )
                for lead, row in rows
            ],
            next_cursor=next_cursor,
        )


async def _start_sync(
    prefect_url: str, prefect_ui: str, tenant_id: str
) -> tuple[UUID, str] | JSONResponse:
    try:
        # The client retries a hung server for minutes; this answer may not.
        async with (
            asyncio.timeout(PREFECT_CALL_SECONDS),
            prefect_client(prefect_url) as client,
        ):
            deployment = await client.read_deployment_by_name(SYNC_DEPLOYMENT)
            # Tagged, so that its status is the starting tenant's to read.
            run = await client.create_flow_run_from_deployment(
                deployment.id, tags=tenant_tags(tenant_id)
            )
    except ObjectNotFound:
        return problem(
            503,
            "the crm_sync deployment is not served yet (is the flow runner up?); "
            "queued leads stay queued",
            slug="prefect-unavailable",
            headers={"Retry-After": "10"},
        )
    except (httpx.HTTPError, PrefectHTTPStatusError, TimeoutError) as exc:
        return prefect_down(exc)
    return run.id, run_ui_url(prefect_ui, run.id)


@router.post("/sync", status_code=202, response_model=SyncStarted, responses={503: {}})
async def sync_now(settings: SettingsDep, context: ContextDep) -> Any:
    """Starts a CRM sync run now (the schedule and new leads start one too)."""
    started = await _start_sync(
        settings.prefect_url, settings.prefect_ui, context.tenant_id
    )
    if isinstance(started, JSONResponse):
        return started
    run_id, ui_url = started
    return SyncStarted(
        run_id=run_id, status_url=f"/api/workflows/{run_id}/status", ui_url=ui_url
    )


@router.post(
    "/retry",
    dependencies=[JsonBody],
    status_code=202,
    response_model=SyncStarted,
    responses={503: {"description": "Requeued, but no run could be started now."}},
)
async def retry(
    body: RetryRequest, store: StoreDep, settings: SettingsDep, context: ContextDep
) -> Any:
    """Puts parked leads (all, or those named) back in the queue and starts a sync."""
    requeued = await run_in_threadpool(
        retry_parked, store, context.tenant_id, _lead_shaped(body.lead_ids)
    )
    started = await _start_sync(
        settings.prefect_url, settings.prefect_ui, context.tenant_id
    )
    if isinstance(started, JSONResponse):
        return started
    run_id, ui_url = started
    return SyncStarted(
        run_id=run_id,
        status_url=f"/api/workflows/{run_id}/status",
        ui_url=ui_url,
        requeued=requeued,
    )


@router.post(
    "/preview",
    dependencies=[JsonBody],
    response_model=PreviewResult,
    responses={409: {}, 502: {}},
)
def preview_sync(
    body: PreviewRequest, store: StoreDep, settings: SettingsDep, context: ContextDep
) -> Any:
    """Shows, per lead, the CRM's current values and what a sync would change."""
    try:
        account = resolve(store, context.tenant_id, settings)
    except CrmError as exc:
        return _broken_config(exc)
    if account is None:
        return _no_crm()
    try:
        connector = account.connect(StoreBudget.for_account(store, account))
    except CrmError as exc:
        return _broken_config(exc)
    try:
        items = preview_waiting(
            store,
            context.tenant_id,
            account,
            connector,
            default_zone=settings.default_timezone,
            lead_ids=_lead_shaped(body.lead_ids),
            limit=body.limit,
        )
    except CrmError as exc:
        return _crm_unreachable(exc)
    finally:
        connector.close()
    return PreviewResult(
        provider=account.provider,
        data=[
            PreviewItemView.model_validate(item, from_attributes=True) for item in items
        ],
    )
