"""The CRM commands as a user runs them: real processes against a real sandbox."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from connectors.sandbox.server import running_sandbox
from leads.intake import submit
from leads.store.outbox import CRM_SYNC
from leads.store.tables import Lead, OutboxItem, TimelineEvent

ORCHESTRATOR = str(Path(sys.executable).with_name("orchestrator"))


def run(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ORCHESTRATOR, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    with running_sandbox() as (url, _state):
        yield url


@pytest.fixture
def sandbox_api(sandbox_url) -> Iterator[httpx.Client]:
    """The sandbox's own routes, emptied first."""
    with httpx.Client(base_url=sandbox_url, timeout=30) as http:
        assert http.post("/_sandbox/reset").status_code == 204
        yield http


@pytest.fixture
def env(store, sandbox_url, sandbox_api, tmp_path) -> dict[str, str]:
    """The environment of a user whose CRM is the sandbox, on the test's store."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    return clean | {
        "ORCH_DATA_DIR": str(tmp_path / "data"),
        "ORCH_DATABASE_URL": store.url,
        "ORCH_CRM": "sandbox",
        "ORCH_SANDBOX_CRM": "hubspot",
        "ORCH_SANDBOX_PORT": sandbox_url.rsplit(":", 1)[1],
        # A closed port: no test may reach a developer's own API.
        "ORCH_API_PORT": str(free_port()),
    }


def take_in(store, **fields: object) -> Lead:
    return submit(store, "default", fields, channel="api", region="US").lead


def contacts(sandbox_api) -> dict[str, dict]:
    return {
        c["properties"]["email"]: c
        for c in sandbox_api.get("/_sandbox/hubspot/contacts").json()
    }


def lead_row(store, lead_id: str) -> Lead:
    with store.read("default") as scope:
        return scope.get(Lead, lead_id)


def outbox_status(store, lead_id: str) -> str:
    with store.read("default") as scope:
        row = scope.session.scalars(
            scope.select(OutboxItem).where(
                OutboxItem.lead_id == lead_id, OutboxItem.topic == CRM_SYNC
            )
        ).one()
        return row.status


def crm_events(store, lead_id: str) -> list[str]:
    with store.read("default") as scope:
        events = scope.session.scalars(
            scope.select(TimelineEvent).where(
                TimelineEvent.lead_id == lead_id,
                TimelineEvent.kind.startswith("crm_"),
            )
        )
        return [event.kind for event in events]


BROKEN_MAPPING = """\
provider: hubspot
fields:
  firstname: {source: first_name}
  shoe_size: {source: custom.shoe_size}
  createdate: {source: created_at, transform: datetime}
  lifecyclestage: {constant: champion}
