"""A local SMTP server that keeps every message it receives, for watching mail.

`orchestrator mailbox` runs it on loopback, so the stack can be pointed at a
real SMTP server (`ORCH_EMAIL_BACKEND=smtp`, `ORCH_SMTP_URL=smtp://127.0.0.1:8025`)
without sending anything anywhere. The end-to-end test and the e-mail
benchmark use it too. Each message is written whole to
`<folder>/<start>-<pid>-<n>.eml` (names sort in arrival order, and a restarted
server keeps what the last one wrote), with the envelope recipients in an
`X-Mailbox-Rcpt-To` header.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

LOOPBACK = "127.0.0.1"


class _Keeper:
    """The aiosmtpd handler: writes each accepted message into the folder."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.received: list[Envelope] = []
        self.connections = 0
        self._numbers = itertools.count(1)
        # Names sort in arrival order and never collide with an earlier
        # server's files in the same folder (a restarted mailbox).
        self._prefix = f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{os.getpid()}"
        self._lock = threading.Lock()

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        # One EHLO per connection from our clients: counts reused connections.
        with self._lock:
            self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        with self._lock:
            self.received.append(envelope)
            number = next(self._numbers)
        if self.folder is not None:
            content = envelope.original_content or b""
            recipients = ", ".join(envelope.rcpt_tos).encode("utf-8")
            data = b"X-Mailbox-Rcpt-To: " + recipients + b"\r\n" + content
            name = f"{self._prefix}-{number:08d}.eml"
            _write_whole(self.folder / name, data)
        return "250 Message accepted for delivery"


class Mailbox:
    """A running loopback SMTP server and what it has received."""

    def __init__(self, controller: Controller, keeper: _Keeper) -> None:
        self._controller = controller
        self._keeper = keeper

    @property
    def port(self) -> int:
        return int(self._controller.port)

    @property
    def url(self) -> str:
        """The `ORCH_SMTP_URL` that reaches it."""
        return f"smtp://{LOOPBACK}:{self.port}"

    @property
    def received(self) -> list[Envelope]:
        """Every envelope accepted so far, in order."""
        return list(self._keeper.received)

    @property
    def connections(self) -> int:
        """How many SMTP sessions clients opened."""
        return self._keeper.connections

    def stop(self) -> None:
        self._controller.stop()


def start_mailbox(
    folder: Path | None, port: int = 0, *, smtputf8: bool = True
) -> Mailbox:
    """Starts the server on 127.0.0.1 in a thread of this process.

    Args:
        folder: where messages are written; None keeps them in memory only.
        port: 0 for any free port.
        smtputf8: whether to offer SMTPUTF8 (RFC 6531), as modern relays do.
    """
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    keeper = _Keeper(folder)
    controller = Controller(
        keeper,
        hostname=LOOPBACK,
        port=port or _free_port(),
        enable_SMTPUTF8=smtputf8,
    )
    controller.start()
    return Mailbox(controller, keeper)


@contextlib.contextmanager
def running_mailbox(folder: Path | None, port: int = 0) -> Iterator[Mailbox]:
    """`start_mailbox` for the length of a block."""
    mailbox = start_mailbox(folder, port)
    try:
        yield mailbox
    finally:
        mailbox.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def _write_whole(path: Path, data: bytes) -> None:
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=".", suffix=".part"
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
