"""Workflows: list the automations, start one by name, report how a run went."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path as FilePath
from typing import Annotated, Any
from uuid import UUID

import httpx
import yaml
from fastapi import APIRouter, Header, Path, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from jsonschema import Draft202012Validator
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    DeploymentFilterName,
    FlowFilter,
    FlowFilterId,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterIdempotencyKey,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.sorting import LogSort
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.auth import KEYED, RequestContext
from api.deps import ContextDep, JsonBody, PendingDep, SettingsDep, StoreDep
from api.events import PendingSignal
from api.problems import problem
from leads.encryption import secret_key
from leads.errors import FieldError, LeadRejected
from leads.intake import submit
from leads.models import LeadInput
from leads.run_parameters import ParameterError, PersonalDataInParameters, json_ready
from leads.sequences import SequenceConfigError, load_sequences
from leads.settings import DEFAULT_TENANT, Settings
from leads.store import Store, outbox
from leads.store.leads import get_lead
from leads.store.tables import LeadImport
from leads.store.trigger_keys import Hold, note_lead, release, try_hold

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/workflows", tags=["workflows"], dependencies=KEYED)

# The single list of deployments, at the project's root.
PREFECT_YAML = FilePath(__file__).resolve().parents[2] / "prefect.yaml"
# How long a read that can do without Prefect waits for it (the client's own
# timeout is a minute, and a hung server must not hang a listing).
PREFECT_LOOKUP_SECONDS = 5.0
# How long a call that needs Prefect waits before answering 503 (a run started
# with an Idempotency-Key can be asked for again safely).
PREFECT_CALL_SECONDS = 15.0
# Log lines a run's status carries.
STATUS_LOG_LINES = 20
# Keys are ours to bound: printable ASCII, long enough for any UUID or hash.
IDEMPOTENCY_KEY_LENGTH = 255
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Where our part of a flow run's `context` lives on the Prefect server.
RUN_CONTEXT = "orchestrator"
# A run started for a tenant carries its tag, and its status is shown to that
# tenant only. Runs no tenant started (schedules, automations) carry none and
# are the operator's, shown to the default tenant.
TENANT_TAG = "orchestrator-tenant:"


class TriggerRequest(BaseModel):
    # A misspelt key (`leadid`) must not quietly turn a one-lead run into a drain.
    model_config = ConfigDict(extra="forbid")

    workflow_id: str = Field(
        description="A deployment name from prefect.yaml, e.g. `welcome_sequence`.",
        max_length=200,
    )
    lead_id: str | None = Field(None, max_length=64)
    lead_data: LeadInput | None = Field(
        None, description="A lead to take in first; its id is then passed on."
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Flow parameters over the deployment's defaults (ids, counts).",
    )

    @model_validator(mode="after")
    def _one_lead(self) -> TriggerRequest:
        if self.lead_id is not None and self.lead_data is not None:
            raise ValueError("send `lead_id` or `lead_data`, not both")
        return self


class TriggerResult(BaseModel):
    run_id: UUID
    workflow_id: str
    lead_id: str | None
    status_url: str
    ui_url: str


class TaskRunView(BaseModel):
    name: str
    state: str | None
    start_time: Any
    end_time: Any


class LogLine(BaseModel):
    timestamp: datetime
    level: str = Field(description="`DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL`.")
    message: str


class RunStatus(BaseModel):
    run_id: UUID
    workflow_id: str | None
    state: str | None = Field(description="Prefect's state type, e.g. `COMPLETED`.")
    state_name: str | None
    message: str | None
    start_time: Any
    end_time: Any
    task_runs: list[TaskRunView]
    logs: list[LogLine] = Field(
        description=f"The run's last {STATUS_LOG_LINES} log lines (its tasks' "
        "too), oldest first."
    )
    ui_url: str


class Schedule(BaseModel):
    cron: str | None
    interval_seconds: float | None
    rrule: str | None
    timezone: str | None
    active: bool


class Trigger(BaseModel):
    type: str
    enabled: bool
    events: list[str] = Field(description="The event names it reacts to.")


class Concurrency(BaseModel):
    limit: int | None = Field(description="Runs at once; more wait or are cancelled.")
    collision_strategy: str | None = Field(
        description="`ENQUEUE` (wait) or `CANCEL_NEW`; Prefect's default "
        "(`ENQUEUE`) when not set."
    )
    grace_period_seconds: int | None


class WorkflowView(BaseModel):
    workflow_id: str = Field(description="The deployment's name in prefect.yaml.")
    description: str | None
    entrypoint: str
    parameters: dict[str, Any] = Field(description="Defaults from prefect.yaml.")
    schedules: list[Schedule]
    triggers: list[Trigger]
    concurrency: Concurrency | None
    registered: bool | None = Field(
        description="Whether the Prefect server has it (the flow runner registers "
        "every deployment when it starts); null when Prefect is unreachable."
    )
    paused: bool | None
    status: str | None = Field(
        description="Prefect's `READY` (a runner polls for its runs) or `NOT_READY`."
    )
    deployment_id: UUID | None
    flow_name: str | None
    accepted_parameters: list[str] | None = Field(
        description="What `parameters` of a trigger may name, from the flow's "
        "signature as registered."
    )
    ui_url: str | None = Field(description="The deployment in the Prefect UI.")


class WorkflowList(BaseModel):
    data: list[WorkflowView] = Field(description="In prefect.yaml's order.")
    next_cursor: str | None = Field(
        description="Always null: every workflow fits on one page."
    )
    prefect_reachable: bool = Field(
        description="False when the Prefect server did not answer: what comes "
        "from prefect.yaml is there, what only Prefect knows is null."
    )


def prefect_client(url: str) -> PrefectClient:
    return PrefectClient(api=url)


def run_ui_url(prefect_ui: str, run_id: UUID | str) -> str:
    """The run's page in the Prefect UI at `prefect_ui` (`Settings.prefect_ui`)."""
    return f"{prefect_ui}/runs/flow-run/{run_id}"


