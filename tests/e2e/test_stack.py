"""The whole stack as `make run` starts it, driven over HTTP, then broken on purpose.

One `orchestrator up` runs for the module against the session's Prefect server.
The tests run in file order: the ones that kill parts of the stack come last.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hmac
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Pending
from sqlalchemy import create_engine, text

from tests.conftest import SCALED

pytestmark = pytest.mark.slow

ORCHESTRATOR = str(Path(sys.executable).with_name("orchestrator"))
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def wait_for(check: Callable[[], object], timeout: float, what: str) -> object:
    """Polls `check` until it returns something truthy; fails naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class RunningStack:
    process: subprocess.Popen[bytes]
    data_dir: Path
    api: httpx.Client
    prefect_url: str
    sandbox_url: str
    store_url: str

    @property
    def log(self) -> str:
        return (self.data_dir / "up.log").read_text()

    @property
    def outbox(self) -> Path:
        return self.data_dir / "outbox"

    def recipients(self) -> list[str]:
        """The To address of every .eml written so far."""
        if not self.outbox.exists():
            return []
        return [
            str(email.message_from_bytes(path.read_bytes())["To"])
            for path in sorted(self.outbox.glob("*.eml"))
        ]

    def messages_to(self, address: str) -> list[email.message.EmailMessage]:
        """Every message written for `address` so far, oldest first, parsed."""
        if not self.outbox.exists():
            return []
        found = [
            email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            for path in sorted(self.outbox.glob("*.eml"))
        ]
        return [m for m in found if str(m["To"]).lower() == address.lower()]

    def mails_to(self, address: str) -> int:
        """How many messages went to `address` (the domain is case-blind)."""
        wanted = address.lower()
        return sum(wanted == r.lower() for r in self.recipients())

    def store(self, sql: str, **params: object) -> list[tuple]:
        engine = create_engine(self.store_url)
        try:
            with engine.connect() as connection:
                return [tuple(row) for row in connection.execute(text(sql), params)]
        finally:
            engine.dispose()

    def child_pid(self, name: str) -> int:
        found = re.findall(rf"started {name} \(pid (\d+)\)", self.log)
        assert found, f"{name} never started:\n{self.log}"
        return int(found[-1])