"""


class TestCheck:
    @pytest.mark.parametrize("vendor", ["hubspot", "salesforce"])
    def test_the_shipped_mapping_fits_the_sandbox_as_either_vendor(self, env, vendor):
        result = run("crm", "check", env=env | {"ORCH_SANDBOX_CRM": vendor})

        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"the {vendor} mapping fits:")

    def test_a_broken_mapping_fails_naming_each_bad_field(self, env, tmp_path):
        broken = tmp_path / "broken.yaml"
        broken.write_text(BROKEN_MAPPING)

        result = run("crm", "check", "--mapping", str(broken), env=env)

        assert result.returncode == 1
        problems = dict(
            line.split(": ", 1) for line in result.stdout.splitlines() if line
        )
        assert set(problems) == {"shoe_size", "createdate", "lifecyclestage"}
        assert problems["shoe_size"].endswith("[unknown_field]")
        assert problems["createdate"].endswith("[read_only]")
        assert problems["lifecyclestage"].endswith("[picklist_value]")
        assert result.stderr == "error: 3 problems in the hubspot mapping\n"

    def test_a_mapping_file_that_is_not_there_is_one_line(self, env, tmp_path):
        result = run("crm", "check", "--mapping", str(tmp_path / "nope.yaml"), env=env)

        assert result.returncode == 1
        assert result.stderr.startswith("error: ")
        assert result.stderr.strip().count("\n") == 0
        assert "Traceback" not in result.stderr

    def test_without_a_crm_it_fails_in_one_line_naming_the_setting(self, env):
        result = run("crm", "check", env=env | {"ORCH_CRM": "none"})

        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.strip().count("\n") == 0
        assert "ORCH_CRM is `none`" in result.stderr


class TestConnectionTest:
    @pytest.mark.parametrize("vendor", ["hubspot", "salesforce"])
    def test_prints_the_vendor_and_where_it_connected(self, env, sandbox_url, vendor):
        result = run("crm", "test", env=env | {"ORCH_SANDBOX_CRM": vendor})

        assert result.returncode == 0, result.stderr
        assert result.stdout == f"connected to {vendor} (sandbox): {sandbox_url}\n"

    def test_a_refused_token_is_one_line_naming_the_vendor(self, env, sandbox_api):
        sandbox_api.post(
            "/_sandbox/faults", json={"vendor": "hubspot", "status": 401, "times": 9}
        ).raise_for_status()

        result = run("crm", "test", env=env)

        assert result.returncode == 1
        assert result.stderr.startswith("error: could not connect to hubspot: auth")
        assert result.stderr.strip().count("\n") == 0


class TestLocalSync:
    def test_syncs_the_waiting_leads_and_prints_the_counts(
        self, env, store, sandbox_api
    ):
        ada = take_in(store, email="ada@example.com", first_name="Ada")
        take_in(store, email="grace@example.com")
        take_in(store, phone="+1 415 555 0100")

        result = run("sync", "--local", env=env)

        assert result.returncode == 0, result.stderr
        assert result.stdout == "batches: 1, created: 2, skipped: 1\n"
        assert set(contacts(sandbox_api)) == {"ada@example.com", "grace@example.com"}
        assert lead_row(store, ada.id).crm_sync_status == "synced"
        assert run("sync", "--local", env=env).stdout == "nothing was waiting\n"

    def test_retry_requeues_parked_leads_then_syncs_them(self, env, store, sandbox_api):
        lead = take_in(store, email="parked@example.com")
        sandbox_api.post(
            "/_sandbox/faults",
            json={"vendor": "hubspot", "path": "/crm/", "status": 401, "times": 50},
        ).raise_for_status()
        parked = run("sync", "--local", env=env)
        assert parked.stdout == "batches: 1, parked: 1\n", parked.stderr
        assert outbox_status(store, lead.id) == "parked"
        sandbox_api.delete("/_sandbox/faults")

        without_retry = run("sync", "--local", env=env)
        result = run("sync", "--local", "--retry", env=env)

        assert without_retry.stdout == "nothing was waiting\n"
        assert result.returncode == 0, result.stderr
        assert result.stdout == "requeued 1 parked leads\nbatches: 1, created: 1\n"
        assert lead_row(store, lead.id).crm_sync_status == "synced"
        assert set(contacts(sandbox_api)) == {"parked@example.com"}

    def test_without_a_crm_it_fails_in_one_line_and_leaves_the_leads_waiting(
        self, env, store
    ):
        lead = take_in(store, email="waiting@example.com")

        result = run("sync", "--local", env=env | {"ORCH_CRM": "none"})

        assert result.returncode == 1
        assert result.stderr.strip().count("\n") == 0
        assert "ORCH_CRM is `none`" in result.stderr
        assert run("sync", "--local", env=env).stdout == "batches: 1, created: 1\n"
        assert lead_row(store, lead.id).crm_sync_status == "synced"

    def test_without_local_and_no_api_it_fails_in_one_line_naming_local(self, env):
        result = run("sync", env=env)

        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.strip().count("\n") == 0
        assert "is not answering" in result.stderr
        assert "ORCH_API_PORT" in result.stderr
        assert "--local" in result.stderr


class TestDryRun:
    def test_shows_each_leads_action_and_changes_and_writes_nothing(
        self, env, store, sandbox_api
    ):
        sandbox_api.post(
            "/_sandbox/hubspot/contacts/seed",
            json={
                "contacts": [
                    {
                        "id": 5001,
                        "properties": {"email": "old@example.com", "company": "Old"},
                    }
                ]
            },
        ).raise_for_status()
        known = take_in(store, email="old@example.com", company="New")
        new = take_in(store, email="new@example.com", company="Fresh")
        nameless = take_in(store, phone="+1 415 555 0100")
        sandbox_api.delete("/_sandbox/hubspot/requests")

        result = run("sync", "--dry-run", env=env)

        assert result.returncode == 0, result.stderr
        blocks = blocks_by_lead(result.stdout)
        assert blocks[known.id][0] == f"lead {known.id}: update 5001"
        assert "    company: 'Old' → 'New'" in blocks[known.id]
        assert blocks[new.id][0] == f"lead {new.id}: create"
        assert "    company: None → 'Fresh'" in blocks[new.id]
        assert blocks[nameless.id] == [
            f"lead {nameless.id}: skip",
            "    reason: missing_key:email",
        ]

        received = sandbox_api.get("/_sandbox/hubspot/requests").json()["counts"]
        assert not [route for route in received if "upsert" in route]
        assert contacts(sandbox_api)["old@example.com"]["properties"]["company"] == (
            "Old"
        )
        assert "new@example.com" not in contacts(sandbox_api)
        for lead in (known, new, nameless):
            assert lead_row(store, lead.id).crm_sync_status == "pending"
            assert outbox_status(store, lead.id) == "pending"
            assert crm_events(store, lead.id) == []

    def test_with_nothing_waiting_it_says_so(self, env):
        result = run("sync", "--dry-run", env=env)

        assert result.returncode == 0, result.stderr
        assert result.stdout == "no lead is waiting for the CRM\n"


def blocks_by_lead(output: str) -> dict[str, list[str]]:
    """The dry run's lines, grouped under the `lead <id>: …` line they follow."""
    blocks: dict[str, list[str]] = {}
    current: list[str] = []
    for line in output.splitlines():
        if line.startswith("lead "):
            current = [line]
            blocks[line.split()[1].rstrip(":")] = current
        else:
            current.append(line)
    return blocks


