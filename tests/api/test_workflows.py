"""Workflow endpoints: listing, triggering, run status, and life without Prefect."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import yaml
from prefect import flow, get_run_logger
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import DeploymentUpdate
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    DeploymentFilterName,
)
from prefect.client.schemas.objects import FlowRun
from prefect.logging.handlers import APILogWorker
from prefect.utilities.callables import parameter_schema

from api.routes import workflows
from api.routes.workflows import (
    PREFECT_YAML,
    WorkflowFileError,
    flow_run_key,
    read_workflows,
)
from flows.sequence_dispatch import dispatch_sequence
from leads.settings import Settings
from leads.store.tables import Lead
from tests.conftest import LiveServer


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


def register_dispatcher(url: str, name: str) -> tuple[UUID, UUID]:
    """A deployment `name` of the dispatcher's flow, as the flow runner makes one."""
    dispatcher = dispatch_sequence.with_options(name="sequence-dispatcher-test")
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

    return on_prefect(url, register)


def remove_deployment(url: str, deployment_id: UUID) -> None:
    """Deletes a deployment and its runs (the flow stays: others share it)."""

    async def remove(client: PrefectClient) -> None:
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[deployment_id])
            )
        )
        for run in runs:
            await client.delete_flow_run(run.id)
        await client.delete_deployment(deployment_id)

    on_prefect(url, remove)


@pytest.fixture
def workflow(prefect_server) -> Iterator[str]:
    """A deployment of the dispatcher under a name no other test uses; removed after."""
    name = f"dispatch-{uuid.uuid4().hex[:8]}"
    _, made = register_dispatcher(prefect_server.api_url, name)
    yield name
    remove_deployment(prefect_server.api_url, made)


@pytest.fixture
def api(serve_api, store, prefect_server, tmp_path) -> Iterator[httpx.Client]:
    """The API on the session's Prefect server."""
    server = serve_api(
        Settings(
            data_dir=tmp_path,
            database_url=store.url,
            prefect_api_url=prefect_server.api_url,
            crm="none",
        )
    )
    with server.client() as http:
        yield http


@pytest.mark.slow
class TestParametersReachingPrefect:
    """Against the session's Prefect server, on a deployment of the dispatcher."""

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


class TestReadingPrefectYaml:
    def test_reads_every_deployment_of_the_projects_file(self):
        declared = yaml.safe_load(PREFECT_YAML.read_text())["deployments"]

        found = read_workflows(PREFECT_YAML)

        assert [w.workflow_id for w in found] == [d["name"] for d in declared]

    def test_keys_it_does_not_show_and_anchors_are_taken_in_stride(
        self, tmp_path: Path
    ):
        path = tmp_path / "prefect.yaml"
        path.write_text(
            """
definitions:
  drain: &drain
    entrypoint: flows/crm_sync.py:crm_sync
    work_pool: {name: local, job_variables: {}}
    schedules:
      - {cron: "*/2 * * * *", timezone: Europe/Berlin, active: false}
      - {interval: 90}
    concurrency_limit: {limit: 1, collision_strategy: CANCEL_NEW}
deployments:
  - <<: *drain
    name: webhook_drain
    description: Processes stored webhook deliveries.
    tags: [drain]
    pull: [{prefect.deployments.steps.set_working_directory: {directory: .}}]
    triggers:
      - type: compound
        require: any
        triggers:
          - {type: event, expect: [webhooks.received]}
          - {type: event, expect: [leads.pending, webhooks.received]}
  - name: one_at_a_time
    entrypoint: flows/lead_import.py:import_leads
    concurrency_limit: 2
    parameters: {chunk_size: 500}
  - description: no name, so it cannot be served
    entrypoint: flows/crm_sync.py:crm_sync
"""
        )

        drain, limited = read_workflows(path)

        assert drain.workflow_id == "webhook_drain"
        assert drain.entrypoint == "flows/crm_sync.py:crm_sync"
        assert [s.model_dump() for s in drain.schedules] == [
            {
                "cron": "*/2 * * * *",
                "interval_seconds": None,
                "rrule": None,
                "timezone": "Europe/Berlin",
                "active": False,
            },
            {
                "cron": None,
                "interval_seconds": 90,
                "rrule": None,
                "timezone": None,
                "active": True,
            },
        ]
        [trigger] = drain.triggers
        assert (trigger.type, trigger.events) == (
            "compound",
            ["webhooks.received", "leads.pending"],
        )
        assert drain.concurrency.collision_strategy == "CANCEL_NEW"
        assert (limited.concurrency.limit, limited.concurrency.collision_strategy) == (
            2,
            None,
        )
        assert limited.parameters == {"chunk_size": 500}

    def test_a_file_that_is_not_yaml_is_an_error_naming_the_file(self, tmp_path):
        path = tmp_path / "prefect.yaml"
        path.write_text("deployments: [name: x\n")

        with pytest.raises(WorkflowFileError, match="prefect.yaml is not valid YAML"):
            read_workflows(path)


