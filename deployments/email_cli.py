"""E-mail from a shell: the `mailbox` command, a local SMTP server to watch mail."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

DEFAULT_PORT = 8025


def mailbox(
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="Port on 127.0.0.1.")
    ] = DEFAULT_PORT,
    folder: Annotated[
        Path | None,
        typer.Option(
            file_okay=False,
            help="Where received messages are written. Default: "
            "<ORCH_DATA_DIR>/mailbox.",
        ),
    ] = None,
) -> None:
    """Runs a local SMTP server that keeps every message it gets, until Ctrl-C."""
    from connectors.email.mailbox import LOOPBACK, start_mailbox
    from deployments.cli import _ensure_port_free, _settings

    settings = _settings()
    _ensure_port_free(LOOPBACK, port, "pass another --port")
    target = (folder or settings.data_dir / "mailbox").resolve()
    server = start_mailbox(target, port)
    typer.echo(f"SMTP mailbox on {server.url}, writing messages to {target}")
    typer.echo(
        f"Point the stack at it: ORCH_EMAIL_BACKEND=smtp ORCH_SMTP_URL={server.url}"
    )
    seen = 0
    try:
        while True:
            time.sleep(0.5)
            received = server.received
            for envelope in received[seen:]:
                typer.echo(
                    f"received a message for {len(envelope.rcpt_tos)} recipient(s)"
                )
            seen = len(received)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
