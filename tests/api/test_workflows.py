"""Workflow endpoints: what a trigger refuses or sends, and life without Prefect."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    DeploymentFilterName,
)
from prefect.client.schemas.objects import FlowRun
from prefect.utilities.callables import parameter_schema

from flows.sequence_dispatch import dispatch_sequence
from leads.settings import Settings


def test_trigger_with_prefect_down_is_503_and_names_the_cause(client):
    response = client.post(
        "/api/workflows/trigger", json={"workflow_id": "welcome_sequence"}
    )

    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert "Prefect server cannot be reached" in response.json()["detail"]


def test_status_with_prefect_down_is_503(client):
    response = client.get(f"/api/workflows/{UUID(int=7)}/status")

    assert response.status_code == 503


def test_a_run_id_that_is_not_a_uuid_is_422(client):
    response = client.get("/api/workflows/run-1/status")

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "run_id"


def test_a_trigger_without_a_workflow_id_is_422(client):
    response = client.post("/api/workflows/trigger", json={"lead_id": "x"})

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "workflow_id"


def test_leads_are_taken_in_while_prefect_is_down(client):
    response = client.post("/api/leads", json={"email": "down@example.com"})

    assert response.status_code == 201


def test_status_reports_prefect_unreachable(client):
    prefect = client.get("/api/status").json()["prefect"]

    assert prefect["reachable"] is False
    assert prefect["error"]


def test_a_misspelt_key_is_422_not_a_silent_drain(client):
    response = client.post(
        "/api/workflows/trigger",
        json={"workflow_id": "welcome_sequence", "leadid": "x"},
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "leadid"


def test_a_lead_id_and_lead_data_together_are_422(client, store):
    response = client.post(
        "/api/workflows/trigger",
        json={
            "workflow_id": "welcome_sequence",
            "lead_id": "5d4bd39e-7b0e-4b5e-8a0c-9a9f0d0f0f0f",
            "lead_data": {"email": "both@example.com"},
        },
    )

    assert response.status_code == 422
    assert "not both" in response.json()["errors"][0]["message"]
    assert (
        client.get("/api/leads", params={"email": "both@example.com"}).json()["data"]
        == []
    )


@pytest.mark.slow
class TestParametersReachingPrefect:
    """Against the session's Prefect server, on a deployment of the dispatcher."""

    @pytest.fixture
    def workflow(self, prefect_server) -> Iterator[str]:
        """The dispatcher under names no other test uses; removed after."""
        name = f"dispatch-{uuid.uuid4().hex[:8]}"
        dispatcher = dispatch_sequence.with_options(name=name)
        schema = parameter_schema(dispatcher).model_dump(exclude_unset=True)

        async def register(client: PrefectClient) -> tuple[UUID, UUID]:
            flow_id = await client.create_flow(dispatcher)
            deployment_id = await client.create_deployment(
                flow_id,
                name,
                parameters={"sequence": "welcome_sequence"},
                parameter_openapi_schema=schema,
                enforce_parameter_schema=True,
            )
            return flow_id, deployment_id

        async def remove(client: PrefectClient) -> None:
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[made]))
            )
            for run in runs:
                await client.delete_flow_run(run.id)
            await client.delete_deployment(made)
            await client.delete_flow(flow_id)

        flow_id, made = on_prefect(prefect_server.api_url, register)
        yield name
        on_prefect(prefect_server.api_url, remove)

    @pytest.fixture
    def api(self, serve_api, store, prefect_server, tmp_path) -> Iterator[httpx.Client]:
        server = serve_api(
            Settings(
                data_dir=tmp_path,
                database_url=store.url,
                prefect_api_url=prefect_server.api_url,
                crm="none",
            )
        )
        with httpx.Client(base_url=server.url, timeout=30) as http:
            yield http

    @pytest.mark.parametrize(
        ("value", "kind"),
        [("v.ames@example.com", "email"), ("+44 20 7946 0958", "phone")],
    )
    def test_personal_data_in_a_parameter_is_422_and_nothing_is_written(
        self, api, workflow, prefect_server, value, kind
    ):
        response = api.post(
            "/api/workflows/trigger",
            json={
                "workflow_id": workflow,
                "lead_data": {"email": "w.kay@example.com"},
                "parameters": {"sequence": value},
            },
        )

        assert response.status_code == 422
        body = response.json()
        assert [(e["field"], e["reason"]) for e in body["errors"]] == [
            ("parameters.sequence", "personal_data")
        ]
        assert kind in body["errors"][0]["message"]
        assert value not in response.text
        leads = api.get("/api/leads", params={"email": "w.kay@example.com"})
        assert leads.json()["data"] == [], "checked before the lead was taken in"
        assert runs_of(prefect_server.api_url, workflow) == []

    def test_a_nested_address_is_named_by_its_path(self, api, workflow):
        response = api.post(
            "/api/workflows/trigger",
            json={
                "workflow_id": workflow,
                "parameters": {"sequence": {"to": ["lead_1", "v.ames@example.com"]}},
            },
        )

        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "parameters.sequence.to[1]"

    def test_ids_and_counts_are_sent_as_json_and_the_run_is_created(
        self, api, workflow, prefect_server
    ):
        response = api.post(
            "/api/workflows/trigger",
            json={"workflow_id": workflow, "parameters": {"batch_size": 10}},
        )

        assert response.status_code == 202, response.text
        [run] = runs_of(prefect_server.api_url, workflow)
        assert str(run.id) == response.json()["run_id"]
        assert run.parameters == {"sequence": "welcome_sequence", "batch_size": 10}


def on_prefect(url: str, call: Callable[[PrefectClient], Any]) -> Any:
    async def run() -> Any:
        async with PrefectClient(api=url) as client:
            return await call(client)

    return asyncio.run(run())


def runs_of(url: str, deployment_name: str) -> list[FlowRun]:
    return on_prefect(
        url,
        lambda client: client.read_flow_runs(
            deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=[deployment_name])
            )
        ),
    )