def test_listing_with_prefect_down_answers_from_prefect_yaml(client):
    response = client.get("/api/workflows")

    assert response.status_code == 200
    body = response.json()
    assert body["prefect_reachable"] is False
    assert body["next_cursor"] is None
    crm_sync = next(w for w in body["data"] if w["workflow_id"] == "crm_sync")
    assert crm_sync["entrypoint"] == "flows/crm_sync.py:crm_sync"
    assert crm_sync["schedules"][0]["cron"] == "* * * * *"
    assert crm_sync["schedules"][0]["timezone"] == "UTC"
    assert crm_sync["triggers"][0]["events"] == ["leads.pending"]
    assert crm_sync["concurrency"]["collision_strategy"] == "CANCEL_NEW"
    welcome = next(w for w in body["data"] if w["workflow_id"] == "welcome_sequence")
    assert welcome["parameters"] == {"sequence": "welcome_sequence"}
    assert {w["registered"] for w in body["data"]} == {None}
    assert {w["ui_url"] for w in body["data"]} == {None}


class TestIdempotencyKeys:
    @pytest.mark.parametrize(
        "key",
        ["", "x" * 256, "naïve", "tab\there"],
        ids=["empty", "too-long", "not-ascii", "control-character"],
    )
    def test_a_malformed_key_is_422_naming_the_header_before_anything_happens(
        self, client, key
    ):
        response = client.post(
            "/api/workflows/trigger",
            json={"workflow_id": "welcome_sequence"},
            headers={"Idempotency-Key": key.encode("latin-1")},
        )

        assert response.status_code == 422, "checked before Prefect is asked (503)"
        [error] = response.json()["errors"]
        assert (error["field"], error["reason"]) == (
            "Idempotency-Key",
            "invalid_idempotency_key",
        )

    def test_a_key_of_255_printable_characters_is_accepted(self, client):
        response = client.post(
            "/api/workflows/trigger",
            json={"workflow_id": "welcome_sequence"},
            headers={"Idempotency-Key": "~" * 255},
        )

        assert response.status_code == 503

    def test_a_key_is_kept_apart_per_tenant_and_per_workflow(self):
        keys = {
            flow_run_key("k-1", "default", "welcome_sequence"),
            flow_run_key("k-1", "acme", "welcome_sequence"),
            flow_run_key("k-1", "default", "follow_up"),
            # No joining of the parts can make two scopes meet.
            flow_run_key("k-1", "default:welcome_sequence", ""),
        }

        assert len(keys) == 4


