"""Tenants kept apart: one tenant's key finds nothing of another's, on any route.

Tenant A makes one object of every kind the API names by id. The walk takes
the route list from the OpenAPI document, not from a list written here, and
calls every operation that names an object with tenant B's admin key and A's
ids: each must be 404, as for an id that does not exist. A new route whose
path names a kind of object the walk has no object of fails the walk, so it
stays complete as the API grows.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import yaml
from prefect import flow
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.utilities.callables import parameter_schema
from sqlalchemy import select

from connectors.crm.accounts import CrmAccount, parse_credentials
from connectors.crm.mapping import load_mapping
from connectors.crm.store_budget import StoreBudget
from connectors.sandbox import hubspot as hubspot_sandbox
from connectors.sandbox.server import running_sandbox
from leads.encryption import secret_key
from leads.settings import Settings
from leads.store.tables import RateBudgetRow
from leads.webhooks.signatures import sign_orchestrator
from leads.webhooks.sources import derived_secret
from tests.conftest import LiveServer

A, B = "acme", "globex"
A_EMAIL = "ada@example.com"
# Path parameters that name shared configuration, not a tenant's object: the
# walk fills them with a real value and puts A's objects in the query instead.
SHARED = {"name"}
# A valid body for each operation that needs one, so a 404 is about the id
# and not a 422 about the body.
BODIES: dict[tuple[str, str], Any] = {
    ("PUT", "/api/leads/{lead_id}"): {"email": "mallory@example.com"},
    ("PATCH", "/api/leads/{lead_id}"): {"first_name": "Mallory"},
}
# Query parameters an operation needs to get as far as looking the id up.
QUERIES: dict[tuple[str, str], dict[str, str]] = {
    ("DELETE", "/api/leads/{lead_id}"): {"erase": "true"},
}
# What B gets where the answer is not 404. Webhook receipt takes no key: its
# caller proves itself by the source's signature, and B's own source's secret
# does not sign for A's source.
EXPECTED = {"POST /api/webhooks/{source}": 401}


@flow(name="tenant-walk-flow")
def walk_flow(
    import_id: str | None = None, lead_id: str | None = None, count: int = 1
) -> int:
    return count


def on_prefect(url: str, call: Callable[[PrefectClient], Any]) -> Any:
    async def run() -> Any:
        async with PrefectClient(api=url) as client:
            return await call(client)

    return asyncio.run(run())


async def remove(deployment_ids: list[uuid.UUID], client: PrefectClient) -> None:
    """Deletes deployments and the runs they were given."""
    runs = await client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=deployment_ids))
    )
    for run in runs:
        await client.delete_flow_run(run.id)
    for deployment_id in deployment_ids:
        await client.delete_deployment(deployment_id)


@pytest.fixture
def workflow(prefect_server) -> Iterator[str]:
    """A deployment on the session's Prefect server; runs wait, none is served."""
    name = f"tenant-walk-{uuid.uuid4().hex[:8]}"
    schema = parameter_schema(walk_flow).model_dump(exclude_unset=True)

    async def register(client: PrefectClient) -> uuid.UUID:
        flow_id = await client.create_flow(walk_flow)
        return await client.create_deployment(
            flow_id, name, parameter_openapi_schema=schema
        )

    deployment_id = on_prefect(prefect_server.api_url, register)
    yield name
    on_prefect(prefect_server.api_url, lambda client: remove([deployment_id], client))


@pytest.fixture(scope="module")
def sandbox() -> Iterator[str]:
    with running_sandbox() as (url, _state):
        yield url


@pytest.fixture
def settings(store, tmp_path, prefect_server) -> Settings:
    """Settings whose webhook sources are one of A's and one of B's."""
    config = tmp_path / "config"
    shutil.copytree(Settings().config_dir, config)
    sources = {
        f"{tenant}-forms": {
            "signature": "orchestrator",
            "secret_env": f"ORCH_TEST_TENANT_WALK_{tenant.upper()}",
            "delivery_id": {"header": "X-Event-Id"},
            "tenant": tenant,
        }
        for tenant in (A, B)
    }
    (config / "webhooks.yaml").write_text(yaml.safe_dump({"sources": sources}))
    return Settings(
        data_dir=tmp_path / "data",
        database_url=store.url,
        config_dir=config,
        prefect_api_url=prefect_server.api_url,
        crm="none",
    )


@pytest.fixture
def api(serve_api, settings) -> LiveServer:
    return serve_api(settings)


@pytest.fixture
def a(api) -> Iterator[httpx.Client]:
    with api.client(tenant=A, scope="admin") as http:
        yield http