def deployment_ui_url(prefect_ui: str, deployment_id: UUID) -> str:
    """The deployment's page in the Prefect UI at `prefect_ui`."""
    return f"{prefect_ui}/deployments/deployment/{deployment_id}"


def tenant_tags(tenant_id: str) -> list[str]:
    """The tags of a flow run started for `tenant_id`."""
    return [TENANT_TAG + tenant_id]


def run_belongs_to(run: FlowRun, tenant_id: str) -> bool:
    """Whether `tenant_id` may see the run: its tag, or the default's if untagged."""
    owners = {
        tag.removeprefix(TENANT_TAG) for tag in run.tags if tag.startswith(TENANT_TAG)
    }
    return tenant_id in owners if owners else tenant_id == DEFAULT_TENANT


def prefect_down(exc: Exception) -> JSONResponse:
    logger.warning("Prefect server unreachable: %s", exc.__class__.__name__)
    return problem(
        503,
        "the Prefect server cannot be reached, so no run was started and nothing "
        "was written; POST /api/leads still takes leads, and the scheduled drains "
        "greet them once it is back",
        slug="prefect-unavailable",
        headers={"Retry-After": "10"},
    )


class WorkflowFileError(RuntimeError):
    """prefect.yaml is missing or is not YAML."""


@router.get(
    "",
    response_model=WorkflowList,
    responses={500: {"description": "prefect.yaml cannot be read."}},
)
async def list_workflows(settings: SettingsDep) -> Any:
    """Lists the automations in prefect.yaml, with what Prefect knows of each."""
    try:
        workflows = await run_in_threadpool(read_workflows, PREFECT_YAML)
    except WorkflowFileError as exc:
        logger.error("%s", exc)
        return problem(500, str(exc), slug="workflows-unreadable")

    try:
        async with asyncio.timeout(PREFECT_LOOKUP_SECONDS):
            async with prefect_client(settings.prefect_url) as client:
                registered = await _registered(
                    client, [w.workflow_id for w in workflows]
                )
    except (httpx.HTTPError, TimeoutError) as exc:
        logger.warning(
            "Prefect server unreachable, workflows listed from prefect.yaml: %s",
            exc.__class__.__name__,
        )
        return WorkflowList(data=workflows, next_cursor=None, prefect_reachable=False)

    for workflow in workflows:
        found = registered.get(workflow.workflow_id)
        workflow.registered = found is not None
        if found is None:
            continue
        deployment, flow_name = found
        schema = deployment.parameter_openapi_schema or {}
        workflow.paused = deployment.paused
        workflow.status = deployment.status.value if deployment.status else None
        workflow.deployment_id = deployment.id
        workflow.flow_name = flow_name
        workflow.accepted_parameters = sorted(schema.get("properties", {}))
        workflow.ui_url = deployment_ui_url(settings.prefect_ui, deployment.id)
    return WorkflowList(data=workflows, next_cursor=None, prefect_reachable=True)


