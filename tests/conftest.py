"""Shared fixtures: real stores on SQLite and PostgreSQL, and the API over real HTTP."""

from __future__ import annotations

import gc
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
import redis
import uvicorn
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings
from sqlalchemy import delete
from sqlalchemy.engine import make_url

from api.app import create_app
from deployments.prefect_env import redis_messaging_environment, server_database_url
from leads.settings import DEFAULT_TENANT, Settings
from leads.store import Store
from leads.store.api_keys import create_key
from leads.store.schema import upgrade
from leads.store.tables import (
    ApiKey,
    CrmAccount,
    CrmReconciliation,
    CrmSyncTarget,
    DrainPresence,
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
    TriggerKey,
    WebhookDelivery,
)


def _scaled() -> bool:
    value = os.environ.get("ORCH_TEST_SCALED", "")
    if value not in ("", "0", "1"):
        raise pytest.UsageError(f"ORCH_TEST_SCALED: expected 0 or 1, got {value!r}")
    return value == "1"


# ORCH_TEST_SCALED=1 runs the session in the scaled configuration: every store
# on PostgreSQL (a store test runs once, not once a backend) and the Prefect
# servers on PostgreSQL with Redis messaging. `make test` runs both sessions.
SCALED = _scaled()
POSTGRESQL = pytest.param("postgresql", marks=pytest.mark.postgres)
BACKENDS = [POSTGRESQL] if SCALED else ["sqlite", POSTGRESQL]
# The backend of stores that a fixture or test makes without asking for one.
DEFAULT_BACKEND = "postgresql" if SCALED else "sqlite"


def _admin_url() -> str:
    return Settings().test_postgres_url


@pytest.fixture(autouse=True)
def _collector_as_found() -> Iterator[None]:
    """Puts the cycle collector's thresholds back after each test.

    The API and the flows raise them for their own process
    (`leads/collector.py`); run in this one, they would leave every later test
    collecting less often, and a warning from an object caught in a cycle
    would then surface in whichever test happened to run the collection.
    """
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


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
        if os.environ.get("CI") == "true" or SCALED:
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
    """Makes the URL of a new, empty database of the asked backend.

    With no backend named, the session's default: SQLite, or PostgreSQL in the
    scaled configuration.
    """

    def make(backend: str = DEFAULT_BACKEND) -> str:
        if backend == "sqlite":
            folder = tmp_path_factory.mktemp("store")
            return f"sqlite:///{folder / 'orchestrator.db'}"
        databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
        return databases.create()

    return make


# Fixtures that run a test once a store backend, PostgreSQL included.
PER_BACKEND = frozenset({"backend", "migrated_store"})


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """In the scaled session, leaves out tests that would repeat the default one.

    The scaled session keeps what it changes: every test on a Prefect server
    (then on PostgreSQL with Redis), every test whose store is the session's
    default (then PostgreSQL, not SQLite), and the slow end-to-end tests. A
    test run once a store backend already ran on PostgreSQL in the default
    session, and one using none of these fixtures is pure logic or makes its
    own store: the default session runs the very same code.
    """
    if not SCALED:
        return
    kept: list[pytest.Item] = []
    repeats: list[pytest.Item] = []
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        on_prefect = "prefect_backends" in names
        default_store = "new_store_url" in names and not names & PER_BACKEND
        slow = any(item.iter_markers("slow"))
        (kept if on_prefect or default_store or slow else repeats).append(item)
    if repeats:
        config.hook.pytest_deselected(items=repeats)
        items[:] = kept


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


@pytest.fixture(scope="module")
def postgres_store(new_store_url) -> Iterator[Store]:
    """A migrated store on PostgreSQL in either session, shared by a module."""
    store = Store(new_store_url("postgresql"))
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
            ApiKey,
            TriggerKey,
            DrainPresence,
        ):
            connection.execute(delete(table))
        _empty_audit_log(connection)