@pytest.fixture
def b(api) -> Iterator[httpx.Client]:
    with api.client(tenant=B, scope="admin") as http:
        yield http


def deliver(api: LiveServer, source: str, signer: str, body: dict) -> httpx.Response:
    """Posts a delivery to `source`, signed with the secret of source `signer`."""
    secret = derived_secret(secret_key(api.settings), signer)
    raw = httpx.Request("POST", "/", json=body).content
    return httpx.post(
        f"{api.url}/api/webhooks/{source}",
        content=raw,
        headers={
            "Content-Type": "application/json",
            "X-Event-Id": uuid.uuid4().hex,
            "X-Orchestrator-Signature": sign_orchestrator(
                secret, int(time.time()), raw
            ),
        },
        timeout=30,
    )


def sandbox_account(sandbox: str) -> dict:
    return {
        "provider": "hubspot",
        "credentials": {"access_token": hubspot_sandbox.SANDBOX_TOKEN, "host": sandbox},
    }


def settled(http: httpx.Client, path: str) -> dict:
    """The delivery once it is no longer pending (it is processed behind)."""
    deadline = time.monotonic() + 20
    while True:
        found = http.get(path).json()
        if found["status"] != "pending" or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@dataclass
class Objects:
    """What tenant A has: its objects' ids by the parameter name that takes them."""

    ids: dict[str, str]
    # Each object as A reads it before the walk, by the path A reads it at.
    reads: dict[str, Any] = field(default_factory=dict)
    # Strings no answer to B may hold.
    secrets: set[str] = field(default_factory=set)


def make_objects(
    api: LiveServer, a: httpx.Client, sandbox: str, workflow: str
) -> Objects:
    """One object of every kind, made by A through the API."""
    lead = a.post(
        "/api/leads", json={"email": A_EMAIL, "first_name": "Ada", "company": "Acme"}
    )
    assert lead.status_code == 201, lead.text
    lead_id = lead.json()["id"]
    twin = a.post("/api/leads", json={"email": "ada+news@example.com"})
    assert twin.json()["outcome"] == "possible_duplicate", twin.text
    [review] = a.get("/api/duplicates").json()["data"]

    upload = a.post(
        "/api/imports",
        files={"file": ("leads.csv", b"email\ncarol@example.com\n", "text/csv")},
    )
    assert upload.status_code == 202, upload.text
    send = a.post(
        "/api/email/send",
        json={
            "category": "transactional",
            "lead_id": lead_id,
            "subject": "Your order",
            "text": "Thank you.",
        },
    )
    assert send.status_code == 202, send.text

    receipt = deliver(api, f"{A}-forms", f"{A}-forms", {"email": "dora@example.com"})
    assert receipt.status_code == 200, receipt.text
    delivery_id = receipt.json()["deliveries"][0]["id"]
    settled(a, f"/api/webhooks/deliveries/{delivery_id}")

    saved = a.post("/api/crm/config", json=sandbox_account(sandbox))
    assert saved.status_code == 200, saved.text
    run = a.post(
        "/api/workflows/trigger", json={"workflow_id": workflow, "lead_id": lead_id}
    )
    assert run.status_code == 202, run.text
    bounced = a.post(
        "/api/email/events",
        json={"events": [event("a-1", "bounced", email="gone@example.com")]},
    )
    assert bounced.status_code == 200, bounced.text

    ids = {
        "lead_id": lead_id,
        "review_id": str(review["id"]),
        "import_id": upload.json()["id"],
        "send_id": send.json()["id"],
        "delivery_id": str(delivery_id),
        "run_id": run.json()["run_id"],
        "source": f"{A}-forms",
    }
    found = Objects(
        ids, secrets={A_EMAIL, "dora@example.com", "carol@example.com", f"{A}-forms"}
    )
    for path in (
        f"/api/leads/{lead_id}",
        f"/api/leads/{lead_id}/timeline",
        f"/api/imports/{ids['import_id']}",
        f"/api/email/sends/{ids['send_id']}",
        f"/api/webhooks/deliveries/{delivery_id}",
        f"/api/workflows/{ids['run_id']}/status",
        "/api/crm/config",
        "/api/duplicates",
    ):
        answer = a.get(path)
        assert answer.status_code == 200, (path, answer.text)
        found.reads[path] = answer.json()
    return found


def event(event_id: str, kind: str, **recipient: str) -> dict:
    detail = {"bounce_type": "hard"} if kind == "bounced" else {}
    return {
        "id": event_id,
        "type": kind,
        "occurred_at": datetime.now(UTC).isoformat(),
        **detail,
        **recipient,
    }