async def _registered(
    client: PrefectClient, names: list[str]
) -> dict[str, tuple[DeploymentResponse, str | None]]:
    """The Prefect server's deployment of each name, and its flow's name."""
    deployments = await client.read_deployments(
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=names))
    )
    flows = await client.read_flows(
        flow_filter=FlowFilter(id=FlowFilterId(any_=[d.flow_id for d in deployments]))
    )
    flow_names = {flow.id: flow.name for flow in flows}
    # Two flows may each have a deployment of one name; the newer one wins.
    newest_last = sorted(deployments, key=lambda d: str(d.updated or d.created or ""))
    return {d.name: (d, flow_names.get(d.flow_id)) for d in newest_last}


def read_workflows(path: FilePath) -> list[WorkflowView]:
    """The deployments prefect.yaml declares, in file order, without Prefect's view.

    Keys the listing does not show (`work_pool`, `pull`, `tags`, …) are skipped,
    and anchors and merge keys resolve as YAML defines them. An entry without a
    name or an entrypoint cannot be served, so it is left out with a warning.

    Raises:
        WorkflowFileError: the file is missing or is not YAML.
    """
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WorkflowFileError(
            f"{path.name} cannot be read ({exc.__class__.__name__}); it lists "
            "the workflows and belongs at the project's root"
        ) from exc
    except yaml.YAMLError as exc:
        raise WorkflowFileError(f"{path.name} is not valid YAML: {exc}") from exc

    entries = document.get("deployments") if isinstance(document, dict) else None
    workflows = []
    for position, entry in enumerate(entries or [], start=1):
        if not isinstance(entry, dict) or not entry.get("name"):
            logger.warning("deployment #%s in %s has no name", position, path.name)
            continue
        if not entry.get("entrypoint"):
            logger.warning("deployment %r has no entrypoint", entry["name"])
            continue
        workflows.append(_declared(entry))
    return workflows


def _declared(entry: dict[str, Any]) -> WorkflowView:
    parameters = entry.get("parameters")
    description = entry.get("description")
    return WorkflowView(
        workflow_id=str(entry["name"]),
        description=str(description).strip() if description else None,
        entrypoint=str(entry["entrypoint"]),
        parameters=parameters if isinstance(parameters, dict) else {},
        schedules=[_schedule(s) for s in _dicts(entry.get("schedules"))],
        triggers=[_trigger(t) for t in _dicts(entry.get("triggers"))],
        concurrency=_concurrency(entry.get("concurrency_limit")),
        registered=None,
        paused=None,
        status=None,
        deployment_id=None,
        flow_name=None,
        accepted_parameters=None,
        ui_url=None,
    )


