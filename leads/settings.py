"""Settings read from `ORCH_*` environment variables, one field per documented knob."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024
# The tenant of a single-team install: the first key `orchestrator up` makes
# is its, and the CRM the environment names (`ORCH_CRM`) is its alone.
DEFAULT_TENANT = "default"


class Settings(BaseSettings):
    """Everything the API, the store and the command line read from the environment."""

    model_config = SettingsConfigDict(env_prefix="ORCH_", extra="ignore")

    env: Literal["development", "production"] = Field(
        "development",
        description=(
            "`production` creates no API key by itself and refuses weak settings."
        ),
    )
    data_dir: Path = Field(
        Path("data"),
        description=(
            "Folder for SQLite files, the Prefect home, the e-mail outbox, uploaded "
            "imports and the generated secret key. Relative paths are taken from the "
            "working directory."
        ),
    )
    database_url: str | None = Field(
        None,
        description=(
            "SQLAlchemy URL of the lead store; unset means the SQLite file "
            "`<data dir>/orchestrator.db`. PostgreSQL: `postgresql+psycopg://…`."
        ),
    )
    api_host: str = Field("127.0.0.1", description="Address the API listens on.")
    api_port: int = Field(8000, ge=1, le=65535, description="Port of the API.")
    api_workers: int = Field(
        1,
        ge=1,
        le=64,
        description=(
            "API processes serving the port. One Python process uses about one "
            "core; on PostgreSQL, one per core answers more leads a second with "
            "lower latency. On SQLite, writers take turns at the file anyway."
        ),
    )
    intake_linger_ms: float = Field(
        10.0,
        ge=0,
        le=1000,
        description=(
            "How long a single lead posted to the API may wait for others to "
            "be written in one transaction with it, while an API key's leads "
            "come in less than twice this apart on average and waiting has "
            "lately found them company. The first lead after ten times this "
            "without one is written at once; 0 never waits."
        ),
    )
    prefect_port: int = Field(
        4200, ge=1, le=65535, description="Port of the Prefect server and its UI."
    )
    prefect_api_url: str | None = Field(
        None,
        description=(
            "Prefect server API the product talks to; unset means the one "
            "`orchestrator up` starts, `http://127.0.0.1:<ORCH_PREFECT_PORT>/api`."
        ),
    )
    prefect_ui_url: str | None = Field(
        None,
        description=(
            "The Prefect UI's address as people reach it, which the links in the "
            "API's answers name; unset means the Prefect API's address without "
            "`/api` (right unless the API reaches Prefect by an inner address, "
            "as in the compose file)."
        ),
    )
    flow_runner_limit: int = Field(
        4,
        ge=1,
        le=64,
        description="Most flow runs the flow runner executes at once.",
    )
    background_niceness: int = Field(
        10,
        ge=0,
        le=19,
        description=(
            "Scheduling niceness of the flow runner and its flow runs (imports, "
            "CRM syncs, e-mail batches) and of the Prefect server `orchestrator "
            "up` starts: above 0 they yield the CPU to the API, so single leads "
            "are answered quickly while a large import runs. 0 shares it evenly."
        ),
    )
    flow_runner_poll_seconds: int = Field(
        1,
        ge=1,
        le=60,
        description="How often the flow runner asks the Prefect server for due runs.",
    )
    worker_health_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description=(
            "Port on which `orchestrator worker` answers GET /health: 200 while "
            "it polls the work pool, 503 once it has not polled for 30 polling "
            "intervals (30 x ORCH_FLOW_RUNNER_POLL_SECONDS; a hung worker). "
            "Unset: no health server. Served on 127.0.0.1, for a container's "
            "own health check."
        ),
    )
    sandbox_port: int = Field(
        8100,
        ge=1,
        le=65535,
        description="Port of the bundled CRM sandbox.",
    )
    public_base_url: str = Field(
        "http://127.0.0.1:8000",
        description=(
            "Address the outside world reaches the API at; used in unsubscribe "
            "links and webhook signature checks. Unset, it follows "
            "`ORCH_API_HOST` and `ORCH_API_PORT` (loopback when the API listens "
            "on every address)."
        ),
    )
    secret_key: SecretStr | None = Field(
        None,
        description=(
            "Encrypts CRM credentials saved through the API and signs "
            "unsubscribe links. Unset: a key generated into the data dir."
        ),
    )
    crm: Literal["none", "sandbox", "hubspot", "salesforce"] = Field(
        "sandbox",
        description=(
            "Which CRM leads are synced to when a tenant has not configured one "
            "through `POST /api/crm/config`. `sandbox` is the bundled local CRM; "
            "`hubspot` and `salesforce` read `ORCH_HUBSPOT_*` / `ORCH_SALESFORCE_*`."
        ),
    )
    sandbox_crm: Literal["hubspot", "salesforce"] = Field(
        "hubspot",
        description="Which vendor's API the sandbox is used as when ORCH_CRM=sandbox.",
    )
    crm_mode: Literal["upsert", "update_only", "create_only"] = Field(
        "upsert",
        description=(
            "`upsert` creates or updates; `update_only` touches only records the "
            "CRM already has; `create_only` never changes an existing record."
        ),
    )
    crm_tier: Literal["starter", "professional", "enterprise"] = Field(
        "professional",
        description=(
            "HubSpot subscription tier, which sizes the shared rate budget until "
            "HubSpot's own headers correct it."
        ),
    )
    email_backend: Literal["file", "smtp"] = Field(
        "file",
        description="`file` writes .eml files to `<data dir>/outbox`; `smtp` sends "
        "through ORCH_SMTP_URL.",
    )
    smtp_url: SecretStr | None = Field(
        None,
        description=(
            "`smtp://user:pass@host:587?starttls=true` (STARTTLS) or "
            "`smtps://user:pass@host:465` (implicit TLS); also `timeout=`, "
            "`cafile=`, `local_hostname=`. For the smtp backend."
        ),
    )
    email_from: str = Field(
        "Automation Orchestrator <noreply@localhost>",
        description="From address of every message.",
    )
    default_region: str = Field(
        "US",
        min_length=2,
        max_length=2,
        description="ISO 3166-1 region used to read phone numbers without a prefix.",
    )
    default_timezone: str = Field(
        "UTC", description="IANA zone for leads whose zone cannot be told otherwise."
    )
    max_requests_in_flight: int = Field(
        256,
        ge=1,
        le=100_000,
        description=(
            "Most requests one API process works on at once; more are answered "
            "503 with `Retry-After` at once instead of queueing without bound."
        ),
    )
    max_body_bytes: int = Field(
        1 * MIB,
        ge=1024,
        le=64 * MIB,
        description="Largest JSON request body accepted; larger bodies get 413.",
    )
    max_batch_leads: int = Field(
        1000,
        ge=1,
        le=10_000,
        description="Most leads in one `POST /api/leads/batch`; more get 413.",
    )
    max_import_bytes: int = Field(
        200 * MIB,
        ge=MIB,
        description="Largest CSV upload `POST /api/imports` takes; larger gets 413.",
    )
    import_workers: int = Field(
        1,
        ge=0,
        le=16,
        description=(
            "Processes that clean an import's next records while the current ones "
            "are written; 0 does both in the import's own process."
        ),
    )
    api_key: SecretStr | None = Field(
        None,
        description=(
            "The key `orchestrator import` and `orchestrator sync` send to the API; "
            "unset means the development key `orchestrator up` kept in "
            "`<data dir>/api-key`."
        ),
    )
    rate_limit_per_minute: int = Field(
        1200,
        ge=1,
        le=1_000_000,
        description=(
            "Requests one API key may make a minute (a token bucket, so short "
            "bursts up to this many pass); more get 429 with `Retry-After`."
        ),
    )
    rate_limit_redis_url: SecretStr | None = Field(
        None,
        description=(
            "Redis holding the rate-limit buckets (`redis://host:port/db`), so "
            "every API process and replica shares them; unset, each process "
            "counts on its own."
        ),
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description=(
            "Web origins allowed to call the API from a browser, as a JSON list "
            '(`["https://app.example.com"]`); empty allows none.'
        ),
    )
    prefect_database_url: str | None = Field(
        None,
        description=(
            "Database of the Prefect server `orchestrator up` starts; unset means "
            "SQLite under the data dir. PostgreSQL: `postgresql+asyncpg://…`."
        ),
    )
    prefect_redis_url: str | None = Field(
        None,
        description=(
            "Redis for the Prefect server's messaging (`redis://host:port/db`); "
            "unset means Prefect's in-memory messaging, fine for one server process."
        ),
    )
    config_dir: Path = Field(
        Path(__file__).resolve().parent.parent / "config",
        description=(
            "Folder of sequences.yaml, matching.yaml, scoring.yaml and the e-mail "
            "templates."
        ),
    )
    test_postgres_url: str = Field(
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        description=(
            "PostgreSQL server the tests create and drop their own databases on; with "
            "CI=true the tests fail, not skip, when it is unreachable."
        ),
    )
    bench_data: Path = Field(
        Path("../shared/data"),
        description="Where benchmarks find the real data sets.",
    )

    @field_validator("default_region")
    @classmethod
    def _upper_region(cls, value: str) -> str:
        return value.upper()

    @field_validator("public_base_url")
    @classmethod
    def _is_web_address(cls, value: str) -> str:
        # Every marketing e-mail carries a link made from it: a wrong one would
        # make each of them fail, so it is refused at start instead.
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"expected an http(s) address such as https://crm.example.com, "
                f"got {value!r}"
            )
        if any(char.isspace() for char in value) or parts.query or parts.fragment:
            raise ValueError("expected an address without spaces, query or fragment")
        return value

    @model_validator(mode="after")
    def _public_address_follows_the_api(self) -> Settings:
        # A stack moved to another port must not send links to the old one.
        if "public_base_url" not in self.model_fields_set:
            host = self.api_host
            if host in ("0.0.0.0", "::", ""):
                host = "127.0.0.1"
            elif ":" in host:
                host = f"[{host}]"
            self.public_base_url = f"http://{host}:{self.api_port}"
        return self

    @field_validator("default_timezone")
    @classmethod
    def _is_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"expected an IANA time zone such as Europe/Berlin, got {value!r}"
            ) from exc
        return value

    @property
    def prefect_url(self) -> str:
        """The Prefect server's API address."""
        return self.prefect_api_url or f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def prefect_ui(self) -> str:
        """The Prefect UI's address for people, without a trailing slash."""
        if self.prefect_ui_url:
            return self.prefect_ui_url.rstrip("/")
        return self.prefect_url.removesuffix("/api")

    @property
    def prefect_home(self) -> Path:
        """Prefect's own files (its SQLite database, logs) for the embedded server."""
        return (self.data_dir / "prefect").resolve()

    @property
    def model_dir(self) -> Path:
        """Scoring models `orchestrator score train` saved, one folder a version."""
        return (self.data_dir / "models").resolve()

    @property
    def import_dir(self) -> Path:
        """Uploaded lead files, kept until their import has finished."""
        return (self.data_dir / "imports").resolve()

    @property
    def email_outbox_dir(self) -> Path:
        """Where the file e-mail backend writes `.eml` messages."""
        return (self.data_dir / "outbox").resolve()

    @property
    def sandbox_url(self) -> str:
        """Where the bundled CRM sandbox listens."""
        return f"http://127.0.0.1:{self.sandbox_port}"

    @property
    def sandbox_state_file(self) -> Path:
        """Where the bundled CRM sandbox keeps its records between runs."""
        return (self.data_dir / "sandbox.json").resolve()

    @property
    def secret_key_file(self) -> Path:
        """The generated secret key, used when `ORCH_SECRET_KEY` is unset."""
        return (self.data_dir / "secret.key").resolve()

    @property
    def store_url(self) -> str:
        """The lead store's URL, defaulting to a SQLite file in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'orchestrator.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