def _empty_audit_log(connection) -> None:
    """Empties the append-only audit log, around the triggers that guard it."""
    if connection.dialect.name == "postgresql":
        # Row triggers do not fire on TRUNCATE.
        connection.exec_driver_sql("TRUNCATE audit_events")
        return
    triggers = connection.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master "
        "WHERE type = 'trigger' AND tbl_name = 'audit_events'"
    ).all()
    for name, _ in triggers:
        connection.exec_driver_sql(f"DROP TRIGGER {name}")
    connection.exec_driver_sql("DELETE FROM audit_events")
    for _, sql in triggers:
        connection.exec_driver_sql(sql)


@pytest.fixture
def store(migrated_store: Store) -> Store:
    """The backend's store, emptied before the test."""
    wipe(migrated_store)
    return migrated_store


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def issue_key(
    store_url: str, tenant: str = DEFAULT_TENANT, scope: str = "admin"
) -> str:
    """A new API key in the store at `store_url`."""
    store = Store(store_url)
    try:
        return create_key(store, tenant, scope, "test").secret
    finally:
        store.dispose()


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

    def key(self, tenant: str = DEFAULT_TENANT, scope: str = "admin") -> str:
        """A new API key of `tenant` with `scope` in this server's store."""
        return issue_key(self.settings.store_url, tenant, scope)

    def client(
        self, tenant: str = DEFAULT_TENANT, scope: str = "admin"
    ) -> httpx.Client:
        """An HTTP client of this server sending a new key of `tenant` and `scope`."""
        return httpx.Client(
            base_url=self.url,
            timeout=30,
            headers={"Authorization": f"Bearer {self.key(tenant, scope)}"},
        )

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


@pytest.fixture
def serve_api_on_new_store(
    serve_api: Callable[[Settings], LiveServer],
    new_store_url: Callable[..., str],
    tmp_path: Path,
) -> Callable[..., LiveServer]:
    """Starts the API on a new upgraded store of the session's backend, with
    these settings besides: no CRM, and a closed port for Prefect."""

    def start(**settings: object) -> LiveServer:
        url = new_store_url()
        store = Store(url)
        upgrade(store.engine)
        store.dispose()
        defaults: dict[str, object] = {
            "data_dir": tmp_path,
            "database_url": url,
            "prefect_api_url": f"http://127.0.0.1:{free_port()}/api",
            "crm": "none",
        }
        return serve_api(Settings(**(defaults | settings)))

    return start


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
        # Every test of the session calls from one address; the limits are
        # tested on servers of their own (tests/api/test_rate_limits.py).
        rate_limit_per_minute=1_000_000,
    )
    server = LiveServer(settings)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(live_api: LiveServer, store: Store) -> Iterator[httpx.Client]:
    """An HTTP client of the live API with an admin key, on an emptied store."""
    with live_api.client() as http:
        yield http


class PrefectServer:
    """A real `prefect server start` on a loopback port, with its own home.

    On SQLite in its home unless given a database URL; with a Redis URL, its
    messaging runs there, as the product configures it (`prefect_env`).
    """

    def __init__(
        self,
        home: Path,
        database_url: str | None = None,
        redis_url: str | None = None,
    ) -> None:
        self.home = home
        self.database_url = database_url
        self.redis_url = redis_url
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
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": server_database_url(
                self.database_url, self.home
            ),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        } | redis_messaging_environment(self.redis_url)

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


def _test_redis_url() -> str:
    return os.environ.get("ORCH_TEST_REDIS_URL", "redis://127.0.0.1:6379")


