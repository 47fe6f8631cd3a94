"""Every outbound call gives up on a server that accepts and never answers.

Each client the product has is pointed at a loopback socket opened here that
takes connections and says nothing (`Tarpit`), with its timeout made small
through the product's own knob, and must give up within it. The static part
reads the product's source for the ways to open a connection and checks each
one names a timeout, so a new one without cannot slip in.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dns.resolver
import httpx
import pytest
import requests
from prefect.settings import PREFECT_API_URL, temporary_settings
from simple_salesforce import Salesforce
from sqlalchemy import text

from api.events import PendingSignal
from api.routes import crm as crm_routes
from api.routes import imports as import_routes
from api.routes import workflows as workflow_routes
from api.routes.health import prefect_state
from connectors.crm.errors import CrmUnavailable
from connectors.crm.hubspot import HubSpotConnector, HubSpotCredentials
from connectors.crm.salesforce.client import SalesforceSession
from connectors.crm.salesforce.connector import SalesforceConnector
from connectors.crm.salesforce.credentials import SalesforceCredentials
from connectors.email.errors import EmailDeliveryError
from connectors.email.messages import build_message
from connectors.email.smtp import SmtpOutbox
from connectors.email.templates import RenderedEmail
from deployments import automations
from deployments.key_cli import api_client
from deployments.runner import serve_all
from deployments.supervisor import _answers
from deployments.work_pool_cli import ensure_work_pool
from leads.deliverability import check_deliverable
from leads.settings import Settings
from leads.store import Store, database
from leads.store.schema import upgrade

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("api", "connectors", "leads", "flows", "tasks", "deployments")
# Slack for a loaded test machine on top of each timeout. It stays small enough
# to catch a call left on a library's default: the largest bound here (2 s) plus
# the slack is under httpx's 5 s, and the others default to a minute or to never.
SLACK = 2.5


class Tarpit:
    """A loopback TCP server that accepts every connection and never says a word."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.05)
        self.port = self._server.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            self.accepted.append(connection)

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        for connection in self.accepted:
            connection.close()
        self._server.close()


@pytest.fixture
def tarpit() -> Iterator[Tarpit]:
    pit = Tarpit()
    yield pit
    pit.close()


@dataclass
class GaveUp:
    seconds: float
    outcome: Any


def timed(call: Callable[[], Any]) -> GaveUp:
    """Runs `call`, returning what it returned or raised and how long it took.

    The APIs under test run in this process, whose heap holds what the whole
    session built; a full collection falling inside the window would be timed
    with the call, so one is run before the clock starts.
    """
    gc.collect()
    started = time.monotonic()
    try:
        outcome = call()
    except Exception as exc:  # noqa: BLE001 - the outcome is what is checked
        outcome = exc
    return GaveUp(time.monotonic() - started, outcome)


def no_sleep(_: float) -> None:
    """Retry waits skipped: only the timeouts are measured."""


class TestHttpClients:
    def test_the_prefect_health_probe_gives_up_after_two_seconds(self, tarpit):
        gave_up = timed(lambda: prefect_state(f"{tarpit.url}/api"))

        assert gave_up.outcome["reachable"] is False
        assert gave_up.outcome["error"] == "ReadTimeout"
        assert gave_up.seconds < 2 + SLACK
        assert tarpit.accepted

    def test_the_pending_signal_gives_up_and_keeps_running(self, tarpit, caplog):
        signal = PendingSignal(f"{tarpit.url}/api/events", interval=0.05, timeout=0.3)

        async def emit_twice() -> None:
            runner = asyncio.create_task(signal.run())
            signal.notify()
            await asyncio.sleep(0.6)
            signal.notify()
            await asyncio.sleep(0.6)
            runner.cancel()

        with caplog.at_level(logging.WARNING, logger="api.events"):
            gave_up = timed(lambda: asyncio.run(emit_twice()))

        assert signal.emitted == 0
        failures = [r for r in caplog.records if "ReadTimeout" in r.getMessage()]
        assert len(failures) == 2
        assert gave_up.seconds < 1.2 + SLACK

    def test_the_cli_s_api_client_gives_up_at_its_timeout(self, tarpit, tmp_path):
        settings = Settings(data_dir=tmp_path, api_port=tarpit.port)

        with api_client(settings, timeout=0.3) as client:
            gave_up = timed(lambda: client.get("/health"))

        assert isinstance(gave_up.outcome, httpx.ReadTimeout)
        assert gave_up.seconds < 0.3 + SLACK

    def test_the_supervisor_s_probe_gives_up_after_two_seconds(self, tarpit):
        gave_up = timed(_answers(f"{tarpit.url}/health"))

        assert gave_up.outcome is False
        assert gave_up.seconds < 2 + SLACK


