"""Fresh lead stores and `orchestrator api` processes on loopback, always torn down."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from leads.settings import DEFAULT_TENANT, Settings
from leads.store import Store
from leads.store.api_keys import create_key

LOOPBACK = "127.0.0.1"
HEALTH_TIMEOUT_S = 30.0
HEALTH_POLL_S = 0.1
STOP_TIMEOUT_S = 10.0
KILL_TIMEOUT_S = 5.0
UPGRADE_TIMEOUT_S = 120.0
PG_CONNECT_TIMEOUT_S = 5
LOG_TAIL_LINES = 30
# A unix socket (no host) is local too; anything else would send traffic off
# this machine, which the benchmark must never do.
LOCAL_PG_HOSTS = frozenset({None, "", "127.0.0.1", "localhost", "::1"})
# The most `ORCH_RATE_LIMIT_PER_MINUTE` allows: a benchmark's one key sends far
# more than a default budget (1,200 a minute), and what is measured is the
# server's work, not the limiter's 429s. The limiter still runs and charges
# every request.
BENCH_RATE_LIMIT_PER_MINUTE = 1_000_000


class BackendUnavailable(RuntimeError):
    """The backend cannot be used here; the message says why."""


class ServerFailed(RuntimeError):
    """A store command failed or the API did not come up; the message has its log."""


@dataclass
class Backend:
    """One lead store the API is pointed at, with the `ORCH_*` variables to reach it."""

    name: str
    label: str
    data_dir: Path
    settings: dict[str, str] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        """This process's environment with only the benchmark's `ORCH_*` variables.

        A developer's own `ORCH_*` settings (another database, production mode,
        a smaller batch limit) would change what is measured, so none is passed on.
        """
        base = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        return {**base, "ORCH_DATA_DIR": str(self.data_dir), **self.settings}

    @property
    def store_url(self) -> str:
        """The lead store's URL, as the servers started on this backend read it."""
        return Settings(
            data_dir=self.data_dir, database_url=self.settings.get("ORCH_DATABASE_URL")
        ).store_url


@dataclass(frozen=True)
class Server:
    """A running API: where to reach it, the command that started it, and a key."""

    base_url: str
    command: tuple[str, ...]
    key: str

    @property
    def headers(self) -> dict[str, str]:
        """The header that authenticates a request with the server's key."""
        return bearer(self.key)


def bearer(key: str) -> dict[str, str]:
    """`Authorization: Bearer <key>`, as the API reads a key."""
    return {"authorization": f"Bearer {key}"}


def issue_key(store_url: str, scope: str = "write") -> str:
    """A new key of tenant `default` in an upgraded store, named `bench`.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the store cannot be reached or is not
            upgraded.
    """
    store = Store(store_url)
    try:
        return create_key(store, DEFAULT_TENANT, scope, "bench").secret
    finally:
        store.dispose()


def orchestrator_command() -> str:
    """The `orchestrator` console script of the interpreter running the benchmark.

    Raises:
        ServerFailed: the script is not installed next to it nor on the PATH.
    """
    beside = Path(sys.executable).with_name("orchestrator")
    if beside.is_file():
        return str(beside)
    on_path = shutil.which("orchestrator")
    if on_path:
        return on_path
    raise ServerFailed(
        "the `orchestrator` command is not installed; run `pip install -e .` first"
    )


