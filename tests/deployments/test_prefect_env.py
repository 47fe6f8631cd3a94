"""The Prefect environment from the product's settings, read back by Prefect itself."""

from __future__ import annotations

import importlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from prefect.settings import Settings as PrefectSettings
from prefect_redis.cleanup_queue import RedisWorkerCleanupQueueSettings
from prefect_redis.client import RedisMessagingSettings
from prefect_redis.messaging import RedisMessagingPublisherSettings
from sqlalchemy.engine import make_url

from deployments.prefect_env import (
    prefect_environment,
    redis_messaging_environment,
    server_database_url,
)
from deployments.supervisor import Stack
from leads.settings import Settings
from tests.conftest import RedisDatabases

PG_URL = "postgresql+psycopg://orch:s3cr%40t@db.internal:5432/prefect"
REDIS_URL = "redis://127.0.0.1:6379/9"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def prefect_reads(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> PrefectSettings:
    """Prefect's own settings as a process with `environment` would load them."""
    for name in list(os.environ):
        if name.startswith("PREFECT_"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return PrefectSettings()


class TestTheDefaultServer:
    def test_is_on_sqlite_in_the_prefect_home_with_messaging_in_memory(self, tmp_path):
        settings = Settings(data_dir=tmp_path)

        environment = prefect_environment(settings)

        assert environment["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == (
            f"sqlite+aiosqlite:///{settings.prefect_home / 'prefect.db'}"
        )
        assert not [name for name in environment if "REDIS" in name]
        assert not [name for name in environment if "MESSAGING" in name]

    def test_prefect_reads_the_memory_broker_it_defaults_to(
        self, tmp_path, monkeypatch
    ):
        read = prefect_reads(
            prefect_environment(Settings(data_dir=tmp_path)), monkeypatch
        )

        assert read.server.events.messaging_broker.endswith("messaging.memory")
        assert read.server.docket.url == "memory://"


class TestTheDatabaseUrl:
    def test_a_postgresql_url_gets_the_async_driver_and_keeps_its_password(
        self, tmp_path
    ):
        url = server_database_url(PG_URL, tmp_path)

        parsed = make_url(url)
        assert parsed.drivername == "postgresql+asyncpg"
        assert (parsed.username, parsed.password) == ("orch", "s3cr@t")
        assert (parsed.host, parsed.port, parsed.database) == (
            "db.internal",
            5432,
            "prefect",
        )

    @pytest.mark.parametrize(
        "given",
        [
            "postgresql://u@h/db",
            "postgres://u@h/db",
            "postgresql+asyncpg://u@h/db",
        ],
    )
    def test_every_postgresql_spelling_ends_on_asyncpg(self, tmp_path, given):
        assert server_database_url(given, tmp_path) == "postgresql+asyncpg://u@h/db"

    def test_a_sqlite_url_gets_aiosqlite(self, tmp_path):
        assert server_database_url("sqlite:///x.db", tmp_path) == (
            "sqlite+aiosqlite:///x.db"
        )

    @pytest.mark.parametrize(
        ("given", "reason"),
        [
            ("mysql+pymysql://u@h/db", "runs on PostgreSQL or SQLite"),
            ("not a url", "expected a database URL"),
        ],
    )
    def test_anything_else_is_refused_naming_the_setting(self, tmp_path, given, reason):
        with pytest.raises(ValueError) as caught:
            server_database_url(given, tmp_path)

        assert str(caught.value).startswith("ORCH_PREFECT_DATABASE_URL: ")
        assert reason in str(caught.value)

    def test_the_setting_reaches_the_server_and_prefect_reads_it(
        self, tmp_path, monkeypatch
    ):
        monkeypatch.setenv("ORCH_PREFECT_DATABASE_URL", PG_URL)
        environment = prefect_environment(Settings(data_dir=tmp_path))

        read = prefect_reads(environment, monkeypatch)

        url = read.server.database.connection_url.get_secret_value()
        assert make_url(url).drivername == "postgresql+asyncpg"
        assert make_url(url).password == "s3cr@t"


class TestRedisMessaging:
    def test_prefect_and_prefect_redis_read_every_part_on_the_url(self, monkeypatch):
        read = prefect_reads(redis_messaging_environment(REDIS_URL), monkeypatch)

        assert read.server.events.messaging_broker == "prefect_redis.messaging"
        assert read.server.events.messaging_cache == "prefect_redis.messaging"
        assert read.server.events.causal_ordering == "prefect_redis.ordering"
        assert read.server.concurrency.lease_storage == "prefect_redis.lease_storage"
        assert read.server.docket.url == REDIS_URL
        assert read.server.worker_channel.cleanup_queue_storage == (
            "prefect_redis.cleanup_queue"
        )
        assert RedisMessagingSettings().url == REDIS_URL
        assert RedisWorkerCleanupQueueSettings().url == REDIS_URL
        assert RedisMessagingPublisherSettings().batch_size == 1

    def test_each_module_named_has_what_the_server_loads_from_it(self):
        environment = redis_messaging_environment(REDIS_URL)
        wanted = {
            "PREFECT_SERVER_EVENTS_MESSAGING_BROKER": ("Publisher", "Consumer"),
            "PREFECT_SERVER_EVENTS_MESSAGING_CACHE": ("Cache",),
            "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": ("CausalOrdering",),
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": ("ConcurrencyLeaseStorage",),
            "PREFECT_SERVER_WORKER_CHANNEL_CLEANUP_QUEUE_STORAGE": (
                "WorkerCleanupQueue",
            ),
        }

        for name, attributes in wanted.items():
            module = importlib.import_module(environment[name])
            assert all(hasattr(module, a) for a in attributes), (name, attributes)

    def test_the_setting_adds_redis_to_what_every_process_gets(
        self, tmp_path, monkeypatch
    ):
        monkeypatch.setenv("ORCH_PREFECT_REDIS_URL", REDIS_URL)

        environment = prefect_environment(Settings(data_dir=tmp_path))

        assert environment["PREFECT_REDIS_MESSAGING_URL"] == REDIS_URL
        assert environment["PREFECT_SERVER_DOCKET_URL"] == REDIS_URL
        assert environment["PREFECT_HOME"] == str(
            Settings(data_dir=tmp_path).prefect_home
        )

    @pytest.mark.parametrize(
        "given", ["rediss://h:6380/2", "redis+sentinel://s1:26379,s2:26379/main"]
    )
    def test_tls_and_sentinel_urls_are_taken_as_they_are(self, given):
        environment = redis_messaging_environment(given)

        assert environment["PREFECT_REDIS_MESSAGING_URL"] == given
        assert environment["PREFECT_SERVER_DOCKET_URL"] == given

    @pytest.mark.parametrize("given", ["127.0.0.1:6379", "http://127.0.0.1:6379/0"])
    def test_a_url_that_is_not_redis_is_refused_naming_the_setting(self, given):
        with pytest.raises(ValueError, match=r"^ORCH_PREFECT_REDIS_URL: expected"):
            redis_messaging_environment(given)


@pytest.fixture
def redis_database() -> Iterator[str]:
    """An emptied database of the test Redis, claimed as the test suite claims one."""
    databases = RedisDatabases(
        os.environ.get("ORCH_TEST_REDIS_URL", "redis://127.0.0.1:6379")
    )
    try:
        url = databases.claim()
    except redis.ConnectionError as exc:
        message = f"the test Redis is unreachable: {exc}"
        if os.environ.get("CI") == "true" or os.environ.get("ORCH_TEST_SCALED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    yield url
    databases.release_all()


@pytest.mark.slow
@pytest.mark.postgres
def test_the_stacks_prefect_server_runs_on_postgresql_with_redis_messaging(
    tmp_path: Path, new_store_url, redis_database: str
):
    database_url = new_store_url("postgresql")
    settings = Settings(
        data_dir=tmp_path,
        prefect_port=free_port(),
        prefect_database_url=database_url,
        prefect_redis_url=redis_database,
        crm="none",
    )
    stack = Stack(settings)
    stack.children = [c for c in stack.children if c.name == "prefect-server"]
    event = {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": "orchestrator.test.scaled",
        "resource": {"prefect.resource.id": f"test.{uuid.uuid4().hex}"},
    }

    try:
        stack.start()
        sent = httpx.post(f"{settings.prefect_url}/events", json=[event], timeout=10)
        stored = _wait_for_event(settings.prefect_url, event["id"])
    finally:
        stack.stop()

    assert sent.status_code == 204, sent.text
    assert stored, "the event came back from the server's database"
    with redis.Redis.from_url(redis_database) as client:
        assert client.type("events") == b"stream", "events went through Redis"
        assert client.keys("prefect-server*"), "the services' docket is in Redis"
    plain = make_url(database_url).set(drivername="postgresql")
    with psycopg.connect(plain.render_as_string(hide_password=False)) as connection:
        (runs,) = connection.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_name IN ('flow_run', 'events')"
        ).fetchone()
    assert runs == 2, "Prefect migrated its schema into the PostgreSQL database"
    assert not (settings.prefect_home / "prefect.db").exists()
    log = (tmp_path / "logs" / "prefect-server.log").read_text()
    assert "Traceback" not in log, log[-3000:]


def _wait_for_event(prefect_url: str, event_id: str) -> bool:
    """Whether the server stores the event within 30 s (it goes via messaging)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = httpx.post(
            f"{prefect_url}/events/filter",
            json={"filter": {"id": {"id": [event_id]}}, "limit": 1},
            timeout=10,
        )
        if found.status_code == 200 and found.json()["events"]:
            return True
        time.sleep(0.5)
    return False