class TestCrmClients:
    def test_hubspot_gives_up_each_try_at_timeout_seconds(self, tarpit):
        credentials = HubSpotCredentials(
            access_token="pat-x", host=tarpit.url, timeout_seconds=0.3
        )
        connector = HubSpotConnector(credentials, sleep=no_sleep)

        gave_up = timed(connector.test_connection)

        assert isinstance(gave_up.outcome, CrmUnavailable)
        assert "did not answer in time" in str(gave_up.outcome)
        assert gave_up.seconds < 5 * 0.3 + SLACK  # five tries

    def test_salesforce_login_gives_up_each_try_at_timeout_seconds(self, tarpit):
        credentials = SalesforceCredentials(
            flow="client_credentials",
            token_url=f"{tarpit.url}/services/oauth2/token",
            client_id="app",
            client_secret="secret",
            timeout_seconds=0.3,
        )
        connector = SalesforceConnector(credentials, sleep=no_sleep)

        gave_up = timed(connector.test_connection)

        assert isinstance(gave_up.outcome, CrmUnavailable)
        assert "did not answer in time" in str(gave_up.outcome)
        assert gave_up.seconds < 5 * 0.3 + SLACK

    def test_simple_salesforce_calls_on_our_session_give_up_at_its_timeout(
        self, tarpit
    ):
        session = SalesforceSession(timeout=0.3, on_headers=lambda headers: None)
        session.route_to(tarpit.url)
        client = Salesforce(
            instance_url=tarpit.url, session_id="token", session=session
        )

        gave_up = timed(lambda: client.query("SELECT Id FROM Lead"))

        assert isinstance(gave_up.outcome, requests.Timeout)
        assert gave_up.seconds < 0.3 + SLACK


class TestEmail:
    @pytest.mark.parametrize("scheme", ["smtp", "smtps"])
    def test_smtp_gives_up_on_a_silent_relay_at_its_timeout(self, tarpit, scheme):
        # smtps: the TLS handshake is what never completes.
        options = "timeout=0.3" + ("&verify=false" if scheme == "smtps" else "")
        outbox = SmtpOutbox.from_url(f"{scheme}://127.0.0.1:{tarpit.port}?{options}")
        message = build_message(
            RenderedEmail("Hi", "Hello\n", "<p>Hello</p>\n"),
            sender="Orchestrator <noreply@example.com>",
            recipient="ada@example.com",
        )

        gave_up = timed(lambda: outbox.send(message))

        assert isinstance(gave_up.outcome, EmailDeliveryError)
        assert "did not answer within 0.3 s" in str(gave_up.outcome)
        assert gave_up.seconds < 0.3 + SLACK

    def test_a_dns_check_asking_a_silent_server_passes_within_its_lifetime(self):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.1", 0))
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = ["127.0.0.1"]
            resolver.port = silent.getsockname()[1]
            resolver.lifetime = 0.5

            gave_up = timed(lambda: check_deliverable("ada@example.com", resolver))

        assert gave_up.outcome is None  # no verdict: the address passes
        assert gave_up.seconds < 0.5 + SLACK


class TestStore:
    def test_a_postgresql_store_gives_up_connecting_at_its_timeout(
        self, tarpit, monkeypatch
    ):
        # libpq's shortest connect_timeout is two seconds.
        monkeypatch.setattr(database, "POSTGRES_CONNECT_TIMEOUT_SECONDS", 2)
        store = Store(f"postgresql+psycopg://postgres@127.0.0.1:{tarpit.port}/x")

        def connect() -> None:
            with store.engine.connect() as connection:
                connection.execute(text("SELECT 1"))

        try:
            gave_up = timed(connect)
        finally:
            store.dispose()

        assert "timeout" in str(gave_up.outcome).lower()
        assert gave_up.seconds < 2 + SLACK
        assert tarpit.accepted