def free_port() -> int:
    """A loopback TCP port nobody listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


@contextmanager
def sqlite_backend() -> Iterator[Backend]:
    """A SQLite lead store in a fresh temporary data dir, deleted afterwards."""
    data_dir = Path(tempfile.mkdtemp(prefix="orch_bench_sqlite_"))
    try:
        yield Backend(
            "sqlite", "SQLite (WAL) file in a fresh temporary data dir", data_dir
        )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _libpq_url(sqlalchemy_url: str) -> str:
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


@contextmanager
def postgresql_backend(admin_url: str) -> Iterator[Backend]:
    """A fresh PostgreSQL database made through `admin_url`, dropped afterwards.

    Args:
        admin_url: SQLAlchemy URL of a loopback server on which this role may
            CREATE and DROP DATABASE (`ORCH_TEST_POSTGRES_URL`).

    Raises:
        BackendUnavailable: the URL is not a local PostgreSQL, or the server
            cannot be reached or refuses to create the database.
    """
    try:
        admin = make_url(admin_url)
    except ArgumentError as exc:
        raise BackendUnavailable(f"ORCH_TEST_POSTGRES_URL is not a URL: {exc}") from exc
    shown = admin.render_as_string(hide_password=True)
    if admin.get_backend_name() != "postgresql":
        raise BackendUnavailable(f"ORCH_TEST_POSTGRES_URL ({shown}) is not PostgreSQL")
    if admin.host not in LOCAL_PG_HOSTS:
        raise BackendUnavailable(
            f"ORCH_TEST_POSTGRES_URL points at {admin.host}; the benchmark only "
            "talks to servers on this machine"
        )
    name = f"orch_bench_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(
            _libpq_url(admin_url), autocommit=True, connect_timeout=PG_CONNECT_TIMEOUT_S
        ) as connection:
            row = connection.execute("SHOW server_version").fetchone()
            # Without autovacuum a fresh store is never analysed, which changes
            # the plans PostgreSQL picks; a reader needs to know.
            autovacuum = connection.execute("SHOW autovacuum").fetchone()
            connection.execute(
                sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            )
    except psycopg.Error as exc:
        raise BackendUnavailable(
            f"cannot create a database through {shown}: {_one_line(exc)}"
        ) from exc
    server_version = row[0] if row else "unknown version"
    autovacuum_state = autovacuum[0] if autovacuum else "unknown"
    data_dir = Path(tempfile.mkdtemp(prefix="orch_bench_pg_"))
    store_url = admin.set(database=name).render_as_string(hide_password=False)
    try:
        yield Backend(
            "postgresql",
            f"PostgreSQL {server_version} at {admin.host or 'local socket'}, "
            f"fresh database, autovacuum {autovacuum_state}",
            data_dir,
            {"ORCH_DATABASE_URL": store_url},
        )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
        _drop_database(admin_url, name)


def _drop_database(admin_url: str, name: str) -> None:
    try:
        with psycopg.connect(
            _libpq_url(admin_url), autocommit=True, connect_timeout=PG_CONNECT_TIMEOUT_S
        ) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)
                )
            )
    except psycopg.Error as exc:
        # Raising here would hide whatever ended the run; say what to clean up.
        print(
            f"warning: could not drop PostgreSQL database {name}: {_one_line(exc)}; "
            "drop it by hand",
            file=sys.stderr,
        )


def tail(path: Path) -> str:
    """The last lines of a server's log, for the error that says why it failed."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        return f"(no log: {exc.strerror})"
    return "\n".join(lines[-LOG_TAIL_LINES:])


def upgrade_store(backend: Backend) -> str:
    """Runs `orchestrator db upgrade` against the backend.

    Returns:
        What the command printed.

    Raises:
        ServerFailed: the command failed or did not finish in time.
    """
    command = [orchestrator_command(), "db", "upgrade"]
    try:
        done = subprocess.run(
            command,
            env=backend.environment(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=UPGRADE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ServerFailed(
            f"`orchestrator db upgrade` took over {UPGRADE_TIMEOUT_S:.0f} s"
        ) from exc
    if done.returncode != 0:
        raise ServerFailed(
            f"`orchestrator db upgrade` exited with {done.returncode}:\n"
            f"{done.stdout}{done.stderr}"
        )
    return done.stdout.strip()


def wait_until_answers(
    process: subprocess.Popen[bytes],
    base_url: str,
    path: str,
    log: Path,
    *,
    name: str,
    timeout: float = HEALTH_TIMEOUT_S,
) -> None:
    """Waits until `path` answers 200, failing with the log's tail if it never does.

    Raises:
        ServerFailed: `name` exited, or `path` stayed silent for `timeout` s.
    """
    deadline = time.monotonic() + timeout
    # trust_env=False: a proxy from the environment must not see loopback traffic.
    with httpx.Client(base_url=base_url, timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServerFailed(
                    f"`{name}` exited with {process.returncode}:\n{tail(log)}"
                )
            try:
                if client.get(path).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(HEALTH_POLL_S)
    raise ServerFailed(
        f"{path} did not answer 200 within {timeout:.0f} s:\n{tail(log)}"
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stops a server: SIGTERM, then SIGKILL if it does not go in time."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=KILL_TIMEOUT_S)


@contextmanager
def api_server(backend: Backend) -> Iterator[Server]:
    """Starts `orchestrator api` on a free loopback port and stops it afterwards.

    The store must be upgraded: a `write` key of tenant `default` is made in it
    first (`Server.key`). The server runs with `ORCH_RATE_LIMIT_PER_MINUTE` at
    `BENCH_RATE_LIMIT_PER_MINUTE`. Its output goes to `api.log` in the
    backend's data dir; its last lines are in the error when it fails to start.

    Raises:
        ServerFailed: the server exited or `/health` stayed silent too long.
    """
    port = free_port()
    command = (orchestrator_command(), "api", "--host", LOOPBACK, "--port", str(port))
    log_path = backend.data_dir / "api.log"
    key = issue_key(backend.store_url)
    environment = {
        **backend.environment(),
        "ORCH_RATE_LIMIT_PER_MINUTE": str(BENCH_RATE_LIMIT_PER_MINUTE),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            base_url = f"http://{LOOPBACK}:{port}"
            wait_until_answers(
                process, base_url, "/health", log_path, name="orchestrator api"
            )
            yield Server(base_url, command, key)
        finally:
            stop(process)
