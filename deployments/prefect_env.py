"""The Prefect environment every process of the product shares.

`orchestrator up` gives it to its children; `orchestrator serve` applies it to
itself when started alone, so a flow runner behaves the same either way.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from leads.settings import Settings

# Flow runs send a heartbeat this often (30 is Prefect's minimum; its default
# is 180). The crash-detection automation counts missed beats of this length.
HEARTBEAT_SECONDS = 30
# Deployments and their runs carry this tag; the product's automations act on
# tagged runs only, never on other projects' runs on a shared server.
RUN_TAG = "orchestrator"
# prefect-redis's modules for each pluggable part of the Prefect server.
REDIS_MESSAGING = "prefect_redis.messaging"
REDIS_ORDERING = "prefect_redis.ordering"
REDIS_LEASE_STORAGE = "prefect_redis.lease_storage"
REDIS_CLEANUP_QUEUE = "prefect_redis.cleanup_queue"
# What prefect-redis and docket both connect to (`+sentinel`: through Sentinel).
_REDIS_SCHEMES = ("redis", "rediss", "redis+sentinel", "rediss+sentinel")
# The Prefect server's async driver for each database it supports
# (`postgres://` is the spelling many hosting providers hand out).
_ASYNC_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}


def prefect_environment(settings: Settings) -> dict[str, str]:
    """Environment every process of the stack shares for Prefect.

    The server's database is `ORCH_PREFECT_DATABASE_URL` when set, else SQLite
    in the Prefect home; `ORCH_PREFECT_REDIS_URL` switches its messaging, event
    ordering, concurrency leases and background-service queue to that Redis.
    """
    home = settings.prefect_home
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": settings.prefect_url,
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": server_database_url(
            settings.prefect_database_url, home
        ),
        # Nothing may call out: no analytics from the server or the client.
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        # Heartbeats let the product's automation crash runs whose process died.
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
        "PREFECT_RUNNER_POLL_FREQUENCY": str(settings.flow_runner_poll_seconds),
        "PREFECT_LOGGING_LEVEL": "INFO",
    } | redis_messaging_environment(settings.prefect_redis_url)


def server_database_url(url: str | None, home: Path) -> str:
    """The Prefect server's database URL, with the async driver it needs.

    None means the SQLite file `prefect.db` in `home`. A PostgreSQL URL given
    with another driver (`postgresql+psycopg://`, as the lead store takes) is
    moved to asyncpg, the driver Prefect's server is built and tested on.

    Raises:
        ValueError: the URL is not one of PostgreSQL or SQLite.
    """
    if url is None:
        return f"sqlite+aiosqlite:///{home / 'prefect.db'}"
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(
            f"ORCH_PREFECT_DATABASE_URL: expected a database URL such as "
            f"postgresql+asyncpg://user@host/db, got {url!r}"
        ) from exc
    driver = _ASYNC_DRIVERS.get(parsed.get_backend_name())
    if driver is None:
        raise ValueError(
            "ORCH_PREFECT_DATABASE_URL: the Prefect server runs on PostgreSQL or "
            f"SQLite, got the {parsed.get_backend_name()!r} database"
        )
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def redis_messaging_environment(url: str | None) -> dict[str, str]:
    """Prefect server settings that move its shared state to the Redis at `url`.

    Empty for None (Prefect's in-memory messaging, enough for one server
    process). Otherwise every part `prefect server start --workers N` refuses
    to run in memory, plus the background services' docket and the workers'
    clean-up queue (restart-safe there), all on `url`.

    Raises:
        ValueError: `url` is not a Redis URL prefect-redis and docket take.
    """
    if url is None:
        return {}
    scheme, separator, _ = url.partition("://")
    if scheme.lower() not in _REDIS_SCHEMES or not separator:
        raise ValueError(
            f"ORCH_PREFECT_REDIS_URL: expected redis://host:port/db, got {url!r}"
        )
    return {
        "PREFECT_SERVER_EVENTS_MESSAGING_BROKER": REDIS_MESSAGING,
        "PREFECT_SERVER_EVENTS_MESSAGING_CACHE": REDIS_MESSAGING,
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": REDIS_ORDERING,
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": REDIS_LEASE_STORAGE,
        # When set, prefect-redis ignores its HOST/PORT/DB settings.
        "PREFECT_REDIS_MESSAGING_URL": url,
        # prefect-redis publishes in batches of 5 or every 10 s by default, which
        # delayed event-triggered runs by 10 s when measured; publish each event.
        "PREFECT_REDIS_MESSAGING_PUBLISHER_BATCH_SIZE": "1",
        "PREFECT_SERVER_DOCKET_URL": url,
        "PREFECT_SERVER_WORKER_CHANNEL_CLEANUP_QUEUE_STORAGE": REDIS_CLEANUP_QUEUE,
        "PREFECT_REDIS_WORKER_CLEANUP_QUEUE_URL": url,
    }


def apply_runner_defaults(settings: Settings) -> None:
    """Sets heartbeat and polling for this process and the runs it starts.

    Values already in the environment win; call before Prefect is imported.
    """
    wanted = prefect_environment(settings)
    for name in ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_POLL_FREQUENCY"):
        os.environ.setdefault(name, wanted[name])