class TestPrefectSetUpAtStart:
    """`orchestrator up`'s set-up gives up on a Prefect server that never answers."""

    @pytest.fixture
    def hung(self, tarpit, monkeypatch) -> Iterator[None]:
        monkeypatch.setattr(automations, "SETUP_SECONDS", 0.5)
        with temporary_settings(updates={PREFECT_API_URL: f"{tarpit.url}/api"}):
            yield

    def test_installing_the_automations_gives_up_in_time(self, hung):
        gave_up = timed(lambda: asyncio.run(automations.install()))

        assert isinstance(gave_up.outcome, TimeoutError)
        assert gave_up.seconds < 0.5 + SLACK

    def test_making_the_work_pool_gives_up_in_time(self, hung):
        gave_up = timed(lambda: asyncio.run(ensure_work_pool("orchestrator")))

        assert isinstance(gave_up.outcome, TimeoutError)
        assert gave_up.seconds < 0.5 + SLACK

    def test_the_flow_runner_exits_with_1_and_says_why(self, hung, caplog):
        with pytest.raises(SystemExit) as ended:
            serve_all(limit=1)

        assert ended.value.code == 1
        assert "the Prefect server did not answer within 0.5 s" in caplog.text


class TestPrefectFromTheApi:
    """Routes that ask Prefect answer within their bound when it hangs."""

    @pytest.fixture
    def hung(self, serve_api, new_store_url, tarpit, tmp_path, monkeypatch):
        for module, name in (
            (workflow_routes, "PREFECT_LOOKUP_SECONDS"),
            (workflow_routes, "PREFECT_CALL_SECONDS"),
            (crm_routes, "PREFECT_CALL_SECONDS"),
            (import_routes, "PREFECT_START_SECONDS"),
        ):
            monkeypatch.setattr(module, name, 0.5)
        url = new_store_url()
        store = Store(url)
        upgrade(store.engine)
        store.dispose()
        server = serve_api(
            Settings(
                data_dir=tmp_path,
                database_url=url,
                prefect_api_url=f"{tarpit.url}/api",
                crm="none",
            )
        )
        with server.client() as client:
            yield client

    def test_listing_workflows_goes_on_without_prefect(self, hung):
        gave_up = timed(lambda: hung.get("/api/workflows"))

        assert gave_up.outcome.status_code == 200
        assert gave_up.seconds < 0.5 + SLACK

    def test_a_trigger_is_a_503_in_time(self, hung):
        gave_up = timed(
            lambda: hung.post(
                "/api/workflows/trigger", json={"workflow_id": "crm_sync"}
            )
        )

        assert gave_up.outcome.status_code == 503
        assert gave_up.seconds < 0.5 + SLACK

    def test_a_crm_sync_asked_for_is_a_503_in_time(self, hung):
        gave_up = timed(lambda: hung.post("/api/crm/sync"))

        assert gave_up.outcome.status_code == 503
        assert gave_up.seconds < 0.5 + SLACK

    def test_an_upload_is_taken_and_left_to_the_sweeper_in_time(self, hung):
        gave_up = timed(
            lambda: hung.post(
                "/api/imports",
                files={"file": ("leads.csv", b"email\r\nada@example.com\r\n")},
            )
        )

        assert gave_up.outcome.status_code == 202
        assert gave_up.outcome.json()["status"] == "queued"
        assert gave_up.seconds < 0.5 + SLACK

    def test_the_status_page_says_prefect_is_unreachable_in_time(self, hung):
        gave_up = timed(lambda: hung.get("/api/status"))

        assert gave_up.outcome.json()["prefect"]["reachable"] is False
        assert gave_up.seconds < 2 + SLACK


