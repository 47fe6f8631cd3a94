"""The sandbox's records outlive a restart: `orchestrator sandbox` as a real process."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import hubspot
import pytest
from hubspot.crm.contacts import SimplePublicObjectInputForCreate
from simple_salesforce import Salesforce

from connectors.crm.salesforce.client import SalesforceSession
from connectors.sandbox.hubspot import SANDBOX_TOKEN
from connectors.sandbox.salesforce import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET
from connectors.sandbox.server import running_sandbox
from connectors.sandbox.state_file import SAVE_EVERY_SECONDS

ORCHESTRATOR = str(Path(sys.executable).with_name("orchestrator"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Sandbox:
    """One `orchestrator sandbox` process, its log, and the vendors' clients on it."""

    def __init__(self, args: list[str], data_dir: Path, log: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                [ORCHESTRATOR, "sandbox", "--port", self.url.rsplit(":", 1)[1], *args],
                env=env | {"ORCH_DATA_DIR": str(data_dir)},
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.http = httpx.Client(base_url=self.url, timeout=10)
        self.sf_session = SalesforceSession(timeout=10, on_headers=lambda h: None)
        self.sf_session.route_to(self.url)
        deadline = time.monotonic() + 30
        while not self._answers():
            assert self.process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the sandbox did not come up"
            time.sleep(0.1)

    def _answers(self) -> bool:
        try:
            return self.http.get("/").status_code == 200
        except httpx.TransportError:
            return False

    def overview(self) -> dict[str, Any]:
        return self.http.get("/").json()

    def hubspot(self) -> Any:
        return hubspot.Client.create(
            access_token=SANDBOX_TOKEN, host=self.url, base_url=self.url, retry=False
        )

    def create_contact(self, email: str) -> Any:
        return self.hubspot().crm.contacts.basic_api.create(
            SimplePublicObjectInputForCreate(properties={"email": email})
        )

    def salesforce(self) -> Salesforce:
        token = self.http.post(
            "/services/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET),
        ).json()
        return Salesforce(
            instance_url=token["instance_url"],
            session_id=token["access_token"],
            session=self.sf_session,
        )

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Signals the process and waits for it to end (uvicorn re-raises SIGTERM)."""
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout=15)
        finally:
            self.http.close()
            self.sf_session.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def start(tmp_path: Path, data_dir: Path) -> Iterator[Callable[..., Sandbox]]:
    """Starts `orchestrator sandbox` with the given options; kills what is left."""
    started: list[Sandbox] = []

    def start(*args: str) -> Sandbox:
        started.append(Sandbox(list(args), data_dir, tmp_path / "sandbox.log"))
        return started[-1]

    yield start
    for sandbox in started:
        if sandbox.process.poll() is None:
            sandbox.stop(signal.SIGKILL)


def wait_until(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def lead_number(lead_id: str) -> int:
    """The counter in an id like `00Q000000000001AAA`."""
    return int(lead_id[3:-3])


class TestRestart:
    def test_records_survive_sigterm_and_ids_continue_after_the_last(
        self, start, tmp_path
    ):
        state = tmp_path / "elsewhere" / "crm.json"
        first = start("--state", str(state))
        contact = first.create_contact("ada@example.com")
        lead_id = first.salesforce().Lead.create(
            {"LastName": "Lovelace", "Company": "Analytical (fake)"}
        )["id"]
        first.stop()

        second = start("--state", str(state))
        kept = second.hubspot().crm.contacts.basic_api.get_by_id(contact.id)
        sf = second.salesforce()
        lead = sf.Lead.get(lead_id)
        next_contact = second.create_contact("grace@example.com")
        next_lead_id = sf.Lead.create({"LastName": "Hopper", "Company": "Navy"})["id"]

        assert (contact.id, kept.properties["email"]) == ("1001", "ada@example.com")
        assert (kept.created_at, kept.updated_at) == (
            contact.created_at,
            contact.updated_at,
        )
        assert (lead["LastName"], lead["Company"]) == ("Lovelace", "Analytical (fake)")
        assert next_contact.id == "1002"
        assert lead_number(next_lead_id) > lead_number(lead_id)
        assert second.overview()["persistence"]["file"] == str(state)

    def test_a_kill_9_after_the_periodic_save_keeps_the_records(self, start, data_dir):
        # Without --state the file is the data dir's sandbox.json.
        state = data_dir.resolve() / "sandbox.json"
        first = start()
        first.create_contact("ada@example.com")
        wait_until(
            lambda: state.exists() and "ada@example.com" in state.read_text(),
            SAVE_EVERY_SECONDS + 5,
        )
        first.stop(signal.SIGKILL)

        second = start()

        assert second.overview()["hubspot"]["contacts"] == 1
        assert second.create_contact("grace@example.com").id == "1002"


class TestUnsubscribes:
    def test_an_unsubscribe_outlives_a_restart_and_is_not_taken_twice(self, tmp_path):
        state = tmp_path / "sandbox.json"
        body = {"emailAddress": "ada@example.com", "subscriptionId": "1001"}
        auth = {"Authorization": f"Bearer {SANDBOX_TOKEN}"}
        with running_sandbox(state_file=state) as (url, _held):
            httpx.post(
                f"{url}/communication-preferences/v3/unsubscribe",
                json=body,
                headers=auth,
            ).raise_for_status()

        with running_sandbox(state_file=state) as (url, held):
            again = httpx.post(
                f"{url}/communication-preferences/v3/unsubscribe",
                json=body,
                headers=auth,
            )
            kept = httpx.get(f"{url}/_sandbox/hubspot/subscriptions").json()

        assert again.status_code == 400
        assert "already unsubscribed" in again.json()["message"]
        assert [(k["email"], k["subscription_id"]) for k in kept] == [
            ("ada@example.com", "1001")
        ]

    def test_a_file_saved_before_unsubscribes_were_kept_still_loads(self, tmp_path):
        state = tmp_path / "sandbox.json"
        state.write_text(
            json.dumps(
                {
                    "format": 1,
                    "hubspot": {"next_id": 1001, "contacts": []},
                    "salesforce": {"next_id": 1, "leads": [], "accounts": []},
                }
            )
        )

        with running_sandbox(state_file=state) as (_url, held):
            assert held.hubspot.subscriptions.records() == []

        assert not (tmp_path / "sandbox.json.corrupt").exists()


class TestUnusableFile:
    def test_a_corrupt_file_starts_empty_and_is_set_aside(self, start, tmp_path):
        state = tmp_path / "sandbox.json"
        state.write_text('{"format": 1, "hubspot": {"next_id": 10')

        sandbox = start("--state", str(state))

        assert sandbox.overview()["hubspot"]["contacts"] == 0
        assert sandbox.create_contact("ada@example.com").id == "1001"
        aside = tmp_path / "sandbox.json.corrupt"
        assert aside.read_text() == '{"format": 1, "hubspot": {"next_id": 10'
        sandbox.stop()
        warning = next(
            line for line in sandbox.log.read_text().splitlines() if "WARNING" in line
        )
        assert str(state) in warning and "Invalid JSON" in warning
        assert "ada@example.com" in state.read_text()

    def test_a_file_of_the_wrong_shape_names_the_problem(self, tmp_path, caplog):
        state = tmp_path / "sandbox.json"
        state.write_text(json.dumps({"format": 1, "hubspot": {"next_id": "many"}}))

        caplog.set_level(logging.WARNING)
        with running_sandbox(state_file=state) as (_url, held):
            assert len(held.hubspot.contacts) == 0

        assert "hubspot.next_id: Input should be a valid integer" in caplog.text
        assert str(state) in caplog.text
        assert (tmp_path / "sandbox.json.corrupt").exists()
        assert not state.exists()


class TestWithoutAFile:
    def test_memory_reads_and_writes_no_file(self, start, data_dir):
        data_dir.mkdir()
        saved = data_dir / "sandbox.json"
        with running_sandbox(state_file=saved) as (url, _state):
            httpx.post(
                f"{url}/_sandbox/hubspot/contacts/seed",
                json={"contacts": [{"properties": {"email": "old@example.com"}}]},
            ).raise_for_status()
        before = saved.read_bytes()

        sandbox = start("--memory")
        overview = sandbox.overview()
        sandbox.create_contact("ada@example.com")
        sandbox.stop()

        assert overview["hubspot"]["contacts"] == 0
        assert overview["persistence"]["file"] is None
        assert saved.read_bytes() == before
        assert sorted(p.name for p in data_dir.iterdir()) == ["sandbox.json"]

    def test_running_sandbox_keeps_nothing_unless_given_a_file(self):
        with running_sandbox() as (url, _state):
            overview = httpx.get(f"{url}/").json()

        assert overview["persistence"]["file"] is None
        assert overview["docs"] == "/_sandbox/docs"


class TestReset:
    def test_reset_empties_the_file_at_the_next_save(self, tmp_path):
        state = tmp_path / "sandbox.json"
        with running_sandbox(state_file=state) as (_url, held):
            held.hubspot.contacts.seed(None, {"email": "ada@example.com"}, 0)
        assert "ada@example.com" in state.read_text()

        with running_sandbox(state_file=state) as (url, held):
            assert len(held.hubspot.contacts) == 1
            httpx.post(f"{url}/_sandbox/reset").raise_for_status()

        saved = json.loads(state.read_text())
        assert saved["hubspot"] == {
            "next_id": 1001,
            "contacts": [],
            "subscriptions": [],
        }
        assert saved["salesforce"]["leads"] == saved["salesforce"]["accounts"] == []
