"""No secret and no personal data in the stack's logs or on its Prefect server.

One `orchestrator up` on a fresh data dir, with its own Prefect server (so its
whole database can be read afterwards), the CRM sandbox, and an SMTP relay with
a login on loopback. The scenario a user would run goes through it: leads
posted, updated, merged and refused; a CSV import with a reject; signed,
token and refused webhooks; a workflow triggered with `lead_data`; CRM
credentials saved (and two refused); welcome e-mails, one refused by the relay
quoting the address; an unsubscribe click; provider e-mail events; an erasure.

Then every log file, the `up` output, and everything Prefect's API serves
(flow and task runs with their states, deployments, artifacts, events, logs,
variables, blocks, automations) and its database file are searched for every
address, phone, name and secret used. A hit fails the test and says where.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import httpx
import psycopg
import pytest
import redis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy.engine import make_url

from connectors.sandbox import hubspot as hubspot_sandbox
from connectors.sandbox import salesforce as salesforce_sandbox
from tests.conftest import SCALED, free_port
from tests.e2e.test_stack import wait_for

pytestmark = pytest.mark.slow

ORCHESTRATOR = str(Path(sys.executable).with_name("orchestrator"))
# Python's and Prefect's level names; a line naming none counts as INFO or above.
DEBUG_MARK = re.compile(r"\bDEBUG\b")

# Secrets the stack is given; each must stay out of every log and of Prefect.
SECRET_KEY = "zq7secretkey-Vt4pRw9LmQ2sNc8x"
WEBHOOK_SECRET = "zq7whsecret-Kd3nBq7WzR1mTy6v"
ZAPIER_TOKEN = "zq7zaptoken-Hp5cXs2LgN8rJw4e"
SMTP_USER = "zq7smtpuser"
SMTP_PASSWORD = "zq7smtppass-Fb9tMe3QvK6yDa1u"
WRONG_HUBSPOT_TOKEN = "zq7crmtoken-Ws8kPz4NcT2hLr5j"
WRONG_SALESFORCE_PASSWORD = "zq7sfpass-Jm6vRb1XqE9gTk3w"


@dataclass(frozen=True)
class Person:
    """A lead as typed, and the forms its values may take in a log."""

    email: str
    first_name: str = ""
    last_name: str = ""
    phone: str = ""
    e164: str = ""

    def needles(self) -> dict[str, str]:
        local = self.email.partition("@")[0]
        found = {
            f"address {self.email}": self.email,
            f"local part of {self.email}": local,
            f"URL-encoded {self.email}": quote(self.email, safe=""),
            f"form-encoded {self.email}": quote_plus(self.email),
        }
        if self.first_name:
            found[f"first name of {self.email}"] = self.first_name
        if self.last_name:
            found[f"last name of {self.email}"] = self.last_name
        if self.phone:
            found[f"phone of {self.email} as typed"] = self.phone
            found[f"phone of {self.email} (E.164)"] = self.e164
            found[f"phone of {self.email} (digits)"] = self.e164.lstrip("+")
        return found


ALPHA = Person(
    "Zq7Privacy.Alpha@Example.com",
    "Xylophonia",
    "Quendrithorpe",
    "+1 415 555 0142",
    "+14155550142",
)
ALPHA_NEW_PHONE = Person(ALPHA.email, phone="(415) 555-0143", e164="+14155550143")
ALPHA_RENAMED = Person(ALPHA.email, last_name="Vashtimorrow")
BRAVO = Person("zq7privacy.bravo@example.com", "Xylophonia", "Quendrithorpe", "", "")
REFUSED = Person("zq7privacy.refused@@example.com", "Ombrellinde")
CHARLIE = Person(
    "zq7privacy.charlie@example.com",
    "Brindlewicke",
    "Tharkastle",
    "+44 20 7946 0958",
    "+442079460958",
)
DELTA_REFUSED = Person("zq7privacy.delta@invalid", "Corvellane")
ECHO = Person("zq7privacy.echo@example.com", "Saffronel", "Umbervale")
FOXTROT = Person(
    "zq7privacy.foxtrot@example.com",
    "Gwendarrow",
    "Plinthwaite",
    "415-555-0161",
    "+14155550161",
)
GOLF_REJECTED = Person("zq7privacy.golf-at-example.com", "Halcyndra")
HOTEL = Person("zq7privacy.hotel@example.com", "Quillanthe", "Morrowvane")
INDIA_REJECTED = Person("zq7privacy.india@@example", "Marrowynd")
JULIET = Person("zq7privacy.juliet@example.com", "Isolvette", "Crandlemere")
KILO = Person(
    "zq7privacy.kilo@example.com",
    "Pellucida",
    "Orrinshaw",
    "+1 415 555 0177",
    "+14155550177",
)
LIMA = Person("zq7privacy.lima@example.com")
MIKE = Person("zq7privacy.mike@example.com", "Tenebrosa", "Ulverstane")
PEOPLE = [
    ALPHA,
    ALPHA_NEW_PHONE,
    ALPHA_RENAMED,
    BRAVO,
    REFUSED,
    CHARLIE,
    DELTA_REFUSED,
    ECHO,
    FOXTROT,
    GOLF_REJECTED,
    HOTEL,
    INDIA_REJECTED,
    JULIET,
    KILO,
    LIMA,
    MIKE,
]
# Greeted by the welcome sequence; ECHO's is refused by the relay.
GREETED = [ALPHA, CHARLIE, FOXTROT, HOTEL, JULIET, KILO]


# -- an SMTP relay with a login, refusing one recipient as Postfix words it --


@dataclass
class RelayHandler:
    messages: list[email.message.EmailMessage] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() == ECHO.email.lower():
            with self.lock:
                self.refused.append(address)
            # Relays quote the address they refuse: it must not reach a log.
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(
            envelope.original_content, policy=email.policy.default
        )
        with self.lock:
            self.messages.append(message)  # type: ignore[arg-type]
        return "250 2.0.0 queued"

    def to(self, address: str) -> list[email.message.EmailMessage]:
        with self.lock:
            return [m for m in self.messages if str(m["To"]).lower() == address.lower()]

    def was_refused(self, address: str) -> bool:
        with self.lock:
            return any(a.lower() == address.lower() for a in self.refused)


def check_login(server, session, envelope, mechanism, auth_data) -> AuthResult:
    expected = LoginPassword(SMTP_USER.encode(), SMTP_PASSWORD.encode())
    return AuthResult(success=auth_data == expected, handled=False)


class _Relay(Controller):
    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@pytest.fixture(scope="module")
def relay() -> Iterator[tuple[int, RelayHandler]]:
    handler = RelayHandler()
    controller = _Relay(
        handler,
        hostname="127.0.0.1",
        port=0,
        server_hostname="relay.test",
        authenticator=check_login,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield controller.port, handler
    finally:
        controller.stop()


# -- the stack --


@dataclass
class PrivateStack:
    process: subprocess.Popen[bytes]
    data_dir: Path
    env: dict[str, str]
    api: httpx.Client
    prefect_url: str
    sandbox_url: str
    key: str = ""

    @property
    def up_log(self) -> Path:
        return self.data_dir / "up.log"

    @property
    def prefect_db(self) -> str:
        """The Prefect server's database: its URL, or its SQLite file's path."""
        return self.env.get("ORCH_PREFECT_DATABASE_URL") or str(
            self.data_dir / "prefect" / "prefect.db"
        )

    def stop(self) -> None:
        """Stops the whole stack (its Prefect server too); safe to call twice."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)

    def cli(self, *args: str) -> str:
        return subprocess.run(
            [ORCHESTRATOR, *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout


@pytest.fixture(scope="module")
def stack(stack_settings, tmp_path_factory, relay) -> Iterator[PrivateStack]:
    """`orchestrator up` with its own Prefect server, SMTP to the relay, sandbox CRM.

    Scaled, the lead store and the Prefect server are on PostgreSQL, with
    Prefect's messaging in Redis: all three are searched.
    """
    relay_port, _ = relay
    data_dir = tmp_path_factory.mktemp("privacy")
    port, sandbox_port, prefect_port = free_port(), free_port(), free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "PREFECT_"))
    }
    env |= {
        "ORCH_DATA_DIR": str(data_dir),
        "ORCH_API_PORT": str(port),
        "ORCH_SANDBOX_PORT": str(sandbox_port),
        "ORCH_PREFECT_PORT": str(prefect_port),
        "ORCH_CRM": "sandbox",
        "ORCH_SECRET_KEY": SECRET_KEY,
        "ORCH_WEBHOOK_SECRET_FORMS": WEBHOOK_SECRET,
        "ORCH_WEBHOOK_TOKEN_ZAPIER": ZAPIER_TOKEN,
        "ORCH_EMAIL_BACKEND": "smtp",
        "ORCH_SMTP_URL": (
            f"smtp://{SMTP_USER}:{quote(SMTP_PASSWORD, safe='')}"
            f"@127.0.0.1:{relay_port}?timeout=10"
        ),
    }
    env |= stack_settings()
    with (data_dir / "up.log").open("wb") as log:
        process = subprocess.Popen(
            [ORCHESTRATOR, "up"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    running = PrivateStack(
        process,
        data_dir,
        env,
        api,
        f"http://127.0.0.1:{prefect_port}/api",
        f"http://127.0.0.1:{sandbox_port}",
    )

    def ready() -> bool:
        assert process.poll() is None, running.up_log.read_text()
        key_file = data_dir / "api-key"
        if not running.key and key_file.exists():
            running.key = key_file.read_text().strip()
            api.headers["Authorization"] = f"Bearer {running.key}"
        try:
            status = api.get("/api/status").json()
        except (httpx.HTTPError, ValueError):
            return False
        runner = status.get("prefect", {}).get("flow_runner", {})
        return set(runner.get("deployments", {}).values()) == {"READY"}

    try:
        wait_for(ready, 180, "the stack to come up with every deployment READY")
        yield running
    finally:
        api.close()
        running.stop()


# -- what a user does --


def signed_delivery(stack: PrivateStack, source: str, body: dict, **options: str):
    """Sends `body` as `orchestrator webhooks curl` says to (signature or token)."""
    path = stack.data_dir / f"{source}-delivery.json"
    path.write_text(json.dumps(body))
    extra = [f"--{name.replace('_', '-')}={value}" for name, value in options.items()]
    command = shlex.split(stack.cli("webhooks", "curl", source, str(path), *extra))
    url = command[command.index("POST") + 1]
    headers = dict(
        command[i + 1].split(": ", 1) for i, part in enumerate(command) if part == "-H"
    )
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return stack.api.post(target, content=path.read_bytes(), headers=headers)


def lead_body(person: Person, **more: object) -> dict:
    body: dict[str, object] = {"email": person.email}
    if person.first_name:
        body["first_name"] = person.first_name
    if person.last_name:
        body["last_name"] = person.last_name
    if person.phone:
        body["phone"] = person.phone
    return body | more


def run_the_scenario(
    stack: PrivateStack, handler: RelayHandler
) -> tuple[dict[str, str], str]:
    """Everything a user does; returns the lead ids by address, and the import's."""
    api = stack.api
    ids: dict[str, str] = {}

    # CRM credentials: a wrong HubSpot token and Salesforce password are
    # refused; the sandbox's token is saved (sealed) and used from then on.
    refused_hubspot = api.post(
        "/api/crm/config",
        json={
            "provider": "hubspot",
            "credentials": {
                "access_token": WRONG_HUBSPOT_TOKEN,
                "host": stack.sandbox_url,
            },
        },
    )
    assert refused_hubspot.status_code == 422, refused_hubspot.text
    assert WRONG_HUBSPOT_TOKEN not in refused_hubspot.text
    refused_salesforce = api.post(
        "/api/crm/config",
        json={
            "provider": "salesforce",
            "credentials": {
                "flow": "password",
                "token_url": f"{stack.sandbox_url}/services/oauth2/token",
                "client_id": salesforce_sandbox.SANDBOX_CLIENT_ID,
                "client_secret": salesforce_sandbox.SANDBOX_CLIENT_SECRET,
                "username": "sync@sandbox.example.com",
                "password": WRONG_SALESFORCE_PASSWORD,
                "external_id_field": "Web_Lead_Id__c",
            },
        },
    )
    assert refused_salesforce.status_code == 422, refused_salesforce.text
    assert WRONG_SALESFORCE_PASSWORD not in refused_salesforce.text
    saved = api.post(
        "/api/crm/config",
        json={
            "provider": "hubspot",
            "credentials": {
                "access_token": hubspot_sandbox.SANDBOX_TOKEN,
                "host": stack.sandbox_url,
            },
        },
    )
    assert saved.status_code == 200, saved.text
    assert hubspot_sandbox.SANDBOX_TOKEN not in saved.text

    # Leads posted: created, updated, edited, merged or flagged, refused.
    created = api.post("/api/leads", json=lead_body(ALPHA, company="Vexmoor"))
    assert created.status_code == 201, created.text
    ids[ALPHA.email.lower()] = created.json()["id"]
    updated = api.post(
        "/api/leads",
        json=lead_body(ALPHA_NEW_PHONE, email=ALPHA.email.lower(), job_title="CTO"),
    )
    assert updated.status_code == 200, updated.text
    edited = api.patch(
        f"/api/leads/{ids[ALPHA.email.lower()]}",
        json={"last_name": ALPHA_RENAMED.last_name},
    )
    assert edited.status_code == 200, edited.text
    twin = api.post("/api/leads", json=lead_body(BRAVO, phone=ALPHA_NEW_PHONE.phone))
    assert twin.status_code in (200, 201), twin.text
    refused = api.post("/api/leads", json=lead_body(REFUSED))
    assert refused.status_code == 422, refused.text
    batch = api.post(
        "/api/leads/batch", json=[lead_body(CHARLIE), lead_body(DELTA_REFUSED)]
    )
    assert batch.status_code == 200, batch.text
    outcomes = [item.get("outcome", "rejected") for item in batch.json()["results"]]
    assert outcomes == ["created", "rejected"], batch.text
    ids[CHARLIE.email] = batch.json()["results"][0]["lead_id"]
    listed = api.get("/api/leads", params={"email": ALPHA.email})
    assert listed.status_code == 200, listed.text

    # A CSV import with a row that is rejected.
    csv = (
        "email,first_name,last_name,phone\r\n"
        + "".join(
            f"{p.email},{p.first_name},{p.last_name},{p.phone}\r\n"
            for p in (ECHO, FOXTROT, GOLF_REJECTED)
        )
    ).encode()
    upload = api.post("/api/imports", files={"file": ("privacy.csv", csv, "text/csv")})
    assert upload.status_code == 202, upload.text
    import_url = upload.json()["status_url"]

    def imported() -> dict | None:
        view = api.get(import_url).json()
        return view if view["status"] in ("finished", "failed") else None

    view = wait_for(imported, 120, "the import to finish")
    assert view["status"] == "finished", view
    assert view["counts"]["rejected"] == 1, view
    rejects = api.get(f"{import_url}/rejects.csv")
    assert rejects.status_code == 200, rejects.text
    assert GOLF_REJECTED.email in rejects.text

    # Webhooks: signed, by token in the query, refused content, bad signature.
    signed = signed_delivery(
        stack, "forms", lead_body(HOTEL, form="demo"), event_id="evt-privacy-1"
    )
    assert signed.status_code == 200, signed.text
    by_token = signed_delivery(stack, "zapier", lead_body(JULIET))
    assert by_token.status_code == 200, by_token.text
    rejected = signed_delivery(
        stack, "forms", lead_body(INDIA_REJECTED), event_id="evt-privacy-2"
    )
    assert rejected.status_code == 200, rejected.text
    forged = stack.api.post(
        "/api/webhooks/forms",
        content=json.dumps(lead_body(INDIA_REJECTED)).encode(),
        headers={
            "Content-Type": "application/json",
            "X-Orchestrator-Signature": f"t={int(time.time())},v1={'0' * 64}",
        },
    )
    assert forged.status_code == 401, forged.text
    wrong_token = stack.api.post(
        f"/api/webhooks/zapier?token={WRONG_HUBSPOT_TOKEN}",
        json=lead_body(INDIA_REJECTED),
    )
    assert wrong_token.status_code == 401, wrong_token.text

    # A workflow triggered for a lead given whole.
    started = api.post(
        "/api/workflows/trigger",
        json={"workflow_id": "welcome_sequence", "lead_data": lead_body(KILO)},
    )
    assert started.status_code == 202, started.text
    ids[KILO.email] = started.json()["lead_id"]

    # Provider e-mail events: one about a lead, one about nobody we know.
    events = api.post(
        "/api/email/events",
        json={
            "events": [
                {
                    "id": "privacy-event-1",
                    "type": "delivered",
                    "occurred_at": datetime.now(UTC).isoformat(),
                    "email": FOXTROT.email,
                },
                {
                    "id": "privacy-event-2",
                    "type": "bounced",
                    "bounce_type": "hard",
                    "occurred_at": datetime.now(UTC).isoformat(),
                    "email": LIMA.email,
                },
            ]
        },
    )
    assert events.status_code == 200, events.text

    # The flows run: every lead greeted (ECHO refused by the relay) and synced.
    for person in GREETED:
        wait_for(
            lambda p=person: handler.to(p.email),
            180,
            f"the welcome e-mail to {person.email}",
        )
    wait_for(lambda: handler.was_refused(ECHO.email), 60, "the relay's refusal")

    def in_sandbox() -> bool:
        contacts = httpx.get(f"{stack.sandbox_url}/_sandbox/hubspot/contacts").json()
        emails = {c["properties"]["email"] for c in contacts}
        return {p.email.lower() for p in GREETED} <= emails

    wait_for(in_sandbox, 180, "the greeted leads in the CRM sandbox")

    # The CRM refuses a lead, quoting its address, as HubSpot words it.
    refusal = [
        {
            "isValid": False,
            "message": f"Email address {MIKE.email} is invalid",
            "error": "INVALID_EMAIL",
            "name": "email",
        }
    ]
    armed = httpx.post(
        f"{stack.sandbox_url}/_sandbox/faults",
        json={
            "vendor": "hubspot",
            "method": "POST",
            "path": "/crm/v3/objects/contacts/batch/upsert",
            "status": 400,
            "body": {
                "status": "error",
                "message": f"Property values were not valid: {json.dumps(refusal)}",
                "correlationId": "00000000-0000-0000-0000-000000000000",
                "category": "VALIDATION_ERROR",
            },
            "times": 50,
        },
    )
    assert armed.status_code == 201, armed.text
    mike = api.post("/api/leads", json=lead_body(MIKE))
    assert mike.status_code == 201, mike.text
    ids[MIKE.email] = mike.json()["id"]

    def parked() -> bool:
        lead = api.get(f"/api/leads/{ids[MIKE.email]}").json()
        return lead["crm_sync_status"] == "parked"

    wait_for(parked, 180, "the CRM's refusal of the lead")
    httpx.delete(f"{stack.sandbox_url}/_sandbox/faults").raise_for_status()
    # A client looking a lead up by its address, in the path.
    assert api.get(f"/api/leads/{ALPHA.email}").status_code in (404, 422)

    # An unsubscribe click, from the link in HOTEL's welcome e-mail.
    [welcome] = handler.to(HOTEL.email)[:1]
    link = str(welcome["List-Unsubscribe"]).strip("<>")
    page = api.get(urlsplit(link).path)
    assert page.status_code == 200, page.text
    clicked = api.post(urlsplit(link).path, data={"List-Unsubscribe": "One-Click"})
    assert clicked.status_code == 200, clicked.text

    # The right to be forgotten, for ALPHA, in the CRM too.
    alpha = ids[ALPHA.email.lower()]
    erased = api.delete(f"/api/leads/{alpha}", params={"erase": "true"})
    assert erased.status_code == 200, erased.text

    def gone_from_sandbox() -> bool:
        contacts = httpx.get(f"{stack.sandbox_url}/_sandbox/hubspot/contacts").json()
        return ALPHA.email.lower() not in {c["properties"]["email"] for c in contacts}

    wait_for(gone_from_sandbox, 180, "the erased lead to leave the CRM sandbox")
    return ids, upload.json()["id"]


# -- where things are searched --


@dataclass
class Hit:
    where: str
    needle: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.where}: {self.needle}: …{self.excerpt}…"


class Search:
    """Every needle, sought case-blind in every text it is given."""

    def __init__(self, needles: dict[str, str]) -> None:
        self.needles = {label: value.lower() for label, value in needles.items()}
        self.hits: list[Hit] = []
        self.debug_hits: list[Hit] = []

    def text(self, where: str, text: str, *, debug: bool = False) -> None:
        lowered = text.lower()
        for label, needle in self.needles.items():
            at = lowered.find(needle)
            if at >= 0:
                excerpt = text[max(0, at - 80) : at + len(needle) + 80]
                hit = Hit(where, label, excerpt.replace("\n", "⏎"))
                (self.debug_hits if debug else self.hits).append(hit)

    def document(self, where: str, value: Any) -> None:
        self.text(where, json.dumps(value, ensure_ascii=False, default=str))


def all_needles(stack: PrivateStack) -> dict[str, str]:
    needles: dict[str, str] = {}
    for person in PEOPLE:
        needles |= person.needles()
    needles |= {
        "the API key": stack.key,
        "ORCH_SECRET_KEY": SECRET_KEY,
        "the webhook secret": WEBHOOK_SECRET,
        "the Zapier token": ZAPIER_TOKEN,
        "the SMTP password": SMTP_PASSWORD,
        "the HubSpot token": hubspot_sandbox.SANDBOX_TOKEN,
        "the refused HubSpot token": WRONG_HUBSPOT_TOKEN,
        "the Salesforce client secret": salesforce_sandbox.SANDBOX_CLIENT_SECRET,
        "the refused Salesforce password": WRONG_SALESFORCE_PASSWORD,
    }
    return needles


def search_log_files(stack: PrivateStack, search: Search) -> list[str]:
    """Every line of every log under the data dir and of `up`'s output."""
    files = sorted((stack.data_dir / "logs").glob("*")) + [stack.up_log]
    for path in files:
        lines = path.read_text(errors="replace").splitlines()
        for number, line in enumerate(lines, start=1):
            if (
                path == stack.up_log
                and line.strip() == stack.key
                and number > 1
                and lines[number - 2].startswith("API key (admin")
            ):
                # `up` prints the development key it made, on purpose, once.
                continue
            where = f"{path.relative_to(stack.data_dir)}:{number}"
            search.text(where, line, debug=bool(DEBUG_MARK.search(line)))
    return [str(path.relative_to(stack.data_dir)) for path in files]


def _pages(post: Callable[[int], list[Any]]) -> Iterator[Any]:
    offset = 0
    while True:
        page = post(offset)
        yield from page
        if len(page) < 200:
            return
        offset += len(page)


def search_prefect_api(stack: PrivateStack, search: Search) -> dict[str, int]:
    """Everything Prefect's API serves about the stack's work; returns counts."""
    counts: dict[str, int] = {}
    with httpx.Client(base_url=stack.prefect_url, timeout=60) as prefect:

        def listing(path: str, body: dict | None = None) -> list[Any]:
            def post(offset: int) -> list[Any]:
                response = prefect.post(
                    path, json=(body or {}) | {"limit": 200, "offset": offset}
                )
                response.raise_for_status()
                return response.json()

            return list(_pages(post))

        for name, path in {
            "flow runs": "/flow_runs/filter",
            "task runs": "/task_runs/filter",
            "flows": "/flows/filter",
            "deployments": "/deployments/filter",
            "artifacts": "/artifacts/filter",
            "variables": "/variables/filter",
            "work pools": "/work_pools/filter",
            "concurrency limits": "/v2/concurrency_limits/filter",
        }.items():
            items = listing(path)
            counts[name] = len(items)
            for item in items:
                search.document(f"Prefect {name} {item.get('id')}", item)
        for run in listing("/flow_runs/filter"):
            states = prefect.get("/flow_run_states/", params={"flow_run_id": run["id"]})
            states.raise_for_status()
            search.document(f"Prefect states of flow run {run['id']}", states.json())
        blocks = prefect.post("/block_documents/filter", json={"include_secrets": True})
        blocks.raise_for_status()
        counts["blocks"] = len(blocks.json())
        search.document("Prefect blocks", blocks.json())
        automations = prefect.post("/automations/filter", json={})
        automations.raise_for_status()
        counts["automations"] = len(automations.json())
        search.document("Prefect automations", automations.json())

        logs = listing("/logs/filter")
        counts["logs"] = len(logs)
        for line in logs:
            search.text(
                f"Prefect log of flow run {line.get('flow_run_id')} "
                f"({line.get('level')})",
                f"{line.get('name')} {line.get('message')}",
                debug=int(line.get("level") or 0) < 20,
            )

        since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
        until = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
        page = prefect.post(
            "/events/filter",
            json={
                "filter": {"occurred": {"since": since, "until": until}},
                "limit": 50,
            },
        )
        events = 0
        while True:
            page.raise_for_status()
            answer = page.json()
            for event in answer["events"]:
                events += 1
                search.document(f"Prefect event {event['event']} {event['id']}", event)
            if not answer.get("next_page"):
                break
            page = prefect.get(answer["next_page"])
        counts["events"] = events
    return counts


def search_prefect_database(location: str, search: Search) -> int:
    """Every column of every row of the Prefect server's database.

    Args:
        location: its SQLite file's path, or its PostgreSQL URL.
    """
    if "://" not in location:
        connection = sqlite3.connect(f"file:{location}?mode=ro", uri=True)
        listing = "SELECT name FROM sqlite_master WHERE type = 'table'"
    else:
        url = make_url(location).set(drivername="postgresql")
        connection = psycopg.connect(url.render_as_string(hide_password=False))
        listing = (
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )
    rows = 0
    try:
        tables = [name for (name,) in connection.execute(listing).fetchall()]
        for table in tables:
            cursor = connection.execute(f'SELECT * FROM "{table}"')
            columns = [column[0] for column in cursor.description]
            for row in cursor:
                rows += 1
                # Flow-run log lines below INFO are reported, not failed.
                level = dict(zip(columns, row, strict=True)).get("level")
                search.text(
                    f"Prefect database table {table}",
                    " | ".join(_as_text(value) for value in row),
                    debug=table == "log" and isinstance(level, int) and level < 20,
                )
    finally:
        connection.close()
    return rows


def search_prefect_redis(url: str, search: Search) -> int:
    """Every value under every key of the Redis database Prefect's messaging uses.

    Returns:
        How many keys were read.
    """
    keys = 0
    with redis.Redis.from_url(url, socket_timeout=10) as client:
        for key in client.scan_iter(count=500):
            kind = client.type(key).decode()
            if kind == "string":
                values: list[Any] = [client.get(key)]
            elif kind == "hash":
                values = [client.hgetall(key)]
            elif kind == "list":
                values = client.lrange(key, 0, -1)
            elif kind == "set":
                values = list(client.smembers(key))
            elif kind == "zset":
                values = client.zrange(key, 0, -1)
            elif kind == "stream":
                values = [fields for _, fields in client.xrange(key)]
            else:
                values = []
            keys += 1
            for value in values:
                if isinstance(value, dict):
                    value = " | ".join(
                        f"{_as_text(k)}={_as_text(v)}" for k, v in value.items()
                    )
                search.text(f"Prefect's Redis {kind} {_as_text(key)}", _as_text(value))
    return keys


def _as_text(value: object) -> str:
    if isinstance(value, dict | list):
        # PostgreSQL's JSON columns, read as Python values.
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _report(hits: Iterable[Hit]) -> str:
    return "\n".join(str(hit) for hit in hits)


@pytest.mark.timeout(1200)
def test_no_secret_or_personal_data_reaches_the_logs_or_prefect(stack, relay):
    started = time.monotonic()
    _, handler = relay

    ids, import_id = run_the_scenario(stack, handler)
    # Runs still going ship their logs to Prefect when they end.
    wait_for(lambda: _runs_settled(stack), 120, "every flow run to settle")

    search = Search(all_needles(stack))
    # What must be found where it is searched: ids go to Prefect and the logs.
    control = Search({"KILO's lead id": ids[KILO.email], "the import's id": import_id})
    counts = search_prefect_api(stack, search)
    search_prefect_api(stack, control)
    stack.stop()
    assert stack.process.returncode == 0, stack.up_log.read_text()[-3000:]
    files = search_log_files(stack, search)
    search_log_files(stack, control)
    rows = search_prefect_database(stack.prefect_db, search)
    search_prefect_database(stack.prefect_db, control)
    if SCALED:
        redis_url = stack.env["ORCH_PREFECT_REDIS_URL"]
        # Its streams are read as they are when the stack has stopped.
        assert search_prefect_redis(redis_url, search) > 0, "Prefect used no Redis"
        search_prefect_redis(redis_url, control)

    # The searches saw the work: a search of nothing would pass as well.
    assert counts["flow runs"] >= 5 and counts["logs"] > 20, counts
    assert counts["events"] > 20 and counts["artifacts"] >= 1, counts
    assert {"logs/api.log", "logs/flow-runner.log", "up.log"} <= set(files), files
    assert rows > 100
    found = {(h.needle, h.where.split(" ")[0].split(":")[0]) for h in control.hits}
    assert {
        ("KILO's lead id", "Prefect"),
        ("the import's id", "Prefect"),
        ("the import's id", "logs/flow-runner.log"),
    } <= found, found
    assert not search.hits, (
        f"{len(search.hits)} leaks (Prefect: {counts}; {len(files)} log files; "
        f"{rows} Prefect rows):\n{_report(search.hits)}"
    )
    print(
        f"\nprivacy e2e: {time.monotonic() - started:.0f} s; Prefect {counts}; "
        f"{rows} Prefect rows; DEBUG lines naming a needle: "
        f"{len(search.debug_hits)}\n{_report(search.debug_hits[:20])}"
    )


def _runs_settled(stack: PrivateStack) -> bool:
    response = httpx.post(
        f"{stack.prefect_url}/flow_runs/filter",
        json={"flow_runs": {"state": {"type": {"any_": ["RUNNING", "PENDING"]}}}},
        timeout=30,
    )
    response.raise_for_status()
    return not response.json()
