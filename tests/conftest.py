"""Shared fixtures: real stores on SQLite and PostgreSQL, and the API over real HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import uvicorn
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings
from sqlalchemy import delete
from sqlalchemy.engine import make_url

from api.app import create_app
from leads.settings import Settings
from leads.store import Store
from leads.store.schema import upgrade
from leads.store.tables import (
    CrmAccount,
    CrmReconciliation,
    CrmSyncTarget,
    DuplicateReview,
    EmailEvent,
    EmailSend,
    EmailSuppression,
    ImportReject,
    Lead,
    LeadImport,
    MatchKey,
    OutboxItem,
    RateBudgetRow,
    SequencePlan,
    SequenceStep,
    TimelineEvent,
    WebhookDelivery,
)

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _admin_url() -> str:
    return Settings().test_postgres_url


def _psycopg_dsn(url: str) -> str:
    return (
        make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    )


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of the test PostgreSQL; skips (or fails under CI) when down."""
    url = _admin_url()
    try:
        with psycopg.connect(_psycopg_dsn(url), connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL at ORCH_TEST_POSTGRES_URL is unreachable: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return url


class PostgresDatabases:
    """Creates throw-away databases on the test server and drops them after."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.names: list[str] = []

    def create(self) -> str:
        name = f"orch_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(_psycopg_dsn(self.admin_url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return (
            make_url(self.admin_url)
            .set(database=name)
            .render_as_string(hide_password=False)
        )

    def drop_all(self) -> None:
        with psycopg.connect(_psycopg_dsn(self.admin_url), autocommit=True) as conn:
            for name in self.names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_databases(postgres_server: str) -> Iterator[PostgresDatabases]:
    databases = PostgresDatabases(postgres_server)
    yield databases
    databases.drop_all()


@pytest.fixture(scope="session")
def new_store_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
):
    """Makes the URL of a new, empty database of the asked backend."""

    def make(backend: str) -> str:
        if backend == "sqlite":
            folder = tmp_path_factory.mktemp("store")
            return f"sqlite:///{folder / 'orchestrator.db'}"
        databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
        return databases.create()

    return make


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each store backend in turn."""
    return request.param


@pytest.fixture(scope="session", params=BACKENDS)
def migrated_store(request: pytest.FixtureRequest, new_store_url) -> Iterator[Store]:
    """One migrated store per backend for the whole session."""
    store = Store(new_store_url(request.param))
    upgrade(store.engine)
    yield store
    store.dispose()


def wipe(store: Store) -> None:
    with store.engine.begin() as connection:
        for table in (
            WebhookDelivery,
            SequencePlan,
            EmailEvent,
            EmailSend,
            EmailSuppression,
            CrmAccount,
            CrmReconciliation,
            CrmSyncTarget,
            RateBudgetRow,
            ImportReject,
            LeadImport,
            MatchKey,
            DuplicateReview,
            SequenceStep,
            OutboxItem,
            TimelineEvent,
            Lead,
        ):
            connection.execute(delete(table))


@pytest.fixture
def store(migrated_store: Store) -> Store:
    """The backend's store, emptied before the test."""
    wipe(migrated_store)
    return migrated_store


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LiveServer:
    """The API app under a real uvicorn server on a loopback port, in a thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def serve_api() -> Iterator[Callable[[Settings], LiveServer]]:
    """Starts the API on given settings; every server started is stopped after."""
    started: list[LiveServer] = []

    def start(settings: Settings) -> LiveServer:
        server = LiveServer(settings)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def live_api(
    migrated_store: Store, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The API served over HTTP on the session's store of each backend."""
    settings = Settings(
        data_dir=Path(tmp_path_factory.mktemp("data")),
        database_url=migrated_store.url,
        max_body_bytes=64 * 1024,
        max_batch_leads=1000,
        # A closed port: these tests must not signal a developer's own stack.
        prefect_api_url=f"http://127.0.0.1:{free_port()}/api",
        # Nor reach a sandbox a developer's stack serves on the default port.
        crm="none",
    )
    server = LiveServer(settings)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(live_api: LiveServer, store: Store) -> Iterator[httpx.Client]:
    """An HTTP client of the live API, on an emptied store."""
    with httpx.Client(base_url=live_api.url, timeout=30) as http:
        yield http


class PrefectServer:
    """A real `prefect server start` on a loopback port, with its own home."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def environment(self) -> dict[str, str]:
        return {
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": (
                f"sqlite+aiosqlite:///{self.home / 'prefect.db'}"
            ),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }

    def start(self) -> None:
        prefect = str(Path(sys.executable).with_name("prefect"))
        with (self.home / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [prefect, "server", "start", "--host", "127.0.0.1"]
                + ["--port", str(self.port), "--analytics-off"],
                env=os.environ | self.environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "the Prefect server did not start: "
                    + (self.home / "server.log").read_text()[-2000:]
                )
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """One Prefect server for the whole session."""
    server = PrefectServer(tmp_path_factory.mktemp("prefect"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def on_prefect(prefect_server, tmp_path) -> Iterator[str]:
    """Flows called in this test run on the session's Prefect server."""
    with temporary_settings(
        updates={
            PREFECT_API_URL: prefect_server.api_url,
            PREFECT_HOME: str(tmp_path / "prefect"),
        }
    ):
        yield prefect_server.api_url
        # The run's logs ship in the background; send them while the server is up.
        APILogWorker.drain_all(timeout=5)
