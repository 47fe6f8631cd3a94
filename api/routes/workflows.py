"""Workflows: start a deployment's flow run by name and report how it went."""

from __future__ import annotations

import logging
from typing import Annotated, Any
from uuid import UUID

import httpx
from fastapi import APIRouter, Path, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.deps import ContextDep, JsonBody, PendingDep, SettingsDep, StoreDep
from api.problems import problem
from flows.parameters import ParameterError, PersonalDataInParameters, json_ready
from leads.errors import FieldError, LeadRejected
from leads.intake import submit
from leads.models import LeadInput
from leads.store import Store, outbox
from leads.store.leads import get_lead

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/workflows", tags=["workflows"])


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


class RunStatus(BaseModel):
    run_id: UUID
    workflow_id: str | None
    state: str | None = Field(description="Prefect's state type, e.g. `COMPLETED`.")
    state_name: str | None
    message: str | None
    start_time: Any
    end_time: Any
    task_runs: list[TaskRunView]
    ui_url: str


def prefect_client(url: str) -> PrefectClient:
    return PrefectClient(api=url)


def run_ui_url(prefect_url: str, run_id: UUID) -> str:
    return f"{prefect_url.removesuffix('/api')}/runs/flow-run/{run_id}"


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


@router.post(
    "/trigger",
    dependencies=[JsonBody],
    status_code=202,
    response_model=TriggerResult,
    responses={404: {"description": "Unknown workflow or lead."}, 503: {}},
)
async def trigger(
    body: TriggerRequest,
    response: Response,
    store: StoreDep,
    settings: SettingsDep,
    context: ContextDep,
    pending: PendingDep,
) -> Any:
    """Starts a run of the named workflow (for one lead, or a lead taken in first)."""
    try:
        async with prefect_client(settings.prefect_url) as client:
            deployments = {d.name: d for d in await client.read_deployments()}
    except httpx.HTTPError as exc:
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
    accepted = (deployment.parameter_openapi_schema or {}).get("properties", {})
    _check_parameters(body, accepted)

    lead_id = body.lead_id
    if body.lead_data is not None:
        result = await run_in_threadpool(
            submit,
            store,
            context.tenant_id,
            body.lead_data,
            channel="api",
            region=settings.default_region,
        )
        lead_id = result.lead.id
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
        async with prefect_client(settings.prefect_url) as client:
            run = await client.create_flow_run_from_deployment(
                deployment.id, parameters=parameters
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
    except httpx.HTTPError as exc:
        return prefect_down(exc)

    return TriggerResult(
        run_id=run.id,
        workflow_id=body.workflow_id,
        lead_id=lead_id,
        status_url=f"/api/workflows/{run.id}/status",
        ui_url=run_ui_url(settings.prefect_url, run.id),
    )


@router.get(
    "/{run_id}/status",
    response_model=RunStatus,
    responses={404: {"description": "No such flow run."}, 503: {}},
)
async def run_status(
    run_id: Annotated[UUID, Path(description="`run_id` from the trigger.")],
    settings: SettingsDep,
) -> Any:
    """Reports a flow run's state, times and task runs from the Prefect server."""
    try:
        async with prefect_client(settings.prefect_url) as client:
            try:
                run = await client.read_flow_run(run_id)
            except ObjectNotFound:
                return problem(
                    404, f"no flow run with id {run_id}", slug="run-not-found"
                )
            tasks = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            )
            workflow = None
            if run.deployment_id is not None:
                workflow = (await client.read_deployment(run.deployment_id)).name
    except httpx.HTTPError as exc:
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
        ui_url=run_ui_url(settings.prefect_url, run.id),
    )


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


def _prepare_lead(store: Store, tenant_id: str, lead_id: str, sequence: object) -> None:
    """Checks the lead is the tenant's (404 otherwise) and enrols it in `sequence`.

    A lead never enrolled (it had no e-mail when it came in) is enrolled now;
    one already enrolled keeps its row, so only steps not yet sent go out.
    """
    with store.write(tenant_id) as scope:
        lead = get_lead(scope, lead_id)
        if isinstance(sequence, str) and lead.email:
            outbox.enrol(scope, lead, sequence)