def prefect(stack: RunningStack, call: Callable[[PrefectClient], object]) -> object:
    async def run() -> object:
        async with PrefectClient(api=stack.prefect_url) as client:
            return await call(client)

    return asyncio.run(run())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def stack(prefect_server, new_store_url, tmp_path_factory) -> Iterator[RunningStack]:
    """`orchestrator up` on a fresh data dir, using the session's Prefect server.

    Its store is the data dir's SQLite file `make run` uses, or a new PostgreSQL
    database in the scaled configuration.
    """
    data_dir = tmp_path_factory.mktemp("stack")
    store_url = (
        new_store_url("postgresql")
        if SCALED
        else f"sqlite:///{data_dir / 'orchestrator.db'}"
    )
    port = _free_port()
    sandbox_port = _free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "PREFECT_"))
    }
    env |= {
        "ORCH_DATA_DIR": str(data_dir),
        "ORCH_API_PORT": str(port),
        "ORCH_SANDBOX_PORT": str(sandbox_port),
        "ORCH_PREFECT_API_URL": prefect_server.api_url,
    }
    if SCALED:
        env["ORCH_DATABASE_URL"] = store_url
    with (data_dir / "up.log").open("wb") as log:
        process = subprocess.Popen(
            [ORCHESTRATOR, "up"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    running = RunningStack(
        process,
        data_dir,
        api,
        prefect_server.api_url,
        f"http://127.0.0.1:{sandbox_port}",
        store_url,
    )

    def ready() -> bool:
        assert process.poll() is None, running.log
        key_file = data_dir / "api-key"
        if "authorization" not in api.headers and key_file.exists():
            # The development key `orchestrator up` made and printed. It is
            # printed just after the file is written: wait for the line.
            key = key_file.read_text().strip()
            if key not in running.log:
                return False
            api.headers["Authorization"] = f"Bearer {key}"
        try:
            status = api.get("/api/status").json()
        except (httpx.HTTPError, ValueError):
            return False
        runner = status.get("prefect", {}).get("flow_runner", {})
        return set(runner.get("deployments", {}).values()) == {"READY"}

    try:
        wait_for(ready, 120, "the stack to come up with every deployment READY")
        yield running
    finally:
        # Also when it never came up: no stack may outlive the session.
        api.close()
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=90)
    assert process.returncode == 0, running.log
    assert "stopped flow-runner" in running.log


def trigger(stack: RunningStack, workflow: str, **body: object) -> dict:
    response = stack.api.post(
        "/api/workflows/trigger", json={"workflow_id": workflow, **body}
    )
    assert response.status_code == 202, response.text
    return response.json()


def final_status(stack: RunningStack, run_id: str, timeout: float = 90) -> dict:
    def done() -> dict | None:
        status = stack.api.get(f"/api/workflows/{run_id}/status").json()
        return status if status["state"] in FINAL else None

    return wait_for(done, timeout, f"flow run {run_id} to finish")


def test_the_readme_lead_gets_its_welcome_email_within_30_seconds(stack):
    posted = time.monotonic()
    lead = stack.api.post(
        "/api/leads",
        json={
            "email": "Ada@Example.com",
            "first_name": "Ada",
            "phone": "(415) 555-0100",
        },
    )
    assert lead.status_code == 201

    wait_for(lambda: stack.mails_to("Ada@Example.com"), 30, "the welcome e-mail")

    assert time.monotonic() - posted < 30
    timeline = stack.api.get(f"/api/leads/{lead.json()['id']}/timeline").json()["data"]
    sent = [event for event in timeline if event["kind"] == "email.sent"]
    assert len(sent) == 1
    assert UUID(sent[0]["flow_run_id"])


def test_posted_and_imported_leads_reach_the_crm_sandbox_within_30_seconds(stack):
    posted = time.monotonic()
    lead = stack.api.post(
        "/api/leads",
        json={"email": "Lin.Wu@Example.com", "first_name": "Lin", "last_name": "Wu"},
    ).json()
    upload = stack.api.post(
        "/api/imports",
        files={
            "file": (
                "two.csv",
                b"email,first_name,company\r\nkim@example.com,Kim,Kimco\r\n"
                b"lee@example.com,Lee,Leeco\r\n",
                "text/csv",
            )
        },
    )
    assert upload.status_code == 202, upload.text

    def in_sandbox() -> dict | None:
        contacts = httpx.get(f"{stack.sandbox_url}/_sandbox/hubspot/contacts").json()
        emails = {c["properties"]["email"]: c for c in contacts}
        wanted = {"lin.wu@example.com", "kim@example.com", "lee@example.com"}
        return emails if wanted <= set(emails) else None

    contacts = wait_for(in_sandbox, 30, "the three leads in the CRM sandbox")
    assert time.monotonic() - posted < 30
    assert contacts["lin.wu@example.com"]["properties"]["firstname"] == "Lin"

    def synced() -> dict | None:
        view = stack.api.get(f"/api/leads/{lead['id']}").json()
        return view if view["crm_sync_status"] == "synced" else None

    view = wait_for(synced, 15, "the lead's sync to be recorded")
    assert view["crm_id"] == contacts["lin.wu@example.com"]["id"]
    timeline = stack.api.get(f"/api/leads/{lead['id']}/timeline").json()["data"]
    [event] = [e for e in timeline if e["kind"] == "crm.created"]
    assert event["detail"]["crm_id"] == view["crm_id"]
    assert UUID(event["flow_run_id"])


def test_a_sequence_goes_on_schedule_and_an_unsubscribe_click_stops_it(stack):
    address = "lin@example.com"
    started = trigger(
        stack, "quick_tour", lead_data={"email": address, "first_name": "Lin"}
    )
    lead_id = started["lead_id"]

    def subjects() -> list[str]:
        return [str(m["Subject"]) for m in stack.messages_to(address)]

    wait_for(
        lambda: "Quick tour 1 of 3: welcome" in subjects(), 60, "the tour's step 1"
    )
    # Step 2 is due a minute later and goes at the dispatcher's next
    # every-minute run.
    wait_for(lambda: len(tour_of(subjects())) == 2, 150, "the tour's step 2")
    second = [m for m in stack.messages_to(address) if "2 of 3" in str(m["Subject"])]
    link = str(second[0]["List-Unsubscribe"]).strip("<>")
    assert second[0]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    clicked = stack.api.post(
        urlsplit(link).path, data={"List-Unsubscribe": "One-Click"}
    )

    assert clicked.status_code == 200

    def tour_state() -> dict | None:
        emails = stack.api.get(f"/api/leads/{lead_id}/emails").json()
        (tour,) = [e for e in emails["sequences"] if e["sequence"] == "quick_tour"]
        return tour if tour["status"] != "active" else None

    tour = wait_for(tour_state, 150, "the tour to stop")
    assert tour["status"] == "stopped"
    assert {step["id"]: step["outcome"] for step in tour["steps"]} == {
        "tour_1": "sent",
        "tour_2": "sent",
        "tour_3": "skipped_unsubscribed",
    }
    assert len(tour_of(subjects())) == 2
    # The outbox, the steps and the timeline name the same two messages.
    written = {
        str(m["Message-ID"])
        for m in stack.messages_to(address)
        if str(m["Subject"]).startswith("Quick tour")
    }
    assert {step["message_id"] for step in tour["steps"][:2]} == written
    timeline = stack.api.get(f"/api/leads/{lead_id}/timeline?limit=500").json()["data"]
    sent = [
        e["detail"]["message_id"]
        for e in timeline
        if e["kind"] == "email.sent" and e["detail"]["sequence"] == "quick_tour"
    ]
    assert set(sent) == written and len(sent) == 2
    kinds = [e["kind"] for e in timeline]
    assert "email.unsubscribed" in kinds and "sequence.stopped" in kinds
    assert all(UUID(e["flow_run_id"]) for e in timeline if e["kind"] == "email.sent")
    lead = stack.api.get(f"/api/leads/{lead_id}").json()
    assert lead["email_opt_out"] is True


def tour_of(subjects: list[str]) -> list[str]:
    return [s for s in subjects if s.startswith("Quick tour")]


def test_a_triggered_run_is_completed_on_the_status_endpoint(stack):
    started = trigger(
        stack, "welcome_sequence", lead_data={"email": "grace@example.com"}
    )

    status = final_status(stack, started["run_id"])

    assert status["state"] == "COMPLETED", status
    assert status["workflow_id"] == "welcome_sequence"
    assert status["start_time"] and status["end_time"]
    assert status["ui_url"].endswith(started["run_id"])
    wait_for(lambda: stack.mails_to("grace@example.com"), 30, "grace's e-mail")


def test_unknown_workflows_and_runs_are_404(stack):
    unknown = stack.api.post("/api/workflows/trigger", json={"workflow_id": "nope"})
    no_run = stack.api.get(f"/api/workflows/{UUID(int=1)}/status")
    no_lead = stack.api.post(
        "/api/workflows/trigger",
        json={"workflow_id": "welcome_sequence", "lead_id": str(UUID(int=2))},
    )

    assert unknown.status_code == 404
    assert "sequence_dispatcher" in unknown.json()["detail"]
    assert "welcome_sequence" in unknown.json()["detail"]
    assert no_run.status_code == 404
    assert no_lead.status_code == 404


def test_overlapping_dispatcher_runs_send_the_email_once(stack):
    # Three drains that keep polling for eight idle seconds, all running when
    # the lead arrives, race to claim it (with the event-triggered drain too).
    runs = [
        trigger(stack, "welcome_sequence", parameters={"idle_grace_seconds": 8})
        for _ in range(3)
    ]

    def all_running() -> bool:
        states = [
            stack.api.get(f"/api/workflows/{run['run_id']}/status").json()["state"]
            for run in runs
        ]
        return states == ["RUNNING"] * 3

    wait_for(all_running, 60, "three dispatcher runs to be running at once")
    stack.api.post("/api/leads", json={"email": "overlap@example.com"})
    statuses = [final_status(stack, run["run_id"]) for run in runs]

    assert {status["state"] for status in statuses} == {"COMPLETED"}
    wait_for(lambda: stack.mails_to("overlap@example.com"), 30, "the e-mail")
    time.sleep(3)
    assert stack.mails_to("overlap@example.com") == 1


def test_unknown_parameters_are_422_naming_them(stack):
    response = stack.api.post(
        "/api/workflows/trigger",
        json={"workflow_id": "welcome_sequence", "parameters": {"colour": "red"}},
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "parameters.colour"


def test_a_webhook_sent_three_times_is_one_lead_synced_and_greeted_once(stack):
    # As the README shows it: the source's development secret, then curl.
    secret = subprocess.run(
        [ORCHESTRATOR, "webhooks", "secret", "forms"],
        env={**os.environ, "ORCH_DATA_DIR": str(stack.data_dir)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    body = b'{"email": "Yara.Haddad@Example.com", "first_name": "Yara", "form": "demo"}'
    stamp = int(time.time())
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, "sha256")
    headers = {
        "Content-Type": "application/json",
        "X-Event-Id": "evt-e2e-1",
        "X-Orchestrator-Signature": f"t={stamp},v1={digest.hexdigest()}",
    }

    answers = [
        stack.api.post("/api/webhooks/forms", content=body, headers=headers)
        for _ in range(3)
    ]

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.json()["new"] for a in answers] == [1, 0, 0]
    address = "yara.haddad@example.com"
    wait_for(lambda: stack.mails_to(address), 30, "the webhook lead's welcome e-mail")

    def in_sandbox() -> bool:
        contacts = httpx.get(f"{stack.sandbox_url}/_sandbox/hubspot/contacts").json()
        return any(c["properties"]["email"] == address for c in contacts)

    wait_for(in_sandbox, 30, "the webhook lead in the CRM sandbox")
    [(lead_id,)] = stack.store("SELECT id FROM leads WHERE email = :e", e=address)
    timeline = stack.api.get(f"/api/leads/{lead_id}/timeline").json()["data"]
    [created] = [e for e in timeline if e["kind"] == "lead.created"]
    assert created["source"] == "webhook:forms"
    assert created["detail"]["reference"] == "webhook:forms:evt-e2e-1"
    # The lead's runs lead to the very runs its timeline names, in the Prefect UI.
    runs = stack.api.get(f"/api/leads/{lead_id}/runs").json()["data"]
    named = {e["flow_run_id"] for e in timeline if e["flow_run_id"]}
    assert named and named <= {run["run_id"] for run in runs}
    assert all(run["ui_url"].endswith(run["run_id"]) for run in runs)
    # Another sync or dispatcher run later must not send it again.
    time.sleep(5)
    assert stack.mails_to(address) == 1


@pytest.mark.timeout(600)
def test_leads_posted_while_prefect_is_down_are_greeted_once_it_is_back(
    stack, prefect_server
):
    prefect_server.stop()
    try:
        addresses = [f"offline{i}@example.com" for i in range(3)]
        for address in addresses:
            response = stack.api.post("/api/leads", json={"email": address})
            assert response.status_code == 201
        assert stack.api.get("/health").status_code == 200
        status = stack.api.get("/api/status").json()
        assert status["prefect"]["reachable"] is False
    finally:
        prefect_server.start()

    for address in addresses:
        wait_for(lambda a=address: stack.mails_to(a), 180, f"the e-mail to {address}")
        assert stack.mails_to(address) == 1


def _running_dispatcher_runs(client: PrefectClient):
    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(
            name=DeploymentFilterName(any_=["sequence_dispatcher"])
        ),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.RUNNING])
            )
        ),
    )


