"""Leads: intake one at a time or in batches, reads, edits, timeline and runs."""

from __future__ import annotations

import json
import logging
from collections.abc import Hashable
from datetime import datetime
from typing import Annotated, Any, Literal, cast
from uuid import UUID

import httpx
from fastapi import APIRouter, Body, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from prefect.client.schemas.objects import FlowRun
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from api.audit_log import RECORDED
from api.auth import KEYED
from api.deps import (
    AdminDep,
    ContextDep,
    JsonBody,
    PendingDep,
    SettingsDep,
    StoreDep,
    as_utc,
)
from api.group_commit import GroupCommit
from api.routes.workflows import read_runs, run_ui_url
from connectors.email.backends import kept_copies
from leads import edits, erasure, rulebook
from leads.encryption import secret_box
from leads.errors import FieldError, LeadRejected
from leads.intake import IntakeResult, prepare, submit_batch, submit_together
from leads.models import (
    LeadInput,
    LeadResult,
    LeadStatus,
    LeadView,
    TimelineEventView,
)
from leads.normalise import email_key
from leads.store import Store, TenantScope, audit, timeline
from leads.store import leads as lead_queries
from leads.store.audit import CallRecord
from leads.store.email_history import email_history
from leads.store.flow_runs import LeadRun, runs_of_lead

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/leads", tags=["leads"], dependencies=KEYED)

CHANNEL = "api"
LeadId = Annotated[str, Path(description="The lead's id.")]
Limit = Annotated[int, Query(ge=1, le=500, description="Most items on one page.")]
Cursor = Annotated[
    str | None, Query(max_length=512, description="`next_cursor` of the last page.")
]


class LeadPage(BaseModel):
    data: list[LeadView]
    next_cursor: str | None


class TimelineEntry(TimelineEventView):
    flow_run_url: str | None = Field(
        description="The flow run that recorded it, in the Prefect UI."
    )


class TimelinePage(BaseModel):
    data: list[TimelineEntry]
    next_cursor: str | None


class LeadRunView(BaseModel):
    run_id: str
    workflow_id: str | None = Field(
        description="The run's deployment; null for a run started without one, "
        "or when Prefect is unreachable or no longer has the run."
    )
    flow_run_name: str | None
    state: str | None = Field(description="Prefect's state type, e.g. `COMPLETED`.")
    state_name: str | None
    start_time: datetime | None
    end_time: datetime | None
    event_kinds: list[str] = Field(
        description="What it did to the lead: the kinds of timeline events it "
        "recorded (`lead.created`, `crm.synced`, `email.sent`, …), first first."
    )
    first_touched_at: datetime = Field(
        description="When the lead store first saw it touch the lead (the order)."
    )
    last_touched_at: datetime
    ui_url: str = Field(description="The run in the Prefect UI.")


class LeadRunPage(BaseModel):
    data: list[LeadRunView]
    next_cursor: str | None
    prefect_reachable: bool = Field(
        description="False when the Prefect server did not answer: the runs "
        "are listed from the lead store, with what only Prefect knows null."
    )


class StepView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str = Field(description="The step's id in config/sequences.yaml.")
    position: int
    template: str | None
    outcome: str = Field(
        description="`planned` (ahead, as configured now), `pending`, `sending`, "
        "`sent`, `unknown`, `failed`, or `skipped_<reason>` "
        "(`skipped_unsubscribed`, `skipped_replied`, …)."
    )
    reason: str | None
    due_at: datetime | None = Field(
        description="When the step was or is due; for planned steps after the "
        "next one, unknown until the one before is sent."
    )
    sent_at: datetime | None
    message_id: str | None
    flow_run_id: str | None


class EnrolmentView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sequence: str
    status: str = Field(description="`active`, `finished`, `stopped` or `parked`.")
    enrolled_at: str | None
    next_check_at: datetime | None = Field(
        description="When the dispatcher looks at it next (the next step's due "
        "time, or the next opening of its send window)."
    )
    last_error: str | None
    steps: list[StepView]