class TestSandboxCommand:
    @pytest.mark.slow
    def test_serves_the_sandbox_on_its_port_until_terminated(self, tmp_path):
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        env |= {"ORCH_DATA_DIR": str(tmp_path), "ORCH_SANDBOX_PORT": str(port)}
        log = tmp_path / "sandbox.log"
        with log.open("wb") as output:
            server = subprocess.Popen(
                [ORCHESTRATOR, "sandbox"],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            overview = wait_for(f"http://127.0.0.1:{port}/", server, log)
        finally:
            server.terminate()
            server.wait(timeout=15)

        assert overview["hubspot"]["contacts"] == 0
        assert overview["salesforce"]["records"] == "/_sandbox/salesforce/leads"
        assert f"CRM sandbox on http://127.0.0.1:{port}" in log.read_text()

    def test_a_busy_port_is_one_line_naming_the_setting_or_the_option(self, tmp_path):
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]

            by_setting = run(
                "sandbox",
                env=env
                | {"ORCH_DATA_DIR": str(tmp_path), "ORCH_SANDBOX_PORT": str(port)},
            )
            by_option = run(
                "sandbox",
                "--port",
                str(port),
                env=env | {"ORCH_DATA_DIR": str(tmp_path)},
            )

        assert by_setting.returncode == by_option.returncode == 1
        in_use = f"error: port {port} on 127.0.0.1 is in use; "
        assert by_setting.stderr == in_use + "set ORCH_SANDBOX_PORT to another port\n"
        assert by_option.stderr == in_use + "pass another --port\n"


def wait_for(url: str, server: subprocess.Popen, log: Path) -> dict:
    deadline = time.monotonic() + 30
    while True:
        try:
            answer = httpx.get(url, timeout=2)
            if answer.status_code == 200:
                return answer.json()
        except httpx.TransportError:
            pass
        assert server.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the sandbox did not come up"
        time.sleep(0.2)