class RedisDatabases:
    """Claims emptied databases of the test Redis, one for each Prefect server.

    The machine's Redis is shared with its other users and with other test
    runs, so a run only ever takes numbers in TEST_NUMBERS, and only those it
    claims: a claim is a key that expires, set only where no live claim is, so
    a run that dies frees its databases within CLAIM_SECONDS.
    """

    TEST_NUMBERS = range(8, 16)
    CLAIM_KEY = "orchestrator-test:claimed-by"
    CLAIM_SECONDS = 3 * 60 * 60

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url.rstrip("/")
        self.token = uuid.uuid4().hex
        self.claimed: list[int] = []

    def _client(self, number: int) -> redis.Redis:
        return redis.Redis.from_url(f"{self.server_url}/{number}", socket_timeout=10)

    def claim(self) -> str:
        """The URL of a database no other run holds, emptied for this one."""
        for number in self.TEST_NUMBERS:
            with self._client(number) as client:
                if not client.set(
                    self.CLAIM_KEY, self.token, nx=True, ex=self.CLAIM_SECONDS
                ):
                    continue
                # One transaction: no other run ever sees it empty and unclaimed.
                with client.pipeline(transaction=True) as both:
                    both.flushdb().set(
                        self.CLAIM_KEY, self.token, ex=self.CLAIM_SECONDS
                    )
                    both.execute()
            self.claimed.append(number)
            return f"{self.server_url}/{number}"
        raise RuntimeError(
            f"every test database of the Redis at {self.server_url} "
            f"({self.TEST_NUMBERS.start}-{self.TEST_NUMBERS.stop - 1}) is claimed by "
            f"another test run; claims expire {self.CLAIM_SECONDS} s after they start"
        )

    def release_all(self) -> None:
        """Empties every database this run still holds and gives it up."""
        for number in self.claimed:
            with self._client(number) as client, client.pipeline() as pipe:
                try:
                    pipe.watch(self.CLAIM_KEY)
                    if pipe.get(self.CLAIM_KEY) != self.token.encode():
                        continue  # expired and taken by another run since
                    pipe.multi()
                    pipe.flushdb()
                    pipe.execute()
                except redis.WatchError:
                    continue
        self.claimed.clear()


class PrefectBackends:
    """Where the scaled session puts Prefect servers: PostgreSQL and Redis."""

    def __init__(self, postgres_url: str, redis_url: str) -> None:
        self.databases = PostgresDatabases(postgres_url)
        self.redis = RedisDatabases(redis_url)

    def release(self) -> None:
        self.databases.drop_all()
        self.redis.release_all()


@pytest.fixture(scope="session")
def prefect_backends(
    request: pytest.FixtureRequest,
) -> Iterator[PrefectBackends | None]:
    """The scaled session's PostgreSQL and Redis for Prefect servers; None if not.

    Everything taken from them is dropped or emptied when the session ends,
    after every server and stack using them has stopped.
    """
    if not SCALED:
        yield None
        return
    backends = PrefectBackends(
        request.getfixturevalue("postgres_server"), _test_redis_url()
    )
    yield backends
    backends.release()


@pytest.fixture(scope="session")
def new_prefect_server(
    prefect_backends: PrefectBackends | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], PrefectServer]]:
    """Makes Prefect servers (not started), each with its own home and state.

    In the scaled configuration each gets a new PostgreSQL database and a Redis
    database emptied for it. Every server made is stopped when the session ends.
    """
    made: list[PrefectServer] = []

    def make() -> PrefectServer:
        home = tmp_path_factory.mktemp("prefect")
        if prefect_backends is None:
            server = PrefectServer(home)
        else:
            server = PrefectServer(
                home,
                prefect_backends.databases.create(),
                prefect_backends.redis.claim(),
            )
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture(scope="session")
def stack_settings(
    prefect_backends: PrefectBackends | None,
) -> Callable[[], dict[str, str]]:
    """Makes the ORCH_* store settings for a new `orchestrator up` of a test.

    Empty in the default session: the stack's data dir holds its SQLite files.
    Scaled: a new PostgreSQL database for the lead store, another for the
    stack's own Prefect server and a Redis database emptied for its messaging.
    """

    def make() -> dict[str, str]:
        if prefect_backends is None:
            return {}
        return {
            "ORCH_DATABASE_URL": prefect_backends.databases.create(),
            "ORCH_PREFECT_DATABASE_URL": prefect_backends.databases.create(),
            "ORCH_PREFECT_REDIS_URL": prefect_backends.redis.claim(),
        }

    return make


@pytest.fixture(scope="session")
def prefect_server(new_prefect_server) -> Iterator[PrefectServer]:
    """One Prefect server for the whole session (on PostgreSQL + Redis if scaled)."""
    server = new_prefect_server()
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