@pytest.mark.slow
class TestWorkflowsAcrossTenants:
    """A run not bound to one lead or import works on every tenant's rows."""

    @pytest.fixture
    def server(self, serve_api, store, prefect_server, tmp_path) -> LiveServer:
        return serve_api(
            Settings(
                data_dir=tmp_path,
                database_url=store.url,
                prefect_api_url=prefect_server.api_url,
                crm="none",
            )
        )

    def test_only_the_installations_tenant_may_start_one(
        self, server, workflow, prefect_server
    ):
        with server.client(tenant="acme", scope="write") as acme:
            refused = acme.post(
                "/api/workflows/trigger", json={"workflow_id": workflow}
            )
        with server.client(scope="write") as own:
            started = own.post("/api/workflows/trigger", json={"workflow_id": workflow})

        assert refused.status_code == 403, refused.text
        [error] = refused.json()["errors"]
        assert (error["field"], error["reason"]) == ("workflow_id", "cross_tenant")
        assert started.status_code == 202, started.text
        [run] = runs_of(prefect_server.api_url, workflow)
        assert str(run.id) == started.json()["run_id"]

    def test_another_tenant_may_start_it_for_one_of_its_leads(
        self, server, workflow, prefect_server
    ):
        with server.client(tenant="acme", scope="write") as acme:
            started = acme.post(
                "/api/workflows/trigger",
                json={"workflow_id": workflow, "lead_data": {"email": "t@example.com"}},
            )

        assert started.status_code == 202, started.text
        [run] = runs_of(prefect_server.api_url, workflow)
        assert run.parameters["lead_id"] == started.json()["lead_id"]


@pytest.mark.slow
class TestIdempotentTriggers:
    """Against the session's Prefect server, on a deployment of the dispatcher."""

    def test_the_same_key_twice_answers_with_the_one_run_it_started(
        self, api, workflow, prefect_server
    ):
        request = {"workflow_id": workflow, "parameters": {"batch_size": 10}}

        first = api.post(
            "/api/workflows/trigger", json=request, headers={"Idempotency-Key": "a-1"}
        )
        again = api.post(
            "/api/workflows/trigger", json=request, headers={"Idempotency-Key": "a-1"}
        )

        assert (first.status_code, again.status_code) == (202, 202), again.text
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        [run] = runs_of(prefect_server.api_url, workflow)
        assert str(run.id) == first.json()["run_id"]

    def test_a_replay_with_lead_data_takes_the_lead_in_once(
        self, api, workflow, prefect_server
    ):
        request = {"workflow_id": workflow, "lead_data": {"email": "w.kay@example.com"}}

        first = api.post(
            "/api/workflows/trigger", json=request, headers={"Idempotency-Key": "b-1"}
        )
        again = api.post(
            "/api/workflows/trigger", json=request, headers={"Idempotency-Key": "b-1"}
        )

        assert again.json()["run_id"] == first.json()["run_id"]
        lead_id = first.json()["lead_id"]
        assert again.json()["lead_id"] == lead_id
        kinds = [
            e["kind"] for e in api.get(f"/api/leads/{lead_id}/timeline").json()["data"]
        ]
        assert kinds == ["lead.created"]
        assert len(runs_of(prefect_server.api_url, workflow)) == 1

    def test_a_key_reused_with_another_body_is_422_and_starts_nothing(
        self, api, workflow, prefect_server
    ):
        api.post(
            "/api/workflows/trigger",
            json={"workflow_id": workflow, "parameters": {"batch_size": 10}},
            headers={"Idempotency-Key": "c-1"},
        )

        response = api.post(
            "/api/workflows/trigger",
            json={"workflow_id": workflow, "lead_data": {"email": "z.ray@example.com"}},
            headers={"Idempotency-Key": "c-1"},
        )

        assert response.status_code == 422
        assert response.json()["errors"][0]["reason"] == "idempotency_key_reused"
        assert "another request body" in response.json()["detail"]
        assert len(runs_of(prefect_server.api_url, workflow)) == 1
        leads = api.get("/api/leads", params={"email": "z.ray@example.com"})
        assert leads.json()["data"] == []

    def test_one_key_for_two_workflows_of_one_flow_starts_a_run_of_each(
        self, api, workflow, prefect_server
    ):
        other = f"dispatch-{uuid.uuid4().hex[:8]}"
        _, made = register_dispatcher(prefect_server.api_url, other)
        try:
            started = [
                api.post(
                    "/api/workflows/trigger",
                    json={"workflow_id": name},
                    headers={"Idempotency-Key": "d-1"},
                ).json()["run_id"]
                for name in (workflow, other)
            ]

            assert started[0] != started[1]
            assert [str(r.id) for r in runs_of(prefect_server.api_url, other)] == [
                started[1]
            ]
        finally:
            remove_deployment(prefect_server.api_url, made)

    def test_without_a_key_each_trigger_starts_a_run(
        self, api, workflow, prefect_server
    ):
        for _ in range(2):
            api.post("/api/workflows/trigger", json={"workflow_id": workflow})

        assert len(runs_of(prefect_server.api_url, workflow)) == 2