def _dicts(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _schedule(spec: dict[str, Any]) -> Schedule:
    interval = spec.get("interval")
    return Schedule(
        cron=_text(spec.get("cron")),
        interval_seconds=interval if isinstance(interval, int | float) else None,
        rrule=_text(spec.get("rrule")),
        timezone=_text(spec.get("timezone")),
        active=spec.get("active", True) is not False,
    )


def _trigger(spec: dict[str, Any]) -> Trigger:
    return Trigger(
        type=str(spec.get("type", "event")),
        enabled=spec.get("enabled", True) is not False,
        events=list(dict.fromkeys(_expected(spec))),
    )


def _expected(spec: dict[str, Any]) -> Iterable[str]:
    """The event names a trigger waits for, those of a compound's parts too."""
    expect = spec.get("expect")
    if isinstance(expect, list):
        yield from (str(name) for name in expect)
    for part in _dicts(spec.get("triggers")):
        yield from _expected(part)


def _concurrency(value: object) -> Concurrency | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return Concurrency(
            limit=value, collision_strategy=None, grace_period_seconds=None
        )
    if not isinstance(value, dict):
        return None
    limit, grace = value.get("limit"), value.get("grace_period_seconds")
    return Concurrency(
        limit=limit if isinstance(limit, int) else None,
        collision_strategy=_text(value.get("collision_strategy")),
        grace_period_seconds=grace if isinstance(grace, int) else None,
    )


@router.post(
    "/trigger",
    dependencies=[JsonBody],
    status_code=202,
    response_model=TriggerResult,
    responses={
        202: {
            "description": "The run was started; or, for an `Idempotency-Key` "
            "sent before with the same body, the run it started "
            "(`Idempotent-Replayed: true`)."
        },
        404: {"description": "Unknown workflow, or a lead or import not the tenant's."},
        409: {
            "description": "Another request with this `Idempotency-Key` is "
            "still being handled (`Retry-After` says when to send it again)."
        },
        422: {
            "description": "Invalid body or `Idempotency-Key`, or the key was "
            "used before with another body."
        },
        503: {},
    },
)
async def trigger(
    body: TriggerRequest,
    response: Response,
    store: StoreDep,
    settings: SettingsDep,
    context: ContextDep,
    pending: PendingDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=IDEMPOTENCY_HEADER,
            description="Makes a retried trigger safe: the same key and body "
            "again answer with the first run and start nothing (the key is "
            "kept per workflow by Prefect for as long as the run). 1 to "
            f"{IDEMPOTENCY_KEY_LENGTH} printable ASCII characters; a UUID does.",
        ),
    ] = None,
) -> Any:
    """Starts a run of the named workflow (for one lead, or a lead taken in first)."""
    run_key = None
    if idempotency_key is not None:
        run_key = flow_run_key(idempotency_key, context.tenant_id, body.workflow_id)
    try:
        async with (
            asyncio.timeout(PREFECT_CALL_SECONDS),
            prefect_client(settings.prefect_url) as client,
        ):
            deployments = {d.name: d for d in await client.read_deployments()}
    except (httpx.HTTPError, TimeoutError) as exc:
        return prefect_down(exc)
    deployment = deployments.get(body.workflow_id)
    if deployment is None:
        known = ", ".join(sorted(deployments)) or "none yet (is the flow runner up?)"
        return problem(
            404,
            f"unknown workflow {body.workflow_id!r}; known: {known}",
            slug="unknown-workflow",
        )

    # Everything is checked before anything is written.
    schema = deployment.parameter_openapi_schema or {}
    accepted = schema.get("properties", {})
    _check_parameters(body, accepted)
    _check_against_schema(
        settings, schema, dict(deployment.parameters or {}) | body.parameters
    )
    imported = body.parameters.get("import_id")
    if imported is not None and not await run_in_threadpool(
        _owns_import, store, context.tenant_id, str(imported)
    ):
        # Another tenant's import is answered as one that does not exist.
        return problem(404, f"no import with id {imported!r}", slug="import-not-found")
    if context.tenant_id != DEFAULT_TENANT and not _for_one(body, accepted):
        return _across_tenants(body.workflow_id)

    if run_key is None:
        return await _start(body, deployment, None, None, store, settings, context,
                            pending)  # fmt: skip
    # Requests with one key wait for each other here, on any API replica, so
    # a concurrent retry finds the first one's run instead of taking the lead
    # in again.
    hold = await _hold(store, context.tenant_id, run_key)
    if hold is None:
        return problem(
            409,
            f"a request with this {IDEMPOTENCY_HEADER} is still being handled; "
            "send it again in a moment",
            slug="idempotency-key-busy",
            headers={"Retry-After": "1"},
        )
    try:
        request_print = _fingerprint(settings, body)
        # A replay is answered before the lead is taken in again.
        try:
            async with asyncio.timeout(PREFECT_CALL_SECONDS):
                earlier = await _run_of_key(settings, deployment, run_key)
        except (httpx.HTTPError, TimeoutError) as exc:
            return prefect_down(exc)
        if earlier is not None:
            return _replayed(earlier, body, request_print, settings, response)
        return await _start(
            body, deployment, run_key, request_print, store, settings, context,
            pending, hold,
        )  # fmt: skip
    finally:
        await run_in_threadpool(release, store, context.tenant_id, hold)