# Modules whose names, however imported, open connections.
WATCHED = (
    "httpx",
    "requests",
    "smtplib",
    "socket",
    "urllib.request",
    "email_validator",
    "simple_salesforce",
)
# Constructions that open connections, and the keyword that must bound them.
TIMEOUT_KEYWORD = {
    **{
        f"httpx.{name}": "timeout"
        for name in (
            "Client",
            "AsyncClient",
            "get",
            "post",
            "put",
            "patch",
            "delete",
            "head",
            "options",
            "request",
            "stream",
        )
    },
    **{
        f"requests.{name}": "timeout"
        for name in ("get", "post", "put", "patch", "delete", "head", "request")
    },
    "smtplib.SMTP": "timeout",
    "smtplib.SMTP_SSL": "timeout",
    "socket.create_connection": "timeout",
    "urllib.request.urlopen": "timeout",
    "email_validator.caching_resolver": "timeout",
    # Every Salesforce object runs on our SalesforceSession (a default timeout).
    "simple_salesforce.Salesforce": "session",
}
# Prefect clients time out per try but retry a hung server for minutes: each
# must run inside `asyncio.timeout`, here or in every caller.
PREFECT_CLIENTS = ("PrefectClient", "prefect_client", "get_client")
# Functions whose own Prefect client their callers bound.
BOUNDED_BY_CALLERS = {("api/routes/workflows.py", "_run_of_key")}
UNBOUNDED_PREFECT_USES = {
    ("api/routes/workflows.py", "prefect_client"),  # the factory itself
}
# Sites the scan must find, so that it cannot pass by finding nothing.
KNOWN_SITES = {
    ("api/events.py", "httpx.AsyncClient"),
    ("api/routes/health.py", "httpx.Client"),
    ("deployments/key_cli.py", "httpx.Client"),
    ("deployments/supervisor.py", "httpx.get"),
    ("connectors/email/smtp.py", "smtplib.SMTP"),
    ("connectors/email/smtp.py", "smtplib.SMTP_SSL"),
    ("connectors/crm/salesforce/client.py", "simple_salesforce.Salesforce"),
    ("api/routes/imports.py", "PrefectClient"),
    ("api/routes/crm.py", "prefect_client"),
    ("api/routes/workflows.py", "prefect_client"),
    ("deployments/automations.py", "get_client"),
}
# A file naming none of these opens no connection the scan could see.
_MENTIONS = (*WATCHED, *PREFECT_CLIENTS, "_with_http_info")


def dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


@dataclass(frozen=True)
class Site:
    path: str
    line: int
    name: str
    function: str
    call: ast.Call
    bounded: bool  # inside `async with asyncio.timeout(...)`

    def __str__(self) -> str:
        return f"{self.path}:{self.line} {self.name}(…) in {self.function}"