class OneOffView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    category: str
    template: str | None
    status: str
    message_id: str | None
    error: str | None
    created_at: datetime
    sent_at: datetime | None


class LeadEmails(BaseModel):
    sequences: list[EnrolmentView]
    sends: list[OneOffView]


class BatchItemResult(BaseModel):
    index: int
    outcome: str = Field(
        description="`created`, `possible_duplicate`, `updated` or `rejected`."
    )
    lead_id: str | None
    errors: list[dict[str, str]]


class BatchResult(BaseModel):
    results: list[BatchItemResult]


# The most single leads written in one transaction (see `GroupCommit`).
GROUP_MOST = 200


# A posted lead's cleaned values in; its outcome out.
Intake = GroupCommit[dict[str, Any], IntakeResult]


def lead_intake(store: Store, linger_s: float = 0.0) -> Intake:
    """Single leads posted at about the same time, taken in together.

    Grouped per tenant and key: the key is who the group's automated decisions
    (a merge) act for, and each call's audit record is written in the same
    transaction as its lead. A group may wait `linger_s` for company while
    leads come fast (`ORCH_INTAKE_LINGER_MS`, see `GroupCommit`).
    """

    # As the audit middleware names the call: the method and route template.
    [route] = [r for r in router.routes if getattr(r, "endpoint", 0) is create_lead]
    action = f"{next(iter(route.methods))} {route.path_format}"

    def work(group_key: Hashable, group: list[dict[str, Any]]) -> list[Any]:
        tenant_id, key_id = cast(tuple[str, str], group_key)

        def record_calls(scope: TenantScope, outcomes: list[Any]) -> None:
            audit.append_requests(
                scope.session,
                [
                    CallRecord(
                        tenant_id,
                        key_id,
                        action,
                        _status(outcome),
                        "lead",
                        outcome.lead.id,
                    )
                    for outcome in outcomes
                    if isinstance(outcome, IntakeResult)
                ],
            )

        with audit.acting_for(lambda: key_id):
            return submit_together(
                store,
                tenant_id,
                group,
                channel=CHANNEL,
                also=record_calls,
            )

    return GroupCommit(work, most=GROUP_MOST, name="lead intake", linger=linger_s)


def _status(result: IntakeResult) -> int:
    # A possible duplicate is a new lead too: 201, with where to find it.
    return 201 if result.outcome in ("created", "possible_duplicate") else 200


def _result(result: IntakeResult) -> LeadResult:
    view = LeadView.model_validate(result.lead)
    return LeadResult(**view.model_dump(), outcome=result.outcome)


@router.post(
    "",
    dependencies=[JsonBody],
    status_code=201,
    response_model=LeadResult,
    responses={
        200: {
            "model": LeadResult,
            "description": "An existing lead with the same e-mail was updated.",
        },
        201: {"description": "The lead was created; `Location` names it."},
        413: {"description": "The body is over `ORCH_MAX_BODY_BYTES`."},
        422: {"description": "Invalid; every error names its field; nothing written."},
    },
)
async def create_lead(
    lead: LeadInput, request: Request, context: ContextDep
) -> Response:
    """Takes in one lead; the same e-mail again updates the stored lead."""
    # The app's state is read here rather than through dependencies: this is
    # the busiest route, and each dependency costs every call a little.
    state = request.app.state
    values = prepare(lead, state.settings.default_region)
    intake: Intake = state.intake
    result = await intake.submit((context.tenant_id, context.key_id), values)
    state.pending.notify()
    status = _status(result)
    headers = {"Location": f"/api/leads/{result.lead.id}"} if status == 201 else None
    # Recorded with the lead: the audit middleware has nothing to write.
    setattr(request.state, RECORDED, status)
    # Serialised here from the model just built: returned as a model, it
    # would be validated against `response_model` a second time.
    return Response(
        _result(result).model_dump_json(),
        status,
        headers,
        media_type="application/json",
    )