@pytest.mark.timeout(900)
def test_a_killed_flow_runner_is_restarted_and_its_claims_are_finished(stack):
    leads = [{"email": f"bulk{i}@example.com"} for i in range(1000)]
    assert stack.api.post("/api/leads/batch", json=leads).status_code == 200
    before = len(stack.recipients())

    wait_for(lambda: len(stack.recipients()) > before, 60, "the drain to start sending")
    running = prefect(stack, _running_dispatcher_runs)
    runner = stack.child_pid("flow-runner")
    os.killpg(runner, signal.SIGKILL)
    killed_at = time.monotonic()
    assert running, "no dispatcher run was RUNNING when the runner was killed"
    assert len(stack.recipients()) < before + 1000, "the drain finished before the kill"

    wait_for(
        lambda: "flow-runner exited with -9; restart #1" in stack.log,
        30,
        "the supervisor to restart the flow runner",
    )

    def all_settled() -> bool:
        (count,) = stack.store(
            "SELECT count(*) FROM sequence_steps s JOIN leads l ON l.id = s.lead_id "
            "WHERE l.email LIKE 'bulk%' AND s.status IN ('sent', 'unknown')"
        )[0]
        return count == 1000

    wait_for(all_settled, 300, "every claimed step to be sent or parked")
    assert time.monotonic() - killed_at < 300

    sent, unknown = (
        stack.store(
            "SELECT count(*) FROM sequence_steps s JOIN leads l ON l.id = s.lead_id "
            "WHERE l.email LIKE 'bulk%' AND s.status = :status",
            status=status,
        )[0][0]
        for status in ("sent", "unknown")
    )
    bulk_mails = [r for r in stack.recipients() if r.startswith("bulk")]
    assert len(bulk_mails) == len(set(bulk_mails)), "no one got the e-mail twice"
    # A step the kill caught mid-send is `unknown`: its message may or may not
    # have been written, and it is never sent again.
    assert unknown <= 2
    assert sent <= len(bulk_mails) <= sent + unknown

    killed = running[0].id

    def crashed() -> bool:
        run = prefect(stack, lambda client: client.read_flow_run(killed))
        return run.state.type == StateType.CRASHED

    wait_for(crashed, 300, f"the killed run {killed} to be marked CRASHED")