class Scan(ast.NodeVisitor):
    """The calls of one module, named by what they call however it was imported."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sites: list[Site] = []
        self.calls_by_function: dict[str, list[Site]] = {}
        self._aliases: dict[str, str] = {}
        self._functions: list[str] = ["<module>"]
        self._bounds = 0

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.startswith(WATCHED):
                bound = alias.asname or alias.name.split(".")[0]
                self._aliases[bound] = alias.name if alias.asname else bound

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and node.module.startswith(WATCHED):
            for alias in node.names:
                self._aliases[alias.asname or alias.name] = (
                    f"{node.module}.{alias.name}"
                )

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._functions.append(node.name)
        outer, self._bounds = self._bounds, 0
        self.generic_visit(node)
        self._bounds = outer
        self._functions.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_AsyncWith(self, node: ast.AsyncWith) -> None:
        bound = any(
            isinstance(item.context_expr, ast.Call)
            and dotted(item.context_expr.func) == "asyncio.timeout"
            for item in node.items
        )
        self._bounds += bound
        self.generic_visit(node)
        self._bounds -= bound

    def visit_Call(self, node: ast.Call) -> None:
        name = self._canonical(dotted(node.func))
        short = name.rsplit(".", 1)[-1]
        site = Site(
            self.path, node.lineno, name, self._functions[-1], node, self._bounds > 0
        )
        if name in TIMEOUT_KEYWORD:
            self.sites.append(site)
        elif short in PREFECT_CLIENTS:
            self.sites.append(replace(site, name=short))
        self.calls_by_function.setdefault(short, []).append(site)
        self.generic_visit(node)

    def _canonical(self, name: str) -> str:
        head, dot, rest = name.partition(".")
        if head in self._aliases:
            name = self._aliases[head] + dot + rest
        if name.startswith("simple_salesforce.") and name.endswith(".Salesforce"):
            return "simple_salesforce.Salesforce"
        return name


@pytest.fixture(scope="module")
def scans() -> list[Scan]:
    done = []
    for package in PRODUCT:
        for file in sorted((ROOT / package).rglob("*.py")):
            source = file.read_text()
            if "migrations" in file.parts or not any(m in source for m in _MENTIONS):
                continue
            scan = Scan(file.relative_to(ROOT).as_posix())
            scan.visit(ast.parse(source, filename=str(file)))
            done.append(scan)
    return done


def untimed(scans: list[Scan]) -> list[str]:
    """Sites that open a connection without their bounding keyword."""
    missing = []
    for scan in scans:
        for site in scan.sites:
            keyword = TIMEOUT_KEYWORD.get(site.name)
            if keyword is None:
                continue
            value = {k.arg: k.value for k in site.call.keywords}.get(keyword)
            if value is None or (
                isinstance(value, ast.Constant) and value.value is None
            ):
                missing.append(str(site))
    return missing


def unbounded(scans: list[Scan]) -> list[str]:
    """Prefect clients outside `asyncio.timeout`, here and in every caller."""
    found = []
    for scan in scans:
        for site in scan.sites:
            if site.name not in PREFECT_CLIENTS or site.bounded:
                continue
            where = (site.path, site.function)
            if where in UNBOUNDED_PREFECT_USES:
                continue
            callers = scan.calls_by_function.get(site.function, [])
            if where in BOUNDED_BY_CALLERS and all(c.bounded for c in callers):
                continue
            found.append(str(site))
    return found


def scanned(path: str, source: str) -> Scan:
    scan = Scan(path)
    scan.visit(ast.parse(source))
    return scan


class TestEveryConstructionNamesATimeout:
    def test_the_scan_finds_the_known_sites(self, scans):
        found = {(site.path, site.name) for scan in scans for site in scan.sites}

        assert found >= KNOWN_SITES, KNOWN_SITES - found

    def test_each_connection_is_opened_with_a_timeout(self, scans):
        assert untimed(scans) == []

    def test_each_prefect_client_is_bounded_by_asyncio_timeout(self, scans):
        assert unbounded(scans) == []

    def test_no_plain_requests_session_is_made(self, scans):
        # requests has no default timeout; SalesforceSession gives every
        # request one, and is the only session the product may open.
        made = [
            str(site)
            for scan in scans
            for site in scan.calls_by_function.get("Session", [])
            if site.name == "requests.Session"
        ]

        assert made == []

    def test_hubspot_api_methods_are_only_called_through_the_client(self, scans):
        # HubSpotClient.call passes `_request_timeout` to each; a direct call
        # would wait as long as urllib3 lets it (for ever).
        direct = [
            str(site)
            for scan in scans
            for name, sites in scan.calls_by_function.items()
            if name.endswith("_with_http_info")
            for site in sites
        ]

        assert direct == []


class TestTheScanItself:
    def test_it_sees_through_import_aliases_and_flags_a_missing_timeout(self):
        scan = scanned(
            "example.py",
            "import httpx as h\n"
            "from smtplib import SMTP as Relay\n"
            "from simple_salesforce.api import Salesforce\n"
            "h.Client(base_url='x')\n"
            "Relay('host', 25, timeout=3)\n"
            "Salesforce(instance_url='x', session_id='y')\n"
            "h.get('x', timeout=None)\n",
        )

        assert [site.name for site in scan.sites] == [
            "httpx.Client",
            "smtplib.SMTP",
            "simple_salesforce.Salesforce",
            "httpx.get",
        ]
        assert [line.split()[0] for line in untimed([scan])] == [
            "example.py:4",
            "example.py:6",
            "example.py:7",
        ]

    def test_it_flags_a_prefect_client_outside_asyncio_timeout(self):
        scan = scanned(
            "example.py",
            "async def bounded():\n"
            "    async with asyncio.timeout(1), PrefectClient(api='x') as c:\n"
            "        pass\n"
            "async def loose():\n"
            "    async with get_client() as c:\n"
            "        pass\n",
        )

        assert [line.split()[0] for line in unbounded([scan])] == ["example.py:5"]