@flow(name="chatty-test-flow")
def chatty(lines: int) -> None:
    logger = get_run_logger()
    logger.warning("starting with %s lines", lines)
    for number in range(1, lines + 1):
        logger.info("line %s", number)


@pytest.mark.slow
class TestRunStatus:
    def test_carries_the_last_log_lines_oldest_first(self, api, on_prefect):
        state = chatty(lines=30, return_state=True)
        run_id = state.state_details.flow_run_id
        APILogWorker.drain_all(timeout=10)

        body = api.get(f"/api/workflows/{run_id}/status").json()

        assert body["state"] == "COMPLETED"
        logs = body["logs"]
        assert len(logs) == 20
        assert [line["timestamp"] for line in logs] == sorted(
            line["timestamp"] for line in logs
        )
        messages = [line["message"] for line in logs]
        assert "line 30" in messages and "line 1" not in messages
        assert messages.index("line 29") < messages.index("line 30")
        assert {line["level"] for line in logs} <= {"INFO", "DEBUG"}

    def test_a_short_run_shows_every_line_with_its_level(self, api, on_prefect):
        state = chatty(lines=1, return_state=True)
        APILogWorker.drain_all(timeout=10)

        body = api.get(
            f"/api/workflows/{state.state_details.flow_run_id}/status"
        ).json()

        levels = {line["message"]: line["level"] for line in body["logs"]}
        assert levels["starting with 1 lines"] == "WARNING"
        assert levels["line 1"] == "INFO"


DISPATCHER = "flows/sequence_dispatch.py:dispatch_sequence"


@pytest.mark.slow
class TestListingWithPrefect:
    @pytest.fixture
    def declared(self, tmp_path, monkeypatch, prefect_server) -> Iterator[str]:
        """A prefect.yaml of two workflows, one registered on Prefect and paused."""
        name = f"listed-{uuid.uuid4().hex[:8]}"
        path = tmp_path / "prefect.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "deployments": [
                        {
                            "name": name,
                            "entrypoint": DISPATCHER,
                            "parameters": {"sequence": "welcome_sequence"},
                        },
                        {
                            "name": f"{name}-unserved",
                            "entrypoint": "flows/crm_sync.py:crm_sync",
                        },
                    ]
                }
            )
        )
        monkeypatch.setattr(workflows, "PREFECT_YAML", path)
        _, made = register_dispatcher(prefect_server.api_url, name)
        on_prefect(
            prefect_server.api_url,
            lambda client: client.update_deployment(
                made, DeploymentUpdate(paused=True)
            ),
        )
        yield name
        remove_deployment(prefect_server.api_url, made)

    def test_merges_what_the_prefect_server_knows(self, api, declared, prefect_server):
        body = api.get("/api/workflows").json()

        assert body["prefect_reachable"] is True
        served, unserved = body["data"]
        assert served["workflow_id"] == declared
        assert served["registered"] is True
        assert served["paused"] is True
        assert served["flow_name"] == "sequence-dispatcher-test"
        assert "sequence" in served["accepted_parameters"]
        ui = prefect_server.api_url.removesuffix("/api")
        assert served["ui_url"] == (
            f"{ui}/deployments/deployment/{served['deployment_id']}"
        )
        assert unserved["registered"] is False
        assert unserved["deployment_id"] is None


