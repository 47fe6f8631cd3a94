"""Webhook sources from a shell: a source's secret, and a signed test delivery."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Annotated, Any

import typer

webhooks = typer.Typer(
    help="Webhook sources (config/webhooks.yaml): secrets and signed test deliveries.",
    no_args_is_help=True,
)


def _source(name: str) -> tuple[Any, Any, str]:
    from deployments.cli import _settings
    from leads.encryption import secret_key
    from leads.webhooks.sources import configured_sources

    settings = _settings()
    sources = configured_sources(settings.config_dir)
    if name not in sources:
        known = ", ".join(sorted(sources)) or "none"
        raise typer.BadParameter(f"no source {name!r}; known: {known}")
    source = sources[name]
    if (
        settings.env == "development"
        and settings.secret_key is None
        and not settings.secret_key_file.exists()
    ):
        # The development secrets come from the stack's key: without it, a
        # new key here would print secrets the running stack does not know.
        raise typer.BadParameter(
            f"no secret key in {settings.data_dir.resolve()}: run this with the "
            "stack's settings (its ORCH_DATA_DIR, or ORCH_SECRET_KEY), or start "
            "the stack first"
        )
    key = secret_key(settings) if settings.env == "development" else None
    secret = source.secret(key)
    if secret is None:
        raise typer.BadParameter(
            f"source {name!r} has no secret: set {source.secret_env}"
        )
    return settings, source, secret


@webhooks.command("secret")
def show_secret(
    name: Annotated[str, typer.Argument(help="The source's name.")],
) -> None:
    """Prints a source's secret, to configure the sending tool with."""
    _, _, secret = _source(name)
    typer.echo(secret)


@webhooks.command("curl")
def signed_curl(
    name: Annotated[str, typer.Argument(help="The source's name.")],
    body: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="A JSON file to send.")
    ],
    event_id: Annotated[
        str | None, typer.Option(help="Sent as the source's delivery-id header.")
    ] = None,
) -> None:
    """Prints a curl command that sends the file as a signed delivery (for tests)."""
    from leads.webhooks.signatures import sign_orchestrator, sign_sha256
    from leads.webhooks.sources import SignatureFormat

    settings, source, secret = _source(name)
    raw = body.read_bytes()
    url = f"{settings.public_base_url.rstrip('/')}/api/webhooks/{name}"
    headers = {"Content-Type": "application/json"}
    stamp = int(time.time())
    match source.signature:
        case SignatureFormat.ORCHESTRATOR:
            headers[source.signature_header or ""] = sign_orchestrator(
                secret, stamp, raw
            )
        case SignatureFormat.SHA256:
            headers[source.timestamp_header or ""] = str(stamp)
            headers[source.signature_header or ""] = sign_sha256(
                secret, str(stamp), raw
            )
        case SignatureFormat.TOKEN:
            url += f"?token={secret}"
        case _:
            raise typer.BadParameter(f"{source.signature} deliveries come from HubSpot")
    if event_id and source.delivery_id and source.delivery_id.header:
        headers[source.delivery_id.header] = event_id
    parts = ["curl", "-sS", "-X", "POST", url]
    for header, value in headers.items():
        parts += ["-H", f"{header}: {value}"]
    parts += ["--data-binary", f"@{body}"]
    typer.echo(shlex.join(parts))
