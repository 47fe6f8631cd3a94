"""Webhook sources as `config/webhooks.yaml` declares them."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from leads.config_files import load_model
from leads.tracebacks import PlainMessage

WEBHOOKS_FILE = "webhooks.yaml"
_SOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"
# Dotted keys of nested objects; a key may hold spaces (`Email Address`).
_PATH = r"^[^.]+(\.[^.]+)*$"


class WebhookConfigError(PlainMessage, ValueError):
    """`config/webhooks.yaml` cannot be read or does not fit the schema."""


class SignatureFormat(StrEnum):
    """How a source proves a delivery is its own."""

    # `X-Orchestrator-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
    ORCHESTRATOR = "orchestrator"
    # `X-Signature: sha256=<hex>` over "<timestamp>.<body>", the timestamp in
    # its own header (GitHub-style senders and many form tools).
    SHA256 = "sha256"
    # HubSpot's v3: base64 HMAC-SHA256 of method + URL + body + timestamp (ms).
    HUBSPOT_V3 = "hubspot_v3"
    # `?token=<secret>`, for tools that cannot sign.
    TOKEN = "token"


class Payload(StrEnum):
    """What a source's body holds."""

    # One lead (or an event carrying one) per delivery.
    LEAD = "lead"
    # HubSpot's webhook batches: a JSON list of contact events.
    HUBSPOT = "hubspot"


DottedPath = Annotated[str, Field(pattern=_PATH, max_length=200)]


class FromHeaderOrField(BaseModel):
    """Where a value is read: a request header, or a field of the body."""

    model_config = ConfigDict(extra="forbid")

    header: str | None = Field(None, max_length=100)
    field: DottedPath | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> FromHeaderOrField:
        if (self.header is None) == (self.field is None):
            raise ValueError("give exactly one of `header` or `field`")
        return self


class EventFilter(BaseModel):
    """Which events of a source carry a lead; others are kept as `ignored`."""

    model_config = ConfigDict(extra="forbid")

    field: DottedPath
    accept: list[str] = Field(min_length=1)


class WebhookSource(BaseModel):
    """One sender: how it signs, where its ids and times are, how its body maps."""

    model_config = ConfigDict(extra="forbid")

    name: str = ""
    tenant: str = Field(
        "default",
        max_length=64,
        description="The tenant whose leads this source's deliveries become.",
    )
    payload: Payload = Payload.LEAD
    signature: SignatureFormat = SignatureFormat.ORCHESTRATOR
    secret_env: str = Field(
        pattern=_ENV_NAME,
        description="The environment variable holding the secret (never the secret).",
    )
    signature_header: str | None = Field(None, max_length=100)
    timestamp_header: str | None = Field(None, max_length=100)
    delivery_id: FromHeaderOrField | None = None
    occurred_at: FromHeaderOrField | None = None
    events: EventFilter | None = None
    lead: DottedPath | None = Field(
        None, description="Where the lead object is in the body; the body itself."
    )
    fields: dict[str, DottedPath] = Field(
        default_factory=dict,
        description="Lead field -> path in the lead object, for names that differ.",
    )
    lead_source: str | None = Field(None, max_length=255)

    @model_validator(mode="after")
    def _defaults_for_format(self) -> WebhookSource:
        if self.signature_header is None:
            self.signature_header = {
                SignatureFormat.ORCHESTRATOR: "X-Orchestrator-Signature",
                SignatureFormat.SHA256: "X-Signature",
                SignatureFormat.HUBSPOT_V3: "X-HubSpot-Signature-v3",
                SignatureFormat.TOKEN: None,
            }[self.signature]
        if self.timestamp_header is None:
            self.timestamp_header = {
                SignatureFormat.SHA256: "X-Timestamp",
                SignatureFormat.HUBSPOT_V3: "X-HubSpot-Request-Timestamp",
            }.get(self.signature)
        if self.payload is Payload.HUBSPOT and (
            self.lead or self.fields or self.events or self.delivery_id
        ):
            raise ValueError(
                "a `hubspot` payload reads HubSpot's own event fields; "
                "leave out lead, fields, events and delivery_id"
            )
        return self

    def secret(self, key_for_development: str | None) -> str | None:
        """The source's secret from its environment variable.

        In development, a source whose variable is unset gets a secret derived
        from the project's secret key (`orchestrator webhooks secret NAME`
        prints it), so the stack works out of the box; in production
        `key_for_development` is None and such a source has no secret.
        """
        value = os.environ.get(self.secret_env, "")
        if value:
            return value
        if key_for_development is None:
            return None
        return derived_secret(key_for_development, self.name)


def derived_secret(secret_key: str, source: str) -> str:
    """A per-source secret from the project's secret key (development only)."""
    digest = hmac.new(
        secret_key.encode(), f"webhook-source:{source}".encode(), hashlib.sha256
    )
    return "whsec_dev_" + digest.hexdigest()[:32]


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: dict[str, WebhookSource] = Field(default_factory=dict)

    @field_validator("sources", mode="before")
    @classmethod
    def _named(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        named = {}
        for name, source in value.items():
            if not isinstance(name, str) or not _SOURCE_NAME.match(name):
                raise ValueError(
                    f"source name {name!r} must be lower-case letters, digits, "
                    "`-` or `_` (it is the URL path)"
                )
            named[name] = (
                {**source, "name": name} if isinstance(source, dict) else source
            )
        return named


def load_sources(config_dir: Path) -> dict[str, WebhookSource]:
    """Every source in `config_dir/webhooks.yaml`; none when the file is absent.

    Raises:
        WebhookConfigError: the file is not valid YAML or does not fit.
    """
    path = config_dir / WEBHOOKS_FILE
    if not path.exists():
        return {}
    config = load_model(
        path, WebhookConfig, WebhookConfigError, "a mapping with a `sources` key"
    )
    return config.sources


_loaded: dict[Path, tuple[object, dict[str, WebhookSource]]] = {}


def configured_sources(config_dir: Path) -> dict[str, WebhookSource]:
    """`load_sources`, read again only when the file changed (edits apply live).

    Raises:
        WebhookConfigError: the file as it is now cannot be used.
    """
    path = config_dir / WEBHOOKS_FILE
    try:
        status = path.stat()
        stamp: object = (status.st_mtime_ns, status.st_size)
    except FileNotFoundError:
        stamp = None
    cached = _loaded.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    sources = load_sources(config_dir)
    _loaded[path] = (stamp, sources)
    return sources