def _for_one(body: TriggerRequest, accepted: dict[str, Any]) -> bool:
    """Whether the run is bound to one lead or import (the caller's, checked)."""
    lead = "lead_id" in accepted and (body.lead_id or body.lead_data) is not None
    # A null import_id is the sweep of every tenant's imports.
    imported = body.parameters.get("import_id") is not None
    return lead or ("import_id" in accepted and imported)


def _across_tenants(workflow_id: str) -> JSONResponse:
    # A drain (crm_sync, webhook_drain, a sequence without a lead, ...) works
    # on every tenant's rows, and its logs may name their ids: it is the
    # installation's, whose tenant untagged runs belong to (`run_belongs_to`).
    message = (
        f"{workflow_id!r} run this way works on every tenant's leads; only a key "
        f"of tenant {DEFAULT_TENANT!r} (the installation's own) may start it. "
        "Send `lead_id` or `lead_data` (or an `import_id` parameter) to run it "
        "for one of yours, where it takes one"
    )
    return problem(
        403,
        message,
        slug="cross-tenant-workflow",
        errors=[FieldError("workflow_id", "cross_tenant", message)],
    )


# How long a request waits for another holding its Idempotency-Key: longer
# than the holder's two Prefect calls can take.
HOLD_WAIT_SECONDS = 2 * PREFECT_CALL_SECONDS + 5


async def _hold(store: Store, tenant_id: str, run_key: str) -> Hold | None:
    """Holds the key, waiting while another request holds it; None if it never ends."""
    deadline = asyncio.get_running_loop().time() + HOLD_WAIT_SECONDS
    while True:
        hold = await run_in_threadpool(try_hold, store, tenant_id, run_key)
        if hold is not None or asyncio.get_running_loop().time() > deadline:
            return hold
        await asyncio.sleep(0.05)