_BATCH_SCHEMA = {
    "oneOf": [
        {"type": "array", "items": {"$ref": "#/components/schemas/LeadInput"}},
        {
            "type": "object",
            "properties": {
                "leads": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/LeadInput"},
                }
            },
            "required": ["leads"],
        },
    ]
}


@router.post(
    "/batch",
    dependencies=[JsonBody],
    response_model=BatchResult,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _BATCH_SCHEMA}},
        }
    },
    responses={413: {"description": "More leads than `ORCH_MAX_BATCH_LEADS`."}},
)
async def create_leads(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    context: ContextDep,
    pending: PendingDep,
) -> BatchResult:
    """Takes in many leads; each item stands alone, answered in input order."""
    items = _batch_items(await request.body(), settings.max_batch_leads)
    results = await run_in_threadpool(
        submit_batch,
        store,
        context.tenant_id,
        items,
        channel=CHANNEL,
        region=settings.default_region,
    )
    pending.notify(sum(r.lead_id is not None for r in results))
    return BatchResult(
        results=[
            BatchItemResult(
                index=r.index,
                outcome=r.outcome,
                lead_id=r.lead_id,
                errors=[e.as_dict() for e in r.errors],
            )
            for r in results
        ]
    )


def _batch_items(raw: bytes, most: int) -> list[Any]:
    try:
        payload = json.loads(raw)
    except RecursionError as exc:
        raise LeadRejected(
            [FieldError("body", "invalid_json", "the JSON is nested too deeply")]
        ) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise LeadRejected(
            [FieldError("body", "invalid_json", f"the body is not JSON: {exc}")]
        ) from exc
    items = payload.get("leads") if isinstance(payload, dict) else payload
    if not isinstance(items, list):
        raise LeadRejected(
            [
                FieldError(
                    "leads",
                    "not_a_list",
                    'send a JSON list of leads, or {"leads": [...]}',
                )
            ]
        )
    if len(items) > most:
        raise HTTPException(
            413, f"{len(items):,} leads sent; a batch holds at most {most:,}"
        )
    return items