def values_in(document: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """Every string and number in a JSON document, as text, with its key."""
    if isinstance(document, dict):
        for name, value in document.items():
            yield from values_in(value, name)
    elif isinstance(document, list):
        for value in document:
            yield from values_in(value, key)
    elif document is not None:
        yield key, str(document)


def ids_in(document: Any) -> set[str]:
    """The ids a JSON document names: any UUID, and numbers under an id's key."""
    return {
        value
        for key, value in values_in(document)
        if len(value) >= 32 or key == "id" or key.endswith(("_id", "_ids"))
    }


def is_problem_404(response: httpx.Response) -> bool:
    return (
        response.status_code == 404
        and response.headers.get("content-type") == "application/problem+json"
        and response.json()["status"] == 404
    )


@dataclass
class Walked:
    """One call of the walk and what it was answered."""

    label: str
    response: httpx.Response


def walk(
    document: dict,
    objects: Objects,
    shared: dict[str, str],
    call: Callable[[str, str, str, dict, Any, dict], httpx.Response],
) -> list[Walked]:
    """Calls every operation whose path names an object, with A's objects.

    Raises:
        AssertionError: a path names a parameter no object of A's is known
            for, a body is needed that the walk has none of, or an operation
            would be called with nothing of A's in it.
    """
    walked = []
    for path, item in document["paths"].items():
        names = re.findall(r"{(\w+)}", path)
        if not names:
            continue
        for method, operation in item.items():
            label = f"{method.upper()} {path}"
            unknown = set(names) - set(objects.ids) - SHARED
            assert not unknown, (
                f"{label} names {sorted(unknown)}: give tenant A an object of "
                "that kind in make_objects, so the walk can show B gets 404"
            )
            values = {n: objects.ids.get(n) or shared.get(n) for n in names}
            query = dict(QUERIES.get((method.upper(), path), {}))
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query" and parameter["name"] in objects.ids:
                    query[parameter["name"]] = objects.ids[parameter["name"]]
            of_a = [n for n in names if n in objects.ids] + [
                n for n in query if n in objects.ids
            ]
            assert of_a, f"{label} is walked with nothing of A's"
            body = BODIES.get((method.upper(), path))
            if operation.get("requestBody", {}).get("required"):
                assert body is not None, f"{label} needs a body: add one to BODIES"
            url = path.format(**values)
            walked.append(
                Walked(label, call(method.upper(), path, url, query, body, operation))
            )
    return walked


@pytest.mark.slow
def test_every_route_naming_an_object_is_404_to_another_tenant(
    api, a, b, sandbox, workflow
):
    objects = make_objects(api, a, sandbox, workflow)
    [template, *_] = b.get("/api/email/templates").json()["data"]
    document = httpx.get(f"{api.url}/api/openapi.json", timeout=30).json()

    def call(method, path, url, query, body, operation) -> httpx.Response:
        if operation.get("security"):
            return b.request(method, url, params=query, json=body)
        assert f"{method} {path}" == "POST /api/webhooks/{source}", (
            f"{method} {path} takes no key: say how another tenant is kept out"
        )
        return deliver(api, f"{A}-forms", f"{B}-forms", {"email": "eve@example.com"})

    walked = walk(document, objects, {"name": template}, call)

    wrong = {
        w.label: (w.response.status_code, w.response.text[:200])
        for w in walked
        if not (
            w.response.status_code == EXPECTED[w.label]
            if w.label in EXPECTED
            else is_problem_404(w.response)
        )
    }
    assert wrong == {}
    assert len(walked) >= 16
    # Nothing B sent changed anything of A's.
    for path, before in objects.reads.items():
        after = a.get(path).json()
        if path.startswith("/api/workflows/"):
            before, after = before["run_id"], after["run_id"]
        assert after == before, path
    assert a.get("/api/webhooks/deliveries").json()["data"][0]["id"] == int(
        objects.ids["delivery_id"]
    )
    assert len(a.get("/api/webhooks/deliveries").json()["data"]) == 1


def test_a_route_naming_an_unknown_kind_of_object_fails_the_walk():
    document = {"paths": {"/api/widgets/{widget_id}": {"get": {"security": [{}]}}}}

    with pytest.raises(AssertionError, match="widget_id"):
        walk(document, Objects({"lead_id": "x"}), {}, lambda *_: None)


class TestLists:
    @pytest.mark.slow
    def test_no_list_shows_another_tenants_objects(self, api, a, b, sandbox, workflow):
        objects = make_objects(api, a, sandbox, workflow)
        own = b.post("/api/leads", json={"email": "bea@example.com"}).json()["id"]
        document = httpx.get(f"{api.url}/api/openapi.json", timeout=30).json()
        lists = [
            path
            for path, item in document["paths"].items()
            if "{" not in path and "get" in item and item["get"].get("security")
        ]

        shown = {}
        for path in lists:
            answer = b.get(path)
            assert answer.status_code in (200, 409), (path, answer.text)
            text = answer.text
            found = ids_in(answer.json()) & set(objects.ids.values())
            found |= {secret for secret in objects.secrets if secret in text}
            if found:
                shown[path] = sorted(found)

        assert shown == {}
        assert {"/api/leads", "/api/duplicates", "/api/webhooks/deliveries"} <= set(
            lists
        )
        assert [lead["id"] for lead in b.get("/api/leads").json()["data"]] == [own]

    @pytest.mark.slow
    def test_filters_naming_another_tenants_objects_find_nothing(
        self, api, a, b, sandbox, workflow
    ):
        objects = make_objects(api, a, sandbox, workflow)

        assert b.get("/api/leads", params={"email": A_EMAIL}).json()["data"] == []
        assert (
            b.get("/api/webhooks/deliveries", params={"source": f"{A}-forms"}).json()[
                "data"
            ]
            == []
        )
        assert b.get("/api/duplicates", params={"status": "open"}).json()["data"] == []
        assert (
            a.get("/api/leads", params={"email": A_EMAIL}).json()["data"][0]["id"]
            == (objects.ids["lead_id"])
        )


class TestIdsInBodies:
    @pytest.mark.slow
    def test_a_null_import_id_is_the_sweep_of_every_tenant_and_refused(
        self, b, workflow
    ):
        sweep = b.post(
            "/api/workflows/trigger",
            json={"workflow_id": workflow, "parameters": {"import_id": None}},
        )

        assert sweep.status_code == 403, sweep.text
        assert sweep.json()["errors"][0]["reason"] == "cross_tenant"

    @pytest.mark.slow
    def test_another_tenants_ids_in_a_body_are_not_found(
        self, api, a, b, sandbox, workflow
    ):
        objects = make_objects(api, a, sandbox, workflow)
        lead_id, import_id = objects.ids["lead_id"], objects.ids["import_id"]

        send = b.post(
            "/api/email/send",
            json={
                "category": "transactional",
                "lead_id": lead_id,
                "subject": "Hi",
                "text": "Hello.",
            },
        )
        for_lead = b.post(
            "/api/workflows/trigger", json={"workflow_id": workflow, "lead_id": lead_id}
        )
        for_import = b.post(
            "/api/workflows/trigger",
            json={"workflow_id": workflow, "parameters": {"import_id": import_id}},
        )
        unsubscribed = b.post(
            "/api/email/events",
            json={"events": [event("b-1", "unsubscribed", lead_id=lead_id)]},
        )

        assert is_problem_404(send), send.text
        assert is_problem_404(for_lead), for_lead.text
        assert is_problem_404(for_import), for_import.text
        assert unsubscribed.json()["results"][0]["outcome"] == "no_such_recipient"
        assert a.get(f"/api/leads/{lead_id}").json()["status"] != "unsubscribed"
        # A's own trigger with its import is taken.
        mine = a.post(
            "/api/workflows/trigger",
            json={"workflow_id": workflow, "parameters": {"import_id": import_id}},
        )
        assert mine.status_code == 202, mine.text

    @pytest.mark.slow
    def test_a_crm_preview_of_another_tenants_leads_shows_none(
        self, api, a, b, sandbox, workflow
    ):
        objects = make_objects(api, a, sandbox, workflow)
        assert (
            b.post("/api/crm/config", json=sandbox_account(sandbox)).status_code == 200
        )

        preview = b.post(
            "/api/crm/preview", json={"lead_ids": [objects.ids["lead_id"]]}
        )

        assert preview.status_code == 200, preview.text
        assert preview.json()["data"] == []


class TestTenantSettings:
    @pytest.mark.slow
    def test_the_crm_account_webhook_sources_and_suppressions_are_each_tenants_own(
        self, api, a, b, sandbox, workflow
    ):
        make_objects(api, a, sandbox, workflow)

        assert b.get("/api/crm/config").json()["type"].endswith(":no-crm")
        assert b.get("/api/crm/status").json()["provider"] is None
        assert is_problem_404(b.delete("/api/crm/config"))
        assert a.get("/api/crm/config").json()["origin"] == "stored"
        assert [s["name"] for s in b.get("/api/webhooks/sources").json()] == [
            f"{B}-forms"
        ]
        assert [s["name"] for s in a.get("/api/webhooks/sources").json()] == [
            f"{A}-forms"
        ]
        # A hard bounce suppressed the address for A only.
        to_gone = {
            "category": "transactional",
            "to": "gone@example.com",
            "subject": "Hi",
            "text": "Hello.",
        }
        refused = a.post("/api/email/send", json=to_gone)
        assert refused.status_code == 409, refused.text
        assert refused.json()["type"].endswith(":recipient-suppressed")
        assert b.post("/api/email/send", json=to_gone).status_code == 202


class TestRateBudgets:
    """Budgets are kept per CRM account, so tenants share one only on one account."""

    def hubspot(self, settings: Settings, **credentials: str) -> CrmAccount:
        return CrmAccount(
            provider="hubspot",
            credentials=parse_credentials("hubspot", credentials),
            mapping=load_mapping(settings.config_dir / "crm" / "hubspot.yaml"),
        )

    def budgets(self, store) -> list[str]:
        with store.read_across_tenants() as session:
            return list(session.scalars(select(RateBudgetRow.account)))

    def test_two_installations_of_one_oauth_app_have_two_budgets(self, store, settings):
        app = {
            "client_id": "one-app",
            "client_secret": "s",
            "host": "https://api.hubapi.com",
        }
        first = self.hubspot(settings, **app, refresh_token="portal-1")
        second = self.hubspot(settings, **app, refresh_token="portal-2")

        StoreBudget.for_account(store, first, sleep=lambda _: None)
        StoreBudget.for_account(store, second, sleep=lambda _: None)

        assert first.budget_key != second.budget_key
        assert sorted(self.budgets(store)) == sorted(
            [first.budget_key, second.budget_key]
        )

    def test_tenants_on_one_account_share_its_budget(self, api, a, b, sandbox, store):
        for http in (a, b):
            saved = http.post("/api/crm/config", json=sandbox_account(sandbox))
            assert saved.status_code == 200, saved.text

        [shared] = self.budgets(store)
        a_status = a.get("/api/crm/status").json()
        b_status = b.get("/api/crm/status").json()

        assert shared.startswith("hubspot:")
        assert (
            a_status["budget"]["calls_per_window"]
            == (b_status["budget"]["calls_per_window"])
        )


@flow(name="crm-sync")
def stand_in_sync() -> None:
    """Registered as `crm-sync/crm_sync`, the name the API starts syncs by."""


@flow(name="lead-import")
def stand_in_import(import_id: str | None = None) -> None:
    """Registered as `lead-import/lead_import`, the name uploads start runs by."""


@pytest.fixture
def product_deployments(prefect_server) -> Iterator[None]:
    """The sync and import deployments, as the flow runner registers them; no
    runner serves them, so the runs they get only wait."""

    async def register(client: PrefectClient) -> list[uuid.UUID]:
        made = []
        for stand_in, name in (
            (stand_in_sync, "crm_sync"),
            (stand_in_import, "lead_import"),
        ):
            flow_id = await client.create_flow(stand_in)
            made.append(await client.create_deployment(flow_id, name))
        return made

    made = on_prefect(prefect_server.api_url, register)
    yield
    on_prefect(prefect_server.api_url, lambda client: remove(made, client))


@pytest.mark.slow
def test_runs_a_tenant_starts_are_its_own_to_read(
    api, a, b, product_deployments, prefect_server
):
    sync = a.post("/api/crm/sync")
    upload = a.post(
        "/api/imports",
        files={"file": ("leads.csv", b"email\ncarol@example.com\n", "text/csv")},
    )
    assert sync.status_code == 202, sync.text
    assert upload.status_code == 202, upload.text
    runs = [sync.json()["run_id"], upload.json()["flow_run_id"]]

    with api.client() as operator:
        for run_id in runs:
            assert a.get(f"/api/workflows/{run_id}/status").status_code == 200
            assert is_problem_404(b.get(f"/api/workflows/{run_id}/status"))
            # Tagged runs are not the default tenant's either.
            assert is_problem_404(operator.get(f"/api/workflows/{run_id}/status"))

        # A run no tenant started (a schedule's) is the operator's alone.
        scheduled = on_prefect(
            prefect_server.api_url,
            lambda client: client.create_flow_run(stand_in_sync),
        )
        status = f"/api/workflows/{scheduled.id}/status"
        assert operator.get(status).status_code == 200
        assert is_problem_404(a.get(status))
    on_prefect(
        prefect_server.api_url, lambda client: client.delete_flow_run(scheduled.id)
    )