async def _start(
    body: TriggerRequest,
    deployment: DeploymentResponse,
    run_key: str | None,
    request_print: str | None,
    store: Store,
    settings: Settings,
    context: RequestContext,
    pending: PendingSignal,
    hold: Hold | None = None,
) -> Any:
    """Takes the lead in (if sent, and no earlier holder did), then starts the run."""
    accepted = (deployment.parameter_openapi_schema or {}).get("properties", {})

    lead_id = body.lead_id
    if hold is not None and hold.lead_id is not None:
        # A request with this key took the lead in, then died before its run.
        lead_id = hold.lead_id
    elif body.lead_data is not None:
        result = await run_in_threadpool(
            submit,
            store,
            context.tenant_id,
            body.lead_data,
            channel="api",
            region=settings.default_region,
        )
        lead_id = result.lead.id
        if hold is not None:
            await run_in_threadpool(note_lead, store, context.tenant_id, hold, lead_id)
        # Its CRM sync (and any other sequence it entered) starts at once,
        # as for a lead posted to /api/leads.
        pending.notify()
    if lead_id is not None:
        sequence = (deployment.parameters or {}).get("sequence")
        await run_in_threadpool(
            _prepare_lead, store, context.tenant_id, lead_id, sequence
        )

    parameters = dict(deployment.parameters or {}) | body.parameters
    if lead_id is not None and "lead_id" in accepted:
        parameters["lead_id"] = lead_id
    parameters = json_ready(parameters)
    try:
        async with (
            asyncio.timeout(PREFECT_CALL_SECONDS),
            prefect_client(settings.prefect_url) as client,
        ):
            run = await client.create_flow_run_from_deployment(
                deployment.id,
                parameters=parameters,
                idempotency_key=run_key,
                tags=tenant_tags(context.tenant_id),
                context=(
                    {RUN_CONTEXT: {"request": request_print, "lead_id": lead_id}}
                    if run_key is not None
                    else None
                ),
            )
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code >= 500:
            return prefect_down(exc)
        return problem(
            422,
            f"the Prefect server refused the run: {exc.response.text[:300]}",
            slug="run-refused",
            errors=[FieldError("parameters", "refused_by_prefect", "see detail")],
        )
    except (httpx.HTTPError, TimeoutError) as exc:
        return prefect_down(exc)
    if run_key is not None and _request_print(run) != request_print:
        # Another request with this key and another body won the race.
        return _key_reused(body.workflow_id)

    return TriggerResult(
        run_id=run.id,
        workflow_id=body.workflow_id,
        lead_id=lead_id,
        status_url=f"/api/workflows/{run.id}/status",
        ui_url=run_ui_url(settings.prefect_ui, run.id),
    )


def flow_run_key(sent: str, tenant_id: str, workflow_id: str) -> str:
    """The flow run idempotency key for a caller's key, one namespace per tenant.

    Prefect keeps a key unique per flow, and several workflows run one flow
    (the sequence deployments): the workflow is part of the key too.

    Raises:
        LeadRejected: the key is empty, too long or not printable ASCII.
    """
    if not 0 < len(sent) <= IDEMPOTENCY_KEY_LENGTH or not all(
        " " <= character <= "~" for character in sent
    ):
        raise LeadRejected(
            [
                FieldError(
                    IDEMPOTENCY_HEADER,
                    "invalid_idempotency_key",
                    f"1 to {IDEMPOTENCY_KEY_LENGTH} printable ASCII characters; "
                    "a UUID does",
                )
            ]
        )
    scope = json.dumps([tenant_id, workflow_id, sent], separators=(",", ":"))
    return "api-trigger:" + hashlib.sha256(scope.encode()).hexdigest()


async def _run_of_key(
    settings: Settings, deployment: DeploymentResponse, run_key: str
) -> FlowRun | None:
    """The run an earlier trigger started with this key, if any."""
    async with prefect_client(settings.prefect_url) as client:
        found = await client.read_flow_runs(
            flow_filter=FlowFilter(id=FlowFilterId(any_=[deployment.flow_id])),
            flow_run_filter=FlowRunFilter(
                idempotency_key=FlowRunFilterIdempotencyKey(any_=[run_key])
            ),
            limit=1,
        )
    return found[0] if found else None


def _fingerprint(settings: Settings, body: TriggerRequest) -> str:
    """A keyed digest of the request body, kept on the run to recognise a replay.

    Keyed with the secret key because the body may hold a lead's details, and
    Prefect's run records must not let anyone recover them.
    """
    canonical = json.dumps(
        body.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
    )
    return hmac.new(
        secret_key(settings).encode(), canonical.encode(), hashlib.sha256
    ).hexdigest()