@router.get("", response_model=LeadPage)
def list_leads(
    store: StoreDep,
    context: ContextDep,
    email: Annotated[
        str | None, Query(max_length=320, description="Any spelling of the address.")
    ] = None,
    status: LeadStatus | None = None,
    created_after: Annotated[
        datetime | None, Query(description="ISO 8601; without a zone, UTC.")
    ] = None,
    created_before: Annotated[
        datetime | None, Query(description="ISO 8601; without a zone, UTC.")
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> LeadPage:
    """Lists leads newest first, filtered, one page at a time."""
    if email is not None:
        key = email_key(email)
        if key is None:
            raise LeadRejected(
                [FieldError("email", "invalid_email", "not a valid e-mail address")]
            )
        email = key
    filters = lead_queries.LeadFilter(
        email=email,
        status=status.value if status else None,
        created_after=as_utc("created_after", created_after),
        created_before=as_utc("created_before", created_before),
    )
    with store.read(context.tenant_id) as scope:
        found = lead_queries.page(scope, filters, limit, cursor)
        return LeadPage(
            data=[LeadView.model_validate(row) for row in found.rows],
            next_cursor=found.next_cursor,
        )


@router.get("/{lead_id}", response_model=LeadView, responses={404: {}})
def get_lead(lead_id: LeadId, store: StoreDep, context: ContextDep) -> LeadView:
    """Reads one lead."""
    with store.read(context.tenant_id) as scope:
        return LeadView.model_validate(lead_queries.get_lead(scope, lead_id))


@router.put(
    "/{lead_id}",
    dependencies=[JsonBody],
    response_model=LeadView,
    responses={404: {}, 409: {}, 415: {}, 422: {}},
)
def replace_lead(
    lead_id: LeadId,
    body: Annotated[dict[str, Any], Body(description="A whole lead (LeadInput).")],
    store: StoreDep,
    settings: SettingsDep,
    context: ContextDep,
    pending: PendingDep,
) -> LeadView:
    """Replaces a lead's editable fields; a field left out is cleared."""
    with store.write(context.tenant_id) as scope:
        lead = edits.replace(
            scope, lead_id, body, channel=CHANNEL, region=settings.default_region
        )
        view = LeadView.model_validate(lead)
    pending.notify()
    return view


@router.patch(
    "/{lead_id}",
    dependencies=[JsonBody],
    response_model=LeadView,
    responses={404: {}, 409: {}, 422: {}},
    openapi_extra={
        "requestBody": {
            "content": {
                "application/merge-patch+json": {
                    "schema": {"$ref": "#/components/schemas/LeadInput"}
                }
            }
        }
    },
)
def patch_lead(
    lead_id: LeadId,
    body: Annotated[
        dict[str, Any], Body(description="Fields to change (merge patch).")
    ],
    store: StoreDep,
    settings: SettingsDep,
    context: ContextDep,
    pending: PendingDep,
) -> LeadView:
    """Changes the fields sent (JSON merge patch); null clears a field."""
    with store.write(context.tenant_id) as scope:
        lead = edits.patch(
            scope, lead_id, body, channel=CHANNEL, region=settings.default_region
        )
        view = LeadView.model_validate(lead)
    pending.notify()
    return view


@router.get("/{lead_id}/timeline", response_model=TimelinePage, responses={404: {}})
def lead_timeline(
    lead_id: LeadId,
    store: StoreDep,
    settings: SettingsDep,
    context: ContextDep,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> TimelinePage:
    """What happened to the lead, oldest first."""
    with store.read(context.tenant_id) as scope:
        lead_queries.get_lead(scope, lead_id)
        rows, next_cursor = timeline.page(scope, lead_id, limit, cursor)
        return TimelinePage(
            data=[
                TimelineEntry(
                    **TimelineEventView.model_validate(row).model_dump(),
                    flow_run_url=(
                        run_ui_url(settings.prefect_ui, row.flow_run_id)
                        if row.flow_run_id
                        else None
                    ),
                )
                for row in rows
            ],
            next_cursor=next_cursor,
        )


@router.get("/{lead_id}/runs", response_model=LeadRunPage, responses={404: {}})
async def lead_runs(
    lead_id: LeadId,
    store: StoreDep,
    settings: SettingsDep,
    context: ContextDep,
    limit: Annotated[
        # Prefect answers at most 200 runs a call; a page is read in one.
        int,
        Query(ge=1, le=200, description="Most items on one page."),
    ] = 50,
    cursor: Cursor = None,
) -> LeadRunPage:
    """The flow runs that touched the lead, newest first, with their state."""
    runs, next_cursor = await run_in_threadpool(
        _runs_of_lead, store, context.tenant_id, lead_id, limit, cursor
    )
    ids = {run.flow_run_id: _uuid(run.flow_run_id) for run in runs}
    try:
        found, workflows = await read_runs(
            settings.prefect_url, [i for i in ids.values() if i is not None]
        )
        reachable = True
    except (httpx.HTTPError, TimeoutError) as exc:
        logger.warning(
            "Prefect server unreachable, runs listed from the lead store: %s",
            exc.__class__.__name__,
        )
        found, workflows, reachable = {}, {}, False

    data = []
    for run in runs:
        run_uuid = ids[run.flow_run_id]
        known = found.get(run_uuid) if run_uuid else None
        data.append(_run_view(run, known, workflows, settings.prefect_ui))
    return LeadRunPage(data=data, next_cursor=next_cursor, prefect_reachable=reachable)


def _run_view(
    run: LeadRun, known: FlowRun | None, workflows: dict[UUID, str], prefect_ui: str
) -> LeadRunView:
    """The store's record of a run, with Prefect's when Prefect has the run."""
    state = known.state if known else None
    deployment_id = known.deployment_id if known else None
    return LeadRunView(
        run_id=run.flow_run_id,
        workflow_id=workflows.get(deployment_id) if deployment_id else None,
        flow_run_name=known.name if known else None,
        state=state.type.value if state else None,
        state_name=state.name if state else None,
        start_time=known.start_time if known else None,
        end_time=known.end_time if known else None,
        event_kinds=run.event_kinds,
        first_touched_at=run.first_touched_at,
        last_touched_at=run.last_touched_at,
        ui_url=run_ui_url(prefect_ui, run.flow_run_id),
    )


def _runs_of_lead(
    store: Store, tenant_id: str, lead_id: str, limit: int, cursor: str | None
) -> tuple[list[LeadRun], str | None]:
    with store.read(tenant_id) as scope:
        lead_queries.get_lead(scope, lead_id)
        return runs_of_lead(scope, lead_id, limit, cursor)


def _uuid(run_id: str) -> UUID | None:
    # The column is free text; a value Prefect could not have made is listed
    # from the store alone.
    try:
        return UUID(run_id)
    except ValueError:
        return None


@router.get("/{lead_id}/emails", response_model=LeadEmails, responses={404: {}})
def lead_emails(
    lead_id: LeadId, store: StoreDep, context: ContextDep, settings: SettingsDep
) -> LeadEmails:
    """The lead's sequences with each step's outcome, and its one-off e-mails."""
    with store.read(context.tenant_id) as scope:
        lead = lead_queries.get_lead(scope, lead_id)
        enrolments, sends = email_history(
            scope, lead, rulebook.sequences(), settings.default_timezone
        )
        return LeadEmails(
            sequences=[EnrolmentView.model_validate(e) for e in enrolments],
            sends=[OneOffView.model_validate(send) for send in sends],
        )


class ErasureResult(BaseModel):
    lead_id: str
    removed: dict[str, int] = Field(
        description="Rows deleted by kind (`leads`, `timeline_events`, "
        "`outbox_items`, `sequence_steps`, `email_sends`, `email_events`, "
        "`match_keys`, `duplicate_reviews`, `import_rejects`, `email_files` (the "
        "file e-mail backend's copies), …); "
        "`webhook_deliveries` were emptied, kept as ids so a redelivery is "
        "not taken in again; `duplicate_flags` were taken off other leads."
    )
    suppressed: int = Field(
        description="Hashed `erased` suppression entries added, one per address "
        "the person used: no marketing e-mail goes to it again."
    )
    crm_erasure: Literal["queued", "not_needed"] = Field(
        description="`queued`: the CRM sync deletes the person from the CRM, "
        "retrying while the CRM is down, and records `crm.erased` in the audit "
        "log; `not_needed`: the CRM was never written."
    )


@router.delete(
    "/{lead_id}",
    response_model=ErasureResult,
    responses={
        404: {"description": "No such lead for this key's tenant (or erased)."},
        422: {"description": "`erase=true` was not sent."},
    },
)
def erase_lead(
    lead_id: LeadId,
    store: StoreDep,
    settings: SettingsDep,
    context: AdminDep,
    pending: PendingDep,
    erase: Annotated[
        bool,
        Query(
            description="Must be true: deleting a lead erases the person for "
            "good, everywhere the product kept them."
        ),
    ] = False,
) -> ErasureResult:
    """Erases the person (right to be forgotten); needs an admin key."""
    if not erase:
        raise LeadRejected(
            [
                FieldError(
                    "erase",
                    "erase_required",
                    "deleting a lead always erases the person (the store, the "
                    "CRM, kept webhooks and import rejects) and cannot be undone; "
                    "send erase=true to confirm",
                )
            ]
        )
    with store.write(context.tenant_id) as scope:
        done = erasure.erase(
            scope,
            lead_id,
            actor=context.key_id or "system",
            seal=secret_box(settings).seal,
            trigger={"via": "api"},
            forget_messages=kept_copies(settings),
        )
    if done.crm_erasure_queued:
        pending.notify()
    return ErasureResult(
        lead_id=done.lead_id,
        removed=done.removed,
        suppressed=done.suppressed,
        crm_erasure="queued" if done.crm_erasure_queued else "not_needed",
    )
