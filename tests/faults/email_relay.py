"""A loopback SMTP relay for fault tests: counts every message, holds, stops, restarts.

A real aiosmtpd server in a thread of the test process. Each message is
recorded by Message-ID and envelope recipient the moment its DATA arrives,
before the relay answers: a message whose sender dies waiting for the answer
has still reached the relay, which is the case "at most once" is about. The
relay can hold one chosen message unanswered (so a test knows a send is in
flight), make every message wait until two clients are connected at once (so
two dispatchers provably overlap), and stop and start again on the same port
with what it received kept.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import default

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

LOOPBACK = "127.0.0.1"
# How long messages wait for the second client before going on without it.
OVERLAP_WAIT_SECONDS = 90.0


@dataclass(frozen=True)
class Received:
    """One message as the relay got it."""

    message_id: str
    recipient: str
    subject: str


class _Recorder:
    """The aiosmtpd handler: records each message, then holds or paces it."""

    def __init__(self, overlap: int, pace_seconds: float) -> None:
        self.overlap = overlap
        self.pace_seconds = pace_seconds
        self.received: list[Received] = []
        self.connected: set[SMTP] = set()
        self.greeted: set[int] = set()
        self.most_at_once = 0
        # Set by the first message that waits for overlap; later ones share it.
        self.overlap_deadline: float | None = None
        self.hold_number: int | None = None
        self.held = threading.Event()
        self.released = threading.Event()
        self.lock = threading.Lock()

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        with self.lock:
            self.greeted.add(id(server))
            self.most_at_once = max(self.most_at_once, len(self.greeted))
        session.host_name = hostname
        return responses

    def opened(self, server: SMTP) -> None:
        with self.lock:
            self.connected.add(server)

    def closed(self, server: SMTP) -> None:
        with self.lock:
            self.connected.discard(server)
            self.greeted.discard(id(server))

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        headers = BytesParser(policy=default).parsebytes(
            envelope.original_content or b"", headersonly=True
        )
        record = Received(
            message_id=str(headers["Message-ID"] or "").strip(),
            recipient=", ".join(envelope.rcpt_tos),
            subject=str(headers["Subject"] or ""),
        )
        with self.lock:
            self.received.append(record)
            hold = self.hold_number == len(self.received)
        if hold:
            self.held.set()
            while not self.released.is_set():
                await asyncio.sleep(0.01)
        await self._await_overlap()
        if self.pace_seconds:
            await asyncio.sleep(self.pace_seconds)
        return "250 Message accepted for delivery"

    async def _await_overlap(self) -> None:
        if self.most_at_once >= self.overlap:
            return
        if self.overlap_deadline is None:
            self.overlap_deadline = time.monotonic() + OVERLAP_WAIT_SECONDS
        while (
            self.most_at_once < self.overlap
            and time.monotonic() < self.overlap_deadline
        ):
            await asyncio.sleep(0.01)


class _TrackedSMTP(SMTP):
    """aiosmtpd's protocol, telling the recorder when a client comes and goes."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        recorder = self.event_handler
        if isinstance(recorder, _Recorder):
            recorder.opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        recorder = self.event_handler
        if isinstance(recorder, _Recorder):
            recorder.closed(self)
        super().connection_lost(error)


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _TrackedSMTP(self.handler, **self.SMTP_kwargs)


class CountingRelay:
    """A loopback SMTP relay that keeps count of what it received, across restarts.

    Args:
        overlap: messages wait (for 90 s at most, all told) until this many
            clients have been connected at the same time; 0 or 1 never waits.
        pace_seconds: how long the relay takes to answer each message.
    """

    def __init__(self, *, overlap: int = 0, pace_seconds: float = 0.0) -> None:
        self._recorder = _Recorder(overlap, pace_seconds)
        self.port = _free_port()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        """The `ORCH_SMTP_URL` that reaches it."""
        return f"smtp://{LOOPBACK}:{self.port}"

    @property
    def received(self) -> list[Received]:
        """Every message received so far, in order of arrival."""
        with self._recorder.lock:
            return list(self._recorder.received)

    @property
    def most_clients_at_once(self) -> int:
        """The most clients connected (past EHLO) at one moment."""
        return self._recorder.most_at_once

    def start(self) -> None:
        """Listens on its port (the same one after a stop)."""
        controller = _Controller(self._recorder, hostname=LOOPBACK, port=self.port)
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Stops at once: open connections are cut, a held message is never answered."""
        controller, self._controller = self._controller, None
        if controller is None:
            return
        done = threading.Event()

        def cut() -> None:
            # No new client gets in while the open ones are cut.
            if controller.server is not None:
                controller.server.close()
            with self._recorder.lock:
                connected = list(self._recorder.connected)
            for protocol in connected:
                if protocol.transport is not None:
                    protocol.transport.abort()
            done.set()

        controller.loop.call_soon_threadsafe(cut)
        done.wait(timeout=5)
        controller.stop()

    def hold(self, number: int) -> None:
        """Holds the `number`-th message received (counting from the first ever)."""
        with self._recorder.lock:
            self._recorder.hold_number = number
            self._recorder.held.clear()
            self._recorder.released.clear()

    def wait_until_held(self, timeout: float) -> Received:
        """The held message, once it arrived; AssertionError after `timeout` s."""
        if not self._recorder.held.wait(timeout):
            raise AssertionError(
                f"the relay received {len(self.received)} messages in {timeout:g} s "
                f"and never the one it was to hold ({self._recorder.hold_number})"
            )
        number = self._recorder.hold_number
        assert number is not None
        return self.received[number - 1]

    def release(self) -> None:
        """Lets a held message be answered (if its sender is still there)."""
        self._recorder.released.set()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])