def _request_print(run: FlowRun) -> object:
    ours = (run.context or {}).get(RUN_CONTEXT)
    return ours.get("request") if isinstance(ours, dict) else None


def _replayed(
    run: FlowRun,
    body: TriggerRequest,
    request_print: str,
    settings: Settings,
    response: Response,
) -> Any:
    """The first answer again for a replayed key, or 422 if its body differs."""
    if _request_print(run) != request_print:
        return _key_reused(body.workflow_id)
    ours = (run.context or {}).get(RUN_CONTEXT) or {}
    lead_id = ours.get("lead_id")
    response.headers["Idempotent-Replayed"] = "true"
    return TriggerResult(
        run_id=run.id,
        workflow_id=body.workflow_id,
        lead_id=lead_id if isinstance(lead_id, str) else None,
        status_url=f"/api/workflows/{run.id}/status",
        ui_url=run_ui_url(settings.prefect_ui, run.id),
    )


def _key_reused(workflow_id: str) -> JSONResponse:
    return problem(
        422,
        f"this {IDEMPOTENCY_HEADER} already started a run of {workflow_id} with "
        "another request body; send a new key for a new request",
        slug="idempotency-key-reused",
        errors=[
            FieldError(
                IDEMPOTENCY_HEADER,
                "idempotency_key_reused",
                "used before with another body",
            )
        ],
    )


@router.get(
    "/{run_id}/status",
    response_model=RunStatus,
    responses={404: {"description": "No such flow run."}, 503: {}},
)
async def run_status(
    run_id: Annotated[UUID, Path(description="`run_id` from the trigger.")],
    settings: SettingsDep,
    context: ContextDep,
) -> Any:
    """Reports a flow run's state, times and task runs from the Prefect server."""
    try:
        async with (
            asyncio.timeout(PREFECT_CALL_SECONDS),
            prefect_client(settings.prefect_url) as client,
        ):
            try:
                run = await client.read_flow_run(run_id)
            except ObjectNotFound:
                run = None
            if run is None or not run_belongs_to(run, context.tenant_id):
                # Another tenant's run is answered as one that does not exist.
                return problem(
                    404, f"no flow run with id {run_id}", slug="run-not-found"
                )
            tasks = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            )
            logs = await client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
                limit=STATUS_LOG_LINES,
                sort=LogSort.TIMESTAMP_DESC,
            )
            workflow = None
            if run.deployment_id is not None:
                workflow = (await client.read_deployment(run.deployment_id)).name
    except (httpx.HTTPError, TimeoutError) as exc:
        return prefect_down(exc)

    state = run.state
    return RunStatus(
        run_id=run.id,
        workflow_id=workflow,
        state=state.type.value if state else None,
        state_name=state.name if state else None,
        message=state.message if state else None,
        start_time=run.start_time,
        end_time=run.end_time,
        task_runs=[
            TaskRunView(
                name=task.name,
                state=task.state.type.value if task.state else None,
                start_time=task.start_time,
                end_time=task.end_time,
            )
            for task in sorted(tasks, key=lambda t: str(t.start_time or ""))
        ],
        logs=[
            LogLine(
                timestamp=line.timestamp,
                level=logging.getLevelName(line.level),
                message=line.message,
            )
            for line in reversed(logs)
        ],
        ui_url=run_ui_url(settings.prefect_ui, run.id),
    )