@pytest.mark.timeout(900)
def test_a_run_killed_while_pending_does_not_keep_the_drain_slot(stack):
    async def hold_slot(client: PrefectClient):
        [deployment] = await client.read_deployments(
            deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=["sequence_dispatcher"])
            )
        )
        run = await client.create_flow_run_from_deployment(deployment.id)
        # What a runner does before it starts the run's process: take the
        # deployment's slot. The process never comes, as if killed at once.
        result = await client.set_flow_run_state(run.id, Pending(), force=False)
        return run.id, result.state.type

    async def wait_for_slot_holder_to_clear(client: PrefectClient, run_id):
        return (await client.read_flow_run(run_id)).state.type

    # A scheduled drain may hold the slot at that moment; try again shortly.
    for _ in range(20):
        run_id, state = prefect(stack, lambda client: hold_slot(client))
        if state == StateType.PENDING:
            break
        time.sleep(3)
    assert state == StateType.PENDING, "never got the drain slot to hold"
    probe = trigger(stack, "sequence_dispatcher")
    assert final_status(stack, probe["run_id"])["state"] == "CANCELLED", (
        "the pending run should hold the slot at first"
    )

    def slot_free() -> bool:
        probe = trigger(stack, "sequence_dispatcher")
        return final_status(stack, probe["run_id"], timeout=120)["state"] == "COMPLETED"

    wait_for(slot_free, 240, "the drain slot to be free again")

    def crashed() -> bool:
        state = prefect(
            stack, lambda client: wait_for_slot_holder_to_clear(client, run_id)
        )
        return state == StateType.CRASHED

    wait_for(crashed, 240, "the stuck pending run to be marked CRASHED")