class TestCheckedBeforeAnyLeadIsTakenIn:
    """Against the session's Prefect server, on a deployment of the dispatcher."""

    def test_concurrent_retries_with_one_key_take_the_lead_in_once(
        self, api, workflow, prefect_server
    ):
        request = {
            "workflow_id": workflow,
            "lead_data": {"phone": "+14155550998", "first_name": "Phoneonly"},
        }

        def send(_: int) -> httpx.Response:
            return api.post(
                "/api/workflows/trigger",
                json=request,
                headers={"Idempotency-Key": "race-1"},
            )

        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(send, range(8)))

        assert {a.status_code for a in answers} == {202}
        assert len({a.json()["run_id"] for a in answers}) == 1
        assert len({a.json()["lead_id"] for a in answers}) == 1
        assert len(runs_of(prefect_server.api_url, workflow)) == 1

    def test_retries_spread_over_two_api_replicas_take_the_lead_in_once(
        self, serve_api, store, workflow, prefect_server, tmp_path
    ):
        # Two API processes' worth of servers on one store, as replicas are.
        settings = Settings(
            data_dir=tmp_path,
            database_url=store.url,
            prefect_api_url=prefect_server.api_url,
            crm="none",
        )
        replicas = [serve_api(settings).client() for _ in range(2)]
        request = {
            "workflow_id": workflow,
            "lead_data": {"phone": "+14155550997", "first_name": "Replica"},
        }

        def send(index: int) -> httpx.Response:
            return replicas[index % 2].post(
                "/api/workflows/trigger",
                json=request,
                headers={"Idempotency-Key": "replicas-1"},
            )

        try:
            with ThreadPoolExecutor(max_workers=8) as pool:
                answers = list(pool.map(send, range(8)))
        finally:
            for replica in replicas:
                replica.close()

        assert {a.status_code for a in answers} == {202}, [a.text for a in answers]
        assert len({a.json()["run_id"] for a in answers}) == 1
        with store.read("default") as scope:
            assert len(scope.session.scalars(scope.select(Lead)).all()) == 1
        assert len(runs_of(prefect_server.api_url, workflow)) == 1

    def test_a_parameter_the_deployments_schema_refuses_is_422_and_no_lead(
        self, api, workflow, prefect_server
    ):
        response = api.post(
            "/api/workflows/trigger",
            json={
                "workflow_id": workflow,
                "lead_data": {"email": "schema@example.com"},
                "parameters": {"batch_size": "lots"},
            },
        )

        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "parameters.batch_size"
        leads = api.get("/api/leads", params={"email": "schema@example.com"})
        assert leads.json()["data"] == []
        assert runs_of(prefect_server.api_url, workflow) == []

    def test_a_sequence_that_is_not_configured_is_422_naming_the_known_ones(
        self, api, workflow, prefect_server
    ):
        response = api.post(
            "/api/workflows/trigger",
            json={"workflow_id": workflow, "parameters": {"sequence": "Grace Hopper"}},
        )

        assert response.status_code == 422
        [error] = response.json()["errors"]
        assert (error["field"], error["reason"]) == (
            "parameters.sequence",
            "unknown_sequence",
        )
        assert "welcome_sequence" in error["message"]
        assert runs_of(prefect_server.api_url, workflow) == []

    def test_a_full_width_address_is_personal_data_too(self, api, workflow):
        response = api.post(
            "/api/workflows/trigger",
            json={
                "workflow_id": workflow,
                "parameters": {"sequence": "ＢＯＢ＠ＥＸ.ＣＯＭ"},
            },
        )

        assert response.status_code == 422
        assert response.json()["errors"][0]["reason"] == "personal_data"


def test_a_prefect_server_that_never_answers_is_503_within_the_limit(
    serve_api, store, tmp_path, monkeypatch
):
    monkeypatch.setattr(workflows, "PREFECT_CALL_SECONDS", 1.0)
    with socket.socket() as silent:
        # Connections are accepted by the kernel and never answered.
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        server = serve_api(
            Settings(
                data_dir=tmp_path,
                database_url=store.url,
                prefect_api_url=f"http://127.0.0.1:{port}/api",
                crm="none",
            )
        )
        with server.client() as http:
            status = http.get(f"/api/workflows/{uuid.uuid4()}/status")
            trigger = http.post(
                "/api/workflows/trigger", json={"workflow_id": "crm_sync"}
            )

    assert (status.status_code, trigger.status_code) == (503, 503)