async def read_runs(
    prefect_url: str, run_ids: list[UUID]
) -> tuple[dict[UUID, FlowRun], dict[UUID, str]]:
    """The flow runs Prefect still has of `run_ids`, and their deployments' names.

    Two calls whatever the number of runs (at most the server's page, 200).

    Raises:
        httpx.HTTPError: the Prefect server did not answer.
        TimeoutError: not within PREFECT_LOOKUP_SECONDS.
    """
    if not run_ids:
        return {}, {}
    async with asyncio.timeout(PREFECT_LOOKUP_SECONDS):
        async with prefect_client(prefect_url) as client:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids)),
                limit=len(run_ids),
            )
            deployment_ids = list({r.deployment_id for r in runs if r.deployment_id})
            deployments = (
                await client.read_deployments(
                    deployment_filter=DeploymentFilter(
                        id=DeploymentFilterId(any_=deployment_ids)
                    )
                )
                if deployment_ids
                else []
            )
    return {run.id: run for run in runs}, {d.id: d.name for d in deployments}


def _check_parameters(body: TriggerRequest, accepted: dict[str, Any]) -> None:
    """Refuses unknown parameters, personal data, and a lead id passed around checks.

    Raises:
        LeadRejected: naming each parameter at fault.
    """
    errors = [
        FieldError(
            f"parameters.{name}",
            "unknown_parameter",
            f"{body.workflow_id} takes: {', '.join(sorted(accepted))}",
        )
        for name in sorted(set(body.parameters) - set(accepted))
    ]
    if "lead_id" in body.parameters:
        # A lead id goes through the request's tenant check, never around it.
        errors.append(
            FieldError(
                "parameters.lead_id",
                "use_lead_id",
                "send the lead as `lead_id` or `lead_data`, not as a parameter",
            )
        )
    for name, value in sorted(body.parameters.items()):
        try:
            json_ready({name: value})
        except PersonalDataInParameters as exc:
            # Prefect stores parameters and shows them in its UI and events.
            errors.append(
                FieldError(
                    f"parameters.{exc.path}",
                    "personal_data",
                    f"looks like personal data ({exc.kind}); pass lead ids, "
                    "never a lead's details",
                )
            )
        except ParameterError as exc:
            errors.append(FieldError(f"parameters.{name}", "not_json", str(exc)))
    if errors:
        raise LeadRejected(errors)


def _check_against_schema(
    settings: Settings, schema: dict[str, Any], parameters: dict[str, Any]
) -> None:
    """Refuses what the deployment's schema or our sequences would refuse later.

    Checked before any lead is taken in: a run Prefect refuses, or one that
    fails at once on an unknown sequence, must not leave a lead behind.

    Raises:
        LeadRejected: naming each parameter at fault.
    """
    errors = [
        FieldError(
            ".".join(["parameters", *map(str, error.absolute_path)]),
            "invalid_parameter",
            error.message[:300],
        )
        for error in Draft202012Validator(schema).iter_errors(json_ready(parameters))
    ]
    sequence = parameters.get("sequence")
    if isinstance(sequence, str):
        try:
            known = load_sequences(settings.config_dir / "sequences.yaml")
        except SequenceConfigError:
            known = {}
        if sequence not in known:
            errors.append(
                FieldError(
                    "parameters.sequence",
                    "unknown_sequence",
                    f"sequences.yaml has: {', '.join(known) or 'none that loads'}",
                )
            )
    if errors:
        raise LeadRejected(errors)


def _owns_import(store: Store, tenant_id: str, import_id: str) -> bool:
    """Whether the import a run is asked to take is the tenant's own."""
    with store.read(tenant_id) as scope:
        return scope.get(LeadImport, import_id) is not None


def _prepare_lead(store: Store, tenant_id: str, lead_id: str, sequence: object) -> None:
    """Checks the lead is the tenant's (404 otherwise) and enrols it in `sequence`.

    A lead never enrolled (it had no e-mail when it came in) is enrolled now;
    one already enrolled keeps its row, so only steps not yet sent go out.
    """
    with store.write(tenant_id) as scope:
        lead = get_lead(scope, lead_id)
        if isinstance(sequence, str) and lead.email:
            outbox.enrol(scope, lead, sequence)
