"""A lead's flow runs and the run links on its timeline, with Prefect up and down."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect import flow
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

from leads.intake import submit
from leads.settings import Settings
from leads.store import timeline


@flow(name="lead-runs-test-flow")
def touch_lead() -> int:
    return 1


def on_prefect(url: str, call: Callable[[PrefectClient], Any]) -> Any:
    async def run() -> Any:
        async with PrefectClient(api=url) as client:
            return await call(client)

    return asyncio.run(run())


def record(store, lead_id, kind, run_id, tenant="default"):
    with store.write(tenant) as scope:
        timeline.append(scope, lead_id, kind, source="flow", flow_run_id=str(run_id))


def new_lead(client, email="ada@example.com") -> str:
    return client.post("/api/leads", json={"email": email}).json()["id"]


class TestWithPrefectDown:
    def test_runs_are_listed_from_the_store_with_their_links(self, client, store):
        lead_id = new_lead(client)
        synced, sent = uuid.uuid4(), uuid.uuid4()
        record(store, lead_id, "crm.synced", synced)
        record(store, lead_id, "email.sent", sent)

        response = client.get(f"/api/leads/{lead_id}/runs")

        assert response.status_code == 200
        body = response.json()
        assert body["prefect_reachable"] is False
        assert [(r["run_id"], r["event_kinds"]) for r in body["data"]] == [
            (str(sent), ["email.sent"]),
            (str(synced), ["crm.synced"]),
        ]
        assert {r["state"] for r in body["data"]} == {None}
        assert body["data"][0]["ui_url"].endswith(f"/runs/flow-run/{sent}")

    def test_pages_with_limit_and_cursor(self, client, store):
        lead_id = new_lead(client)
        made = [uuid.uuid4() for _ in range(3)]
        for run_id in made:
            record(store, lead_id, "crm.synced", run_id)

        first = client.get(f"/api/leads/{lead_id}/runs", params={"limit": 2}).json()
        rest = client.get(
            f"/api/leads/{lead_id}/runs",
            params={"limit": 2, "cursor": first["next_cursor"]},
        ).json()

        assert [r["run_id"] for r in first["data"] + rest["data"]] == [
            str(run_id) for run_id in reversed(made)
        ]
        assert rest["next_cursor"] is None

    def test_a_lead_no_run_touched_has_none(self, client):
        lead_id = new_lead(client)

        body = client.get(f"/api/leads/{lead_id}/runs").json()

        assert (body["data"], body["next_cursor"]) == ([], None)

    def test_an_unknown_lead_is_404(self, client):
        response = client.get(f"/api/leads/{uuid.uuid4()}/runs")

        assert response.status_code == 404

    def test_another_tenants_lead_is_404(self, client, store):
        theirs = submit(
            store, "acme", {"email": "ada@acme.example"}, channel="api", region="US"
        ).lead
        record(store, theirs.id, "crm.synced", uuid.uuid4(), tenant="acme")

        response = client.get(f"/api/leads/{theirs.id}/runs")

        assert response.status_code == 404

    def test_a_bad_cursor_is_422(self, client):
        lead_id = new_lead(client)

        response = client.get(f"/api/leads/{lead_id}/runs", params={"cursor": "x"})

        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "cursor"


class TestTimelineLinks:
    def test_an_event_of_a_run_links_to_it_and_others_do_not(self, client, store):
        lead_id = new_lead(client)
        run_id = uuid.uuid4()
        record(store, lead_id, "crm.synced", run_id)

        created, synced = client.get(f"/api/leads/{lead_id}/timeline").json()["data"]

        assert (created["kind"], created["flow_run_url"]) == ("lead.created", None)
        assert synced["flow_run_id"] == str(run_id)
        assert synced["flow_run_url"].endswith(f"/runs/flow-run/{run_id}")
        assert synced["flow_run_url"].startswith("http://127.0.0.1:")
        assert "/api/" not in synced["flow_run_url"]

    def test_links_name_the_ui_address_people_reach_when_one_is_set(
        self, serve_api, store, tmp_path
    ):
        # As in the compose file: the API reaches Prefect by an inner address.
        server = serve_api(
            Settings(
                data_dir=tmp_path,
                database_url=store.url,
                prefect_api_url="http://127.0.0.1:9/api",
                prefect_ui_url="https://prefect.example.com/",
                crm="none",
            )
        )
        with server.client() as http:
            lead_id = new_lead(http)
            run_id = uuid.uuid4()
            record(store, lead_id, "crm.synced", run_id)
            timeline = http.get(f"/api/leads/{lead_id}/timeline").json()["data"]
            runs = http.get(f"/api/leads/{lead_id}/runs").json()["data"]
            root = http.get("/").json()

        link = f"https://prefect.example.com/runs/flow-run/{run_id}"
        assert timeline[1]["flow_run_url"] == link
        assert runs[0]["ui_url"] == link
        assert root["prefect_ui"] == "https://prefect.example.com"


@pytest.mark.slow
class TestWithPrefect:
    """Real runs on the session's Prefect server."""

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
        with server.client() as http:
            yield http

    @pytest.fixture
    def deployment(self, prefect_server) -> Iterator[tuple[str, UUID]]:
        """A deployment of the test flow under a new name; removed with its runs."""
        name = f"lead-runs-{uuid.uuid4().hex[:8]}"

        async def register(client: PrefectClient) -> UUID:
            flow_id = await client.create_flow(touch_lead)
            return await client.create_deployment(flow_id, name)

        async def remove(client: PrefectClient) -> None:
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[made]))
            )
            for run in runs:
                await client.delete_flow_run(run.id)
            await client.delete_deployment(made)

        made = on_prefect(prefect_server.api_url, register)
        yield name, made
        on_prefect(prefect_server.api_url, remove)

    @pytest.fixture
    def completed_run(self, prefect_server, tmp_path) -> UUID:
        """A run of the test flow, run to the end in this process."""
        with temporary_settings(
            updates={
                PREFECT_API_URL: prefect_server.api_url,
                PREFECT_HOME: str(tmp_path / "prefect"),
            }
        ):
            state = touch_lead(return_state=True)
            # Its logs ship in the background; sent before the server stops.
            APILogWorker.drain_all(timeout=5)
        return state.state_details.flow_run_id

    def test_lists_each_run_with_its_workflow_and_state_newest_first(
        self, api, store, prefect_server, deployment, completed_run
    ):
        name, deployment_id = deployment
        scheduled = on_prefect(
            prefect_server.api_url,
            lambda c: c.create_flow_run_from_deployment(deployment_id),
        )
        forgotten = uuid.uuid4()
        lead_id = new_lead(api)
        record(store, lead_id, "crm.synced", forgotten)
        record(store, lead_id, "crm.synced", completed_run)
        record(store, lead_id, "email.sent", completed_run)
        record(store, lead_id, "email.sent", scheduled.id)

        body = api.get(f"/api/leads/{lead_id}/runs").json()

        assert body["prefect_reachable"] is True
        newest, done, gone = body["data"]
        assert (newest["run_id"], newest["workflow_id"]) == (str(scheduled.id), name)
        assert (newest["state"], newest["flow_run_name"]) == (
            "SCHEDULED",
            scheduled.name,
        )
        assert (done["run_id"], done["state"]) == (str(completed_run), "COMPLETED")
        assert done["workflow_id"] is None, "run without a deployment"
        assert done["event_kinds"] == ["crm.synced", "email.sent"]
        assert done["start_time"] and done["end_time"]
        assert (gone["run_id"], gone["state"]) == (str(forgotten), None)
        ui = prefect_server.api_url.removesuffix("/api")
        assert newest["ui_url"] == f"{ui}/runs/flow-run/{scheduled.id}"
